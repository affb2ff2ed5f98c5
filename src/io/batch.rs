//! Batched datagram I/O for the hot loops (the server's [`Batch`], the load generator's
//! [`Burst`]): `recvmmsg`/`sendmmsg` on Linux, a plain
//! `recv_from`/`send_to` loop elsewhere, behind one small interface.
//!
//! Promise: one [`Batch`] holds every buffer the loop needs, allocated once; receiving and
//! replying allocate nothing. Replying never waits (Linux: `MSG_DONTWAIT`): a reply the
//! kernel cannot take at once fails, is reported for that datagram alone, and the rest of
//! the batch still goes out.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use crate::wire::{MAX_REPLY, RECV_BUFFER};

/// Datagrams per system call, as in the C yardstick.
pub const BATCH: usize = 64;

/// Buffers for up to [`BATCH`] datagrams and their replies.
pub struct Batch {
    /// `BATCH` receive buffers of `RECV_BUFFER` bytes, back to back. Zeroed by the
    /// allocator, so a page costs memory only once a datagram has touched it.
    data: Vec<u8>,
    len: [usize; BATCH],
    peer: [Option<SocketAddr>; BATCH],
    count: usize,
    reply: [[u8; MAX_REPLY]; BATCH],
    reply_len: [usize; BATCH],
    /// Indexes of the datagrams to answer, in order.
    answer: [u16; BATCH],
    answers: usize,
    /// The kernel's count of datagrams dropped for a full receive buffer, when it said.
    kernel_drops: Option<u32>,
    #[cfg(target_os = "linux")]
    sys: linux::Headers,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    pub fn new() -> Self {
        Batch {
            data: vec![0u8; BATCH * RECV_BUFFER],
            len: [0; BATCH],
            peer: [None; BATCH],
            count: 0,
            reply: [[0; MAX_REPLY]; BATCH],
            reply_len: [0; BATCH],
            answer: [0; BATCH],
            answers: 0,
            kernel_drops: None,
            #[cfg(target_os = "linux")]
            sys: linux::Headers::new(),
        }
    }

    /// How many datagrams the last receive brought.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Datagram `i` of the last receive: who sent it, and its bytes; `None` for a sender
    /// whose address is of no IP family (it cannot be answered).
    pub fn datagram(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        let start = i * RECV_BUFFER;
        Some((self.peer[i]?, &self.data[start..start + self.len[i]]))
    }

    /// Queues `reply` (at most `MAX_REPLY` bytes) as the answer to datagram `i`.
    pub fn answer(&mut self, i: usize, reply: impl FnOnce(&mut [u8; MAX_REPLY]) -> usize) {
        self.reply_len[i] = reply(&mut self.reply[i]);
        self.answer[self.answers] = i as u16;
        self.answers += 1;
    }

    /// The kernel's running count of datagrams it dropped because this socket's receive
    /// buffer was full, as last reported with a received datagram (Linux, `SO_RXQ_OVFL`).
    pub fn kernel_drops(&self) -> Option<u32> {
        self.kernel_drops
    }

    /// Waits for at least one datagram (bounded by the socket's read timeout) and takes
    /// what else is already queued, up to [`BATCH`]. Forgets the previous batch's answers.
    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.count = 0;
        self.answers = 0;
        self.receive_sys(socket)
    }

    /// Sends the queued answers; `failed` hears of each one the kernel refused.
    pub fn send(
        &mut self,
        socket: &UdpSocket,
        mut failed: impl FnMut(SocketAddr, &io::Error),
    ) -> SendTotals {
        let totals = self.send_sys(socket, &mut failed);
        self.answers = 0;
        totals
    }

    #[cfg(not(target_os = "linux"))]
    fn receive_sys(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let (n, peer) = socket.recv_from(&mut self.data[..RECV_BUFFER])?;
        self.len[0] = n;
        self.peer[0] = Some(peer);
        self.count = 1;
        Ok(1)
    }

    #[cfg(not(target_os = "linux"))]
    fn send_sys(
        &mut self,
        socket: &UdpSocket,
        failed: &mut impl FnMut(SocketAddr, &io::Error),
    ) -> SendTotals {
        let mut totals = SendTotals::default();
        for &i in &self.answer[..self.answers] {
            let i = usize::from(i);
            let peer = self.peer[i].expect("answered datagram has a peer");
            match socket.send_to(&self.reply[i][..self.reply_len[i]], peer) {
                Ok(n) => {
                    totals.sent += 1;
                    totals.bytes += n as u64;
                }
                Err(e) => {
                    totals.failed += 1;
                    failed(peer, &e);
                }
            }
        }
        totals
    }
}

/// The room for one reply in a [`Burst`]: replies are under 100 bytes; anything longer is
/// cut short here and then fails to parse, as it should.
const REPLY_ROOM: usize = 2048;

/// Up to [`BATCH`] requests out and replies in on a connected client socket, with one
/// system call each way on Linux (`sendmmsg`, `recvmmsg`). Buffers are allocated once.
pub struct Burst {
    out: Vec<Vec<u8>>,
    queued: usize,
    data: Vec<u8>,
    len: [usize; BATCH],
    count: usize,
    #[cfg(target_os = "linux")]
    sys: Box<linux::ClientHeaders>,
}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Burst {
    pub fn new() -> Self {
        #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
        let mut data = vec![0u8; BATCH * REPLY_ROOM];
        Burst {
            out: (0..BATCH).map(|_| Vec::new()).collect(),
            queued: 0,
            #[cfg(target_os = "linux")]
            sys: linux::ClientHeaders::new(&mut data),
            data,
            len: [0; BATCH],
            count: 0,
        }
    }

    /// The buffer for the next request to send; fill it, then [`Burst::send`] when full
    /// or done. The buffer still holds what it held last time, so that a caller rewriting
    /// only a header need not rewrite the padding.
    pub fn next_out(&mut self) -> &mut Vec<u8> {
        let i = self.queued;
        self.queued += 1;
        &mut self.out[i]
    }

    pub fn is_full(&self) -> bool {
        self.queued == BATCH
    }

    /// Requests waiting in the burst.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Sends the queued requests, in order; `failed` hears of each one the kernel refused
    /// (the others still go). Returns how many were sent.
    pub fn send(&mut self, socket: &UdpSocket, mut failed: impl FnMut(&io::Error)) -> usize {
        let sent = self.send_sys(socket, &mut failed);
        self.queued = 0;
        sent
    }

    /// Takes the replies already queued on the socket, up to [`BATCH`], without waiting.
    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.count = 0;
        self.receive_sys(socket)
    }

    /// Reply `i` of the last receive.
    pub fn reply(&self, i: usize) -> &[u8] {
        &self.data[i * REPLY_ROOM..i * REPLY_ROOM + self.len[i]]
    }

    #[cfg(not(target_os = "linux"))]
    fn send_sys(&mut self, socket: &UdpSocket, failed: &mut impl FnMut(&io::Error)) -> usize {
        let mut sent = 0;
        for out in &self.out[..self.queued] {
            match socket.send(out) {
                Ok(_) => sent += 1,
                Err(e) => failed(&e),
            }
        }
        sent
    }

    #[cfg(not(target_os = "linux"))]
    fn receive_sys(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        socket.set_nonblocking(true)?;
        let mut n = 0;
        while n < BATCH {
            match socket.recv(&mut self.data[n * REPLY_ROOM..(n + 1) * REPLY_ROOM]) {
                Ok(len) => {
                    self.len[n] = len;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if n == 0 => {
                    socket.set_nonblocking(false)?;
                    return Err(e);
                }
                Err(_) => break,
            }
        }
        socket.set_nonblocking(false)?;
        self.count = n;
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

/// The address a datagram was sent to, as the kernel told it (`IP_PKTINFO`,
/// `IPV6_PKTINFO`): a reply sent from it reaches a client that sent to one of several
/// addresses of this host. Opaque; Linux only (elsewhere never present).
#[derive(Clone, Copy)]
pub struct Destination(#[cfg(target_os = "linux")] linux::Local);

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Destination")
    }
}

/// One datagram received with what the kernel said of it.
#[derive(Clone, Copy, Debug)]
pub struct RecvMeta {
    pub len: usize,
    /// Who sent it; `None` for a sender of no IP family.
    pub source: Option<SocketAddr>,
    /// The address it was sent to, where the socket asked (`net::reply_from_destination`).
    pub destination: Option<Destination>,
}

/// Receives one datagram into `buf` with its metadata, without waiting.
pub fn recv_meta(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<RecvMeta> {
    #[cfg(target_os = "linux")]
    return linux::recv_meta(socket, buf);
    #[cfg(not(target_os = "linux"))]
    {
        socket.set_nonblocking(true)?;
        let (len, source) = socket.recv_from(buf)?;
        Ok(RecvMeta {
            len,
            source: Some(source),
            destination: None,
        })
    }
}

/// Sends `data` to `to` from `from` (the address a request was sent to) when given,
/// without waiting.
pub fn send_from(
    socket: &UdpSocket,
    data: &[u8],
    to: SocketAddr,
    from: Option<Destination>,
) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    return linux::send_from(socket, data, to, from);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = from;
        socket.send_to(data, to)
    }
}

/// What one [`Batch::send`] achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendTotals {
    pub sent: u64,
    pub bytes: u64,
    pub failed: u64,
}

#[cfg(target_os = "linux")]
mod linux {
    //! The `mmsghdr` arrays for `recvmmsg`/`sendmmsg`. Their pointers into the [`Batch`]
    //! are written just before each call, so the batch may move between calls.

    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
    use std::os::fd::AsRawFd;

    use super::{BATCH, Batch, Burst, RECV_BUFFER, REPLY_ROOM, SendTotals};

    /// Room for the control messages of one datagram: `SO_RXQ_OVFL` (24 bytes with its
    /// header), `IP_PKTINFO` (32) and `IPV6_PKTINFO` (40); 8-byte aligned.
    const CONTROL: usize = 128;

    /// The address a datagram was sent to, from `IP_PKTINFO`/`IPV6_PKTINFO`: the reply
    /// goes out from it (a server bound to a wildcard address).
    #[derive(Clone, Copy)]
    pub(super) enum Local {
        /// The local address of the interface it came in on (`ipi_spec_dst`), which is
        /// right for broadcasts too.
        V4([u8; 4]),
        V6 {
            addr: [u8; 16],
            ifindex: u32,
        },
    }

    #[repr(C, align(8))]
    struct Control([u8; CONTROL]);

    pub(super) struct Headers {
        names: [libc::sockaddr_storage; BATCH],
        iov: [libc::iovec; BATCH],
        msgs: [libc::mmsghdr; BATCH],
        control: [Control; BATCH],
        local: [Option<Local>; BATCH],
    }

    impl Headers {
        pub(super) fn new() -> Self {
            // SAFETY: plain C structs and bytes, for which all-zero is a valid value.
            unsafe {
                Headers {
                    names: zeroed(),
                    iov: zeroed(),
                    msgs: zeroed(),
                    control: zeroed(),
                    local: [None; BATCH],
                }
            }
        }
    }

    impl Batch {
        pub(super) fn receive_sys(&mut self, socket: &UdpSocket) -> io::Result<usize> {
            let h = &mut self.sys;
            for i in 0..BATCH {
                h.iov[i] = libc::iovec {
                    iov_base: self.data[i * RECV_BUFFER..].as_mut_ptr().cast(),
                    iov_len: RECV_BUFFER,
                };
                let m = &mut h.msgs[i].msg_hdr;
                m.msg_name = (&raw mut h.names[i]).cast();
                m.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                m.msg_iov = &raw mut h.iov[i];
                m.msg_iovlen = 1;
                m.msg_control = (&raw mut h.control[i]).cast();
                m.msg_controllen = CONTROL as _;
                m.msg_flags = 0;
            }
            // SAFETY: every header points into buffers owned by `self` that outlive the
            // call, with the lengths given; the kernel writes only within them.
            let n = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    h.msgs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            for i in 0..n {
                self.len[i] = h.msgs[i].msg_len as usize;
                self.peer[i] = socket_addr(&h.names[i]);
                h.local[i] = None;
                if h.msgs[i].msg_hdr.msg_controllen > 0 {
                    let (drops, local) = read_control(&h.msgs[i].msg_hdr);
                    if let Some(drops) = drops {
                        self.kernel_drops = Some(self.kernel_drops.map_or(drops, |d| d.max(drops)));
                    }
                    h.local[i] = local;
                }
            }
            self.count = n;
            Ok(n)
        }

        pub(super) fn send_sys(
            &mut self,
            socket: &UdpSocket,
            failed: &mut impl FnMut(SocketAddr, &io::Error),
        ) -> SendTotals {
            let h = &mut self.sys;
            let k = self.answers;
            for (slot, &i) in self.answer[..k].iter().enumerate() {
                let i = usize::from(i);
                h.iov[slot] = libc::iovec {
                    iov_base: self.reply[i].as_mut_ptr().cast(),
                    iov_len: self.reply_len[i],
                };
                // The peer's address is still where recvmmsg wrote it, under index i.
                let namelen = h.msgs[i].msg_hdr.msg_namelen;
                if slot != i {
                    h.names[slot] = h.names[i];
                }
                let m = &mut h.msgs[slot].msg_hdr;
                m.msg_name = (&raw mut h.names[slot]).cast();
                m.msg_namelen = namelen;
                m.msg_iov = &raw mut h.iov[slot];
                m.msg_iovlen = 1;
                m.msg_control = std::ptr::null_mut();
                m.msg_controllen = 0;
                m.msg_flags = 0;
                if let (Some(local), Some(peer)) = (h.local[i], self.peer[i]) {
                    // The receive control buffers are read by now; reuse this one.
                    m.msg_control = (&raw mut h.control[slot]).cast();
                    write_source(m, local, peer.is_ipv6());
                }
            }
            let mut totals = SendTotals::default();
            let mut done = 0;
            while done < k {
                // SAFETY: headers done..k point into buffers owned by `self`.
                let n = unsafe {
                    libc::sendmmsg(
                        socket.as_raw_fd(),
                        h.msgs[done..].as_mut_ptr(),
                        (k - done) as libc::c_uint,
                        // Never wait: a reply that cannot go now (a full send buffer, held
                        // by replies to neighbours that never answer ARP) is dropped.
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // The first remaining datagram failed; report it and go on after it.
                    let peer = self.peer[usize::from(self.answer[done])];
                    failed(peer.expect("answered datagram has a peer"), &e);
                    totals.failed += 1;
                    done += 1;
                    continue;
                }
                for m in &h.msgs[done..done + n as usize] {
                    totals.bytes += u64::from(m.msg_len);
                }
                totals.sent += n as u64;
                done += n as usize;
            }
            totals
        }
    }

    /// The headers of a [`Burst`], on the heap so that the receive side's pointers, set
    /// once, stay valid wherever the burst moves.
    pub(super) struct ClientHeaders {
        send_iov: [libc::iovec; BATCH],
        send: [libc::mmsghdr; BATCH],
        recv_iov: [libc::iovec; BATCH],
        recv: [libc::mmsghdr; BATCH],
    }

    impl ClientHeaders {
        /// Headers for receiving into `data` (`BATCH` slots of `REPLY_ROOM` bytes, which
        /// must not move or shrink while these live) and for sending.
        pub(super) fn new(data: &mut [u8]) -> Box<Self> {
            // SAFETY: plain C structs for which all-zero is a valid value (null pointers,
            // no name, no control data: the socket is connected).
            let mut h: Box<Self> = Box::new(unsafe { zeroed() });
            for i in 0..BATCH {
                h.recv_iov[i] = libc::iovec {
                    iov_base: data[i * REPLY_ROOM..].as_mut_ptr().cast(),
                    iov_len: REPLY_ROOM,
                };
                h.recv[i].msg_hdr.msg_iov = &raw mut h.recv_iov[i];
                h.recv[i].msg_hdr.msg_iovlen = 1;
                h.send[i].msg_hdr.msg_iov = &raw mut h.send_iov[i];
                h.send[i].msg_hdr.msg_iovlen = 1;
            }
            h
        }
    }

    impl Burst {
        pub(super) fn send_sys(
            &mut self,
            socket: &UdpSocket,
            failed: &mut impl FnMut(&io::Error),
        ) -> usize {
            let h = &mut *self.sys;
            let k = self.queued;
            for i in 0..k {
                h.send_iov[i] = libc::iovec {
                    iov_base: self.out[i].as_mut_ptr().cast(),
                    iov_len: self.out[i].len(),
                };
            }
            let (mut done, mut sent) = (0, 0);
            while done < k {
                // SAFETY: headers done..k point at `send_iov`, which points into buffers
                // owned by `self`.
                let n = unsafe {
                    libc::sendmmsg(
                        socket.as_raw_fd(),
                        h.send[done..].as_mut_ptr(),
                        (k - done) as libc::c_uint,
                        0,
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        failed(&e);
                        done += 1;
                    }
                    continue;
                }
                done += n as usize;
                sent += n as usize;
            }
            sent
        }

        pub(super) fn receive_sys(&mut self, socket: &UdpSocket) -> io::Result<usize> {
            let h = &mut *self.sys;
            // SAFETY: every header points into `self.data` with the room given (set up
            // in `ClientHeaders::new`; `data` is never resized).
            let n = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    h.recv.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            for i in 0..n {
                self.len[i] = h.recv[i].msg_len as usize;
            }
            self.count = n;
            Ok(n)
        }
    }

    pub(super) fn recv_meta(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<super::RecvMeta> {
        // SAFETY: plain C structs for which all-zero is valid.
        let mut name: libc::sockaddr_storage = unsafe { zeroed() };
        let mut control: Control = unsafe { zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: as above.
        let mut m: libc::msghdr = unsafe { zeroed() };
        m.msg_name = (&raw mut name).cast();
        m.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        m.msg_iov = &raw mut iov;
        m.msg_iovlen = 1;
        m.msg_control = (&raw mut control).cast();
        m.msg_controllen = CONTROL as _;
        // SAFETY: every pointer in `m` points at a live local of the size given.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut m, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let local = if m.msg_controllen > 0 {
            read_control(&m).1
        } else {
            None
        };
        Ok(super::RecvMeta {
            len: n as usize,
            source: if m.msg_namelen > 0 {
                socket_addr(&name)
            } else {
                None
            },
            destination: local.map(super::Destination),
        })
    }

    pub(super) fn send_from(
        socket: &UdpSocket,
        data: &[u8],
        to: SocketAddr,
        from: Option<super::Destination>,
    ) -> io::Result<usize> {
        let Some(super::Destination(local)) = from else {
            // SAFETY: a plain send on a valid socket; the kernel reads `data` only.
            return nonblocking_send_to(socket, data, to);
        };
        let to = socket2::SockAddr::from(to);
        // SAFETY: plain C structs for which all-zero is valid.
        let mut control: Control = unsafe { zeroed() };
        let mut iov = libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        };
        // SAFETY: as above.
        let mut m: libc::msghdr = unsafe { zeroed() };
        m.msg_name = to.as_ptr().cast_mut().cast();
        m.msg_namelen = to.len();
        m.msg_iov = &raw mut iov;
        m.msg_iovlen = 1;
        m.msg_control = (&raw mut control).cast();
        write_source(&mut m, local, to.is_ipv6());
        // SAFETY: every pointer in `m` points at live data of the size given; the kernel
        // only reads it.
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &m, libc::MSG_DONTWAIT) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn nonblocking_send_to(socket: &UdpSocket, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        let to = socket2::SockAddr::from(to);
        // SAFETY: `data` and `to` are live for the call, with the lengths given.
        let n = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_DONTWAIT,
                to.as_ptr().cast(),
                to.len(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// The address the kernel wrote into `name`, if it is IPv4 or IPv6.
    fn socket_addr(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match i32::from(name.ss_family) {
            libc::AF_INET => {
                // SAFETY: ss_family says the storage holds a sockaddr_in.
                let a = unsafe {
                    &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: ss_family says the storage holds a sockaddr_in6.
                let a = unsafe {
                    &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// The drop counter (`SO_RXQ_OVFL`) and the destination (`IP_PKTINFO`,
    /// `IPV6_PKTINFO`) in a received datagram's control messages, where present.
    fn read_control(msg: &libc::msghdr) -> (Option<u32>, Option<Local>) {
        let (mut drops, mut local) = (None, None);
        // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
        // msg_controllen; each message's data has the size its type says.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(msg);
            while !cmsg.is_null() {
                let data = libc::CMSG_DATA(cmsg);
                match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                    (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                        drops = Some(std::ptr::read_unaligned(data.cast::<u32>()));
                    }
                    (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                        let info = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                        local = Some(Local::V4(info.ipi_spec_dst.s_addr.to_ne_bytes()));
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if local.is_none() => {
                        let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                        local = Some(Local::V6 {
                            addr: info.ipi6_addr.s6_addr,
                            ifindex: info.ipi6_ifindex,
                        });
                    }
                    _ => {}
                }
                cmsg = libc::CMSG_NXTHDR(msg, cmsg);
            }
        }
        (drops, local)
    }

    /// Sets the reply's source address to `local` with one control message in the
    /// buffer `m.msg_control` points at (`CONTROL` bytes). A v4 address on an IPv6
    /// socket goes out as IPV6_PKTINFO with the address v4-mapped.
    fn write_source(m: &mut libc::msghdr, local: Local, ipv6_socket: bool) {
        // SAFETY: msg_control points at CONTROL (>= CMSG_SPACE of either pktinfo) bytes,
        // 8-byte aligned; CMSG_FIRSTHDR then gives the start of that buffer.
        unsafe {
            let (level, kind, size) = match (local, ipv6_socket) {
                (Local::V4(_), false) => (
                    libc::IPPROTO_IP,
                    libc::IP_PKTINFO,
                    size_of::<libc::in_pktinfo>(),
                ),
                _ => (
                    libc::IPPROTO_IPV6,
                    libc::IPV6_PKTINFO,
                    size_of::<libc::in6_pktinfo>(),
                ),
            };
            m.msg_controllen = libc::CMSG_SPACE(size as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(m);
            (*cmsg).cmsg_level = level;
            (*cmsg).cmsg_type = kind;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size as u32) as _;
            let data = libc::CMSG_DATA(cmsg);
            match (local, ipv6_socket) {
                (Local::V4(addr), false) => {
                    let mut info: libc::in_pktinfo = zeroed();
                    info.ipi_spec_dst.s_addr = u32::from_ne_bytes(addr);
                    std::ptr::write_unaligned(data.cast(), info);
                }
                (Local::V4(addr), true) => {
                    let mut info: libc::in6_pktinfo = zeroed();
                    info.ipi6_addr.s6_addr = Ipv4Addr::from(addr).to_ipv6_mapped().octets();
                    std::ptr::write_unaligned(data.cast(), info);
                }
                (Local::V6 { addr, ifindex }, _) => {
                    let mut info: libc::in6_pktinfo = zeroed();
                    info.ipi6_addr.s6_addr = addr;
                    info.ipi6_ifindex = ifindex;
                    std::ptr::write_unaligned(data.cast(), info);
                }
            }
        }
    }
}
