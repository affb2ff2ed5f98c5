//! Datagrams in and out, in batches, with their metadata, in the shape of quinn-udp: a
//! [`RecvMeta`] for each datagram received (its length, who sent it, the address it was
//! sent to), a [`Transmit`] for each to send (where to, from which address, the bytes).
//! The caller owns the buffers: a [`RecvBatch`] of the room it chooses, and the contents it
//! points [`Transmit`]s at. Every tool that moves datagrams in numbers goes through here:
//! the server, the load generator, the relay.
//!
//! Promise: `recvmmsg`/`sendmmsg` on Linux (with `IP_PKTINFO`/`IPV6_PKTINFO` and
//! `SO_RXQ_OVFL`), a plain loop elsewhere; nothing allocated per datagram; nothing ever
//! waits (`MSG_DONTWAIT`: waiting is `io::wait`'s job). A transmit the kernel refuses is
//! reported alone and the rest still go. All of udpkit's control-message `unsafe` is in
//! this file.

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// Datagrams per system call, as in the C yardstick.
pub const BATCH: usize = 64;

/// The address a datagram was sent to, as the kernel told it (`IP_PKTINFO`,
/// `IPV6_PKTINFO`): a reply sent from it reaches a client that sent to one of several
/// addresses of this host, or to a broadcast address. Opaque; Linux only.
#[derive(Clone, Copy)]
pub struct Destination(#[cfg(target_os = "linux")] linux::Local);

impl Destination {
    /// The same address (and, for IPv6, interface).
    pub(crate) fn same(&self, other: &Destination) -> bool {
        #[cfg(target_os = "linux")]
        return self.0 == other.0;
        #[cfg(not(target_os = "linux"))]
        {
            let _ = other;
            true
        }
    }
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Destination")
    }
}

/// One datagram received, or (with `UDP_GRO`) several from one sender coalesced.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecvMeta {
    pub len: usize,
    /// The size of each datagram in the buffer (the last may be shorter): `len` for one
    /// datagram; less when the kernel coalesced several (`UDP_GRO`, see
    /// `socket::enable_gro`). Iterate with [`RecvMeta::segments`].
    pub stride: usize,
    /// The buffer was too small for what arrived (`MSG_TRUNC`): the last datagram in it is
    /// cut short.
    pub truncated: bool,
    /// Who sent it; `None` for a sender of no IP family (it cannot be answered).
    pub source: Option<SocketAddr>,
    /// The address it was sent to, where the socket asked (`socket::reply_from_destination`).
    pub destination: Option<Destination>,
    /// The TTL or hop limit it arrived with, where the socket asked (`socket::report_arrival`).
    pub ttl: Option<u8>,
    /// The TOS or traffic-class byte (DSCP and ECN) it arrived with, where the socket asked.
    pub tos: Option<u8>,
    /// When the kernel received it, as the time since the Unix epoch on this host's clock
    /// (`SO_TIMESTAMPNS`), where the socket asked.
    pub received: Option<std::time::Duration>,
}

impl RecvMeta {
    /// The datagrams in `data` (this meta's buffer), one per segment; an empty datagram is
    /// one (empty) segment.
    pub fn segments<'d>(&self, data: &'d [u8]) -> Segments<'d> {
        Segments {
            rest: Some(data),
            stride: self.stride.max(1),
        }
    }
}

/// The datagrams of one receive (see [`RecvMeta::segments`]).
pub struct Segments<'d> {
    rest: Option<&'d [u8]>,
    stride: usize,
}

impl<'d> Iterator for Segments<'d> {
    type Item = &'d [u8];

    fn next(&mut self) -> Option<&'d [u8]> {
        let rest = self.rest?;
        let (segment, after) = rest.split_at(rest.len().min(self.stride));
        self.rest = (!after.is_empty()).then_some(after);
        Some(segment)
    }
}

/// One datagram to send, or (with `segment_size`) several of one size to one peer, which
/// the kernel cuts apart (`UDP_SEGMENT`, see `socket::gso_segments`).
#[derive(Clone, Copy, Debug)]
pub struct Transmit<'a> {
    /// Where to; `None` on a connected socket (its peer).
    pub destination: Option<SocketAddr>,
    /// The address to send from (a request's [`RecvMeta::destination`]); `None`: the
    /// kernel's choice.
    pub source: Option<Destination>,
    pub contents: &'a [u8],
    /// `Some(n)`: `contents` is datagrams of `n` bytes back to back (the last may be
    /// shorter), sent in one call; at most `socket::gso_segments` of them.
    pub segment_size: Option<usize>,
    /// The TOS or traffic class byte (DSCP and ECN) for these datagrams alone (`IP_TOS` or
    /// `IPV6_TCLASS` as a control message); `None`: the socket's own.
    pub tos: Option<u8>,
}

impl Transmit<'_> {
    /// Nothing, to nobody in particular: the filler of a transmit array.
    pub const EMPTY: Self = Transmit {
        destination: None,
        source: None,
        contents: &[],
        segment_size: None,
        tos: None,
    };
}

/// What one [`Sender::send`] achieved, in datagrams (and the bytes sent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendTotals {
    pub sent: u64,
    pub bytes: u64,
    pub failed: u64,
}

/// Room for up to [`BATCH`] received datagrams of `room` bytes each, and their metadata.
pub struct RecvBatch {
    /// `slots` buffers of `room` bytes, back to back. Zeroed by the allocator, so a page
    /// costs memory only once a datagram has touched it.
    data: Vec<u8>,
    room: usize,
    /// Datagrams a receive takes at most (up to `BATCH`).
    slots: usize,
    meta: [RecvMeta; BATCH],
    count: usize,
    /// The kernel's count of datagrams dropped for a full receive buffer, when it said.
    kernel_drops: Option<u32>,
    #[cfg(target_os = "linux")]
    sys: Box<linux::Headers>,
}

impl RecvBatch {
    /// Buffers of `room` bytes: a datagram longer than that is cut short (the server asks
    /// for `wire::RECV_BUFFER`, which never cuts one).
    pub fn new(room: usize) -> Self {
        Self::with_slots(BATCH, room)
    }

    /// Room for `slots` datagrams (1 to [`BATCH`]) of `room` bytes: a receive sets up no more
    /// headers than a loop can use (a ping-pong has one reply at a time).
    pub fn with_slots(slots: usize, room: usize) -> Self {
        let slots = slots.clamp(1, BATCH);
        RecvBatch {
            data: vec![0u8; slots * room],
            room,
            slots,
            meta: [RecvMeta::default(); BATCH],
            count: 0,
            kernel_drops: None,
            #[cfg(target_os = "linux")]
            sys: linux::Headers::new(),
        }
    }

    /// Takes the datagrams already queued on `socket`, up to [`BATCH`], without waiting
    /// (`WouldBlock` when there are none).
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.count = 0;
        self.count = self.recv_sys(socket, false)?;
        Ok(self.count)
    }

    /// Waits for a datagram on a blocking `socket` (for as long as its receive timeout;
    /// `WouldBlock` when that passes), then takes those already queued behind it, up to
    /// [`BATCH`]: one system call (`MSG_WAITFORONE`). Returns 0 at once on a socket shut for
    /// reading (a stop, see `io::wait::Blocking`) with nothing queued.
    #[cfg(target_os = "linux")]
    pub fn recv_wait(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.count = 0;
        self.count = self.recv_sys(socket, true)?;
        Ok(self.count)
    }

    /// The most datagrams one receive takes.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// How many datagrams the last receive brought.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Datagram `i` of the last receive.
    pub fn get(&self, i: usize) -> (RecvMeta, &[u8]) {
        let m = self.meta[i];
        let start = i * self.room;
        (m, &self.data[start..start + m.len])
    }

    /// Every slot's buffer, back to back (datagram `i` at [`RecvBatch::offset`]`(i)`): what
    /// a reply written in place is sent from.
    pub fn buffer(&self) -> &[u8] {
        &self.data
    }

    /// Where datagram `i`'s buffer starts in [`RecvBatch::buffer`].
    pub fn offset(&self, i: usize) -> usize {
        i * self.room
    }

    /// Datagram `i` of the last receive, to write a reply over it in place.
    pub fn get_mut(&mut self, i: usize) -> (RecvMeta, &mut [u8]) {
        let m = self.meta[i];
        let start = i * self.room;
        (m, &mut self.data[start..start + m.len])
    }

    /// The kernel's running count of datagrams it dropped because this socket's receive
    /// buffer was full, as last reported with a received datagram (`SO_RXQ_OVFL`).
    pub fn kernel_drops(&self) -> Option<u32> {
        self.kernel_drops
    }

    #[cfg(not(target_os = "linux"))]
    fn recv_sys(&mut self, socket: &UdpSocket, _wait: bool) -> io::Result<usize> {
        socket.set_nonblocking(true)?;
        let mut n = 0;
        while n < self.slots {
            let buf = &mut self.data[n * self.room..(n + 1) * self.room];
            match socket.recv_from(buf) {
                Ok((len, source)) => {
                    self.meta[n] = RecvMeta {
                        len,
                        stride: len,
                        truncated: false,
                        source: Some(source),
                        ..RecvMeta::default()
                    };
                    n += 1;
                }
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }
}

/// The system call's headers for sending batches of [`Transmit`]s, allocated once; what to
/// send and what to do when the kernel refuses is `io::state::SocketState`'s.
pub(crate) struct Sender {
    #[cfg(target_os = "linux")]
    sys: Box<linux::Headers>,
}

impl Sender {
    pub(crate) fn new() -> Self {
        Sender {
            #[cfg(target_os = "linux")]
            sys: linux::Headers::new(),
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn send_sys(
        &mut self,
        socket: &UdpSocket,
        transmits: &[Transmit<'_>],
        stop_at_failure: bool,
        failed: &mut impl FnMut(usize, &io::Error),
    ) -> SendTotals {
        let mut totals = SendTotals::default();
        for (i, t) in transmits.iter().enumerate() {
            let result = match t.destination {
                Some(to) => socket.send_to(t.contents, to),
                None => socket.send(t.contents),
            };
            match result {
                Ok(n) => {
                    totals.sent += 1;
                    totals.bytes += n as u64;
                }
                Err(e) => {
                    totals.failed += 1;
                    failed(i, &e);
                    if stop_at_failure {
                        break;
                    }
                }
            }
        }
        totals
    }
}

#[cfg(target_os = "linux")]
mod linux {
    //! The `mmsghdr` arrays for `recvmmsg`/`sendmmsg`, boxed so that their internal
    //! pointers stay put; the pointers into the caller's buffers are written just before
    //! each call.

    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
    use std::os::fd::AsRawFd;

    use super::{BATCH, RecvBatch, RecvMeta, SendTotals, Sender, Transmit};

    /// Room for the control messages of one datagram: `SO_RXQ_OVFL` (24 bytes with its
    /// header), `IP_PKTINFO` (32) or `IPV6_PKTINFO` (40), `UDP_GRO` or `UDP_SEGMENT` (24),
    /// a TTL or hop limit (24), a TOS or traffic class (24), `SO_TIMESTAMPNS` (32);
    /// 8-byte aligned.
    const CONTROL: usize = 208;

    /// The address a datagram was sent to, from `IP_PKTINFO`/`IPV6_PKTINFO`: the reply
    /// goes out from it (a server bound to a wildcard address).
    #[derive(Clone, Copy, PartialEq, Eq)]
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

    /// The `mmsghdr` array of one call and what its headers point at, boxed once.
    pub(super) struct Headers {
        names: [libc::sockaddr_storage; BATCH],
        iov: [libc::iovec; BATCH],
        msgs: [libc::mmsghdr; BATCH],
        control: [Control; BATCH],
    }

    // SAFETY: the headers' pointers are written just before each call, into buffers the
    // caller lends for that call only; between calls they point nowhere that is used, so
    // the headers may move to another thread with their owner.
    unsafe impl Send for Headers {}
    // SAFETY: only `&mut self` methods write or use the pointers; a shared reference can do
    // nothing with them.
    unsafe impl Sync for Headers {}

    impl Headers {
        pub(super) fn new() -> Box<Self> {
            // SAFETY: plain C structs and bytes, for which all-zero is a valid value.
            Box::new(unsafe { zeroed() })
        }
    }

    impl RecvBatch {
        pub(super) fn recv_sys(&mut self, socket: &UdpSocket, wait: bool) -> io::Result<usize> {
            let h = &mut *self.sys;
            for i in 0..self.slots {
                h.iov[i] = libc::iovec {
                    iov_base: self.data[i * self.room..].as_mut_ptr().cast(),
                    iov_len: self.room,
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
                    self.slots as libc::c_uint,
                    if wait {
                        libc::MSG_WAITFORONE
                    } else {
                        libc::MSG_DONTWAIT
                    },
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            // On a socket shut for reading, a receive that finds nothing gives an empty
            // message from nobody instead of waiting: no datagram, and the end of those.
            let n = h.msgs[..n as usize]
                .iter()
                .position(|m| m.msg_len == 0 && m.msg_hdr.msg_namelen == 0)
                .unwrap_or(n as usize);
            for i in 0..n {
                let hdr = &h.msgs[i].msg_hdr;
                let c = if hdr.msg_controllen > 0 {
                    read_control(hdr)
                } else {
                    Said::default()
                };
                let (drops, local, stride) = (c.drops, c.local, c.stride);
                let len = h.msgs[i].msg_len as usize;
                if let Some(drops) = drops {
                    self.kernel_drops = Some(self.kernel_drops.map_or(drops, |d| d.max(drops)));
                }
                self.meta[i] = RecvMeta {
                    len,
                    stride: stride.filter(|&s| s > 0).unwrap_or(len),
                    truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
                    source: if hdr.msg_namelen > 0 {
                        socket_addr(&h.names[i])
                    } else {
                        None
                    },
                    destination: local.map(super::Destination),
                    ttl: c.ttl,
                    tos: c.tos,
                    received: c.received,
                };
            }
            Ok(n)
        }
    }

    impl Sender {
        pub(crate) fn send_sys(
            &mut self,
            socket: &UdpSocket,
            transmits: &[Transmit<'_>],
            stop_at_failure: bool,
            failed: &mut impl FnMut(usize, &io::Error),
        ) -> SendTotals {
            let h = &mut *self.sys;
            let k = transmits.len();
            for (i, t) in transmits.iter().enumerate() {
                h.iov[i] = libc::iovec {
                    iov_base: t.contents.as_ptr().cast_mut().cast(),
                    iov_len: t.contents.len(),
                };
                let m = &mut h.msgs[i].msg_hdr;
                m.msg_iov = &raw mut h.iov[i];
                m.msg_iovlen = 1;
                m.msg_flags = 0;
                match t.destination {
                    Some(to) => {
                        m.msg_namelen = write_name(&mut h.names[i], to);
                        m.msg_name = (&raw mut h.names[i]).cast();
                    }
                    None => {
                        m.msg_name = std::ptr::null_mut();
                        m.msg_namelen = 0;
                    }
                }
                m.msg_control = std::ptr::null_mut();
                m.msg_controllen = 0;
                if t.source.is_some() || t.segment_size.is_some() || t.tos.is_some() {
                    m.msg_control = (&raw mut h.control[i]).cast();
                }
                if let Some(super::Destination(local)) = t.source {
                    let v6 = t.destination.is_some_and(|d| d.is_ipv6());
                    write_source(m, local, v6);
                }
                if let Some(size) = t.segment_size {
                    push_control(
                        m,
                        libc::SOL_UDP,
                        libc::UDP_SEGMENT,
                        &(size as u16).to_ne_bytes(),
                    );
                }
                if let Some(tos) = t.tos {
                    // A v4-mapped destination goes out as IPv4, whose stack reads IP_TOS only.
                    let v6 = t.destination.is_some_and(|d| match d {
                        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_none(),
                        SocketAddr::V4(_) => false,
                    });
                    let (level, kind) = if v6 {
                        (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
                    } else {
                        (libc::IPPROTO_IP, libc::IP_TOS)
                    };
                    push_control(m, level, kind, &libc::c_int::from(tos).to_ne_bytes());
                }
            }
            let mut totals = SendTotals::default();
            let mut done = 0;
            while done < k {
                // SAFETY: headers done..k point at `iov`, `names` and `control` in `self`,
                // and at contents borrowed for this call; the kernel only reads them.
                let n = unsafe {
                    libc::sendmmsg(
                        socket.as_raw_fd(),
                        h.msgs[done..k].as_mut_ptr(),
                        (k - done) as libc::c_uint,
                        // Never wait: a datagram that cannot go now (a full send buffer)
                        // fails and is reported.
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // The first remaining datagram failed; report it and go on after it
                    // (or stop there, when asked).
                    failed(done, &e);
                    totals.failed += 1;
                    if stop_at_failure {
                        break;
                    }
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

    /// Writes `addr` into `name` as the kernel wants it; returns its length.
    fn write_name(name: &mut libc::sockaddr_storage, addr: SocketAddr) -> libc::socklen_t {
        let sock = socket2::SockAddr::from(addr);
        // SAFETY: `sock` holds a valid address of `sock.len()` bytes, which fits in a
        // sockaddr_storage.
        unsafe {
            std::ptr::copy_nonoverlapping(
                sock.as_ptr().cast::<u8>(),
                (name as *mut libc::sockaddr_storage).cast::<u8>(),
                sock.len() as usize,
            );
        }
        sock.len()
    }

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

    /// What a received datagram's control messages said.
    #[derive(Default)]
    struct Said {
        drops: Option<u32>,
        local: Option<Local>,
        stride: Option<usize>,
        ttl: Option<u8>,
        tos: Option<u8>,
        received: Option<std::time::Duration>,
    }

    /// The drop counter (`SO_RXQ_OVFL`), the destination (`IP_PKTINFO`, `IPV6_PKTINFO`),
    /// the GRO segment size, the TTL, TOS and kernel timestamp in a received datagram's
    /// control messages, where present.
    fn read_control(msg: &libc::msghdr) -> Said {
        let mut c = Said::default();
        // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
        // msg_controllen; each message's data has the size its type says (IP_TOS one
        // byte; IP_TTL, IPV6_HOPLIMIT, IPV6_TCLASS an int).
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(msg);
            while !cmsg.is_null() {
                let data = libc::CMSG_DATA(cmsg);
                let int = || std::ptr::read_unaligned(data.cast::<libc::c_int>());
                match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                    (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                        c.drops = Some(std::ptr::read_unaligned(data.cast::<u32>()));
                    }
                    (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS) => {
                        let t = std::ptr::read_unaligned(data.cast::<libc::timespec>());
                        c.received = u64::try_from(t.tv_sec)
                            .ok()
                            .map(|s| std::time::Duration::new(s, t.tv_nsec as u32));
                    }
                    (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                        let info = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                        c.local = Some(Local::V4(info.ipi_spec_dst.s_addr.to_ne_bytes()));
                    }
                    (libc::IPPROTO_IP, libc::IP_TTL) => c.ttl = u8::try_from(int()).ok(),
                    (libc::IPPROTO_IP, libc::IP_TOS) => c.tos = Some(*data),
                    (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => c.ttl = u8::try_from(int()).ok(),
                    (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => c.tos = u8::try_from(int()).ok(),
                    (libc::SOL_UDP, libc::UDP_GRO) => {
                        c.stride = usize::try_from(int()).ok();
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if c.local.is_none() => {
                        let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                        c.local = Some(Local::V6 {
                            addr: info.ipi6_addr.s6_addr,
                            ifindex: info.ipi6_ifindex,
                        });
                    }
                    _ => {}
                }
                cmsg = libc::CMSG_NXTHDR(msg, cmsg);
            }
        }
        c
    }

    /// Appends one control message to those already in the buffer `m.msg_control` points
    /// at (`CONTROL` bytes, 8-byte aligned; `m.msg_controllen` says how much is used).
    fn push_control(m: &mut libc::msghdr, level: libc::c_int, kind: libc::c_int, data: &[u8]) {
        #[allow(clippy::unnecessary_cast)] // socklen_t on some libcs
        let used = m.msg_controllen as usize;
        // SAFETY: CMSG_SPACE of every message udpkit writes (three at most: a pktinfo, a
        // segment size and a TOS) fits in CONTROL; `used` is a multiple of the alignment, so the new
        // header is aligned, and its data lies within the buffer.
        unsafe {
            let space = libc::CMSG_SPACE(data.len() as u32) as usize;
            debug_assert!(used + space <= CONTROL);
            let cmsg = m.msg_control.cast::<u8>().add(used).cast::<libc::cmsghdr>();
            std::ptr::write_bytes(cmsg.cast::<u8>(), 0, space);
            (*cmsg).cmsg_level = level;
            (*cmsg).cmsg_type = kind;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data.len() as u32) as _;
            std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(cmsg), data.len());
            m.msg_controllen = (used + space) as _;
        }
    }

    /// Sets the reply's source address to `local` with a control message (see
    /// [`push_control`]). A v4 address on an IPv6 socket goes out as IPV6_PKTINFO with the
    /// address v4-mapped.
    fn write_source(m: &mut libc::msghdr, local: Local, ipv6_socket: bool) {
        // SAFETY: all-zero is a valid pktinfo; each is copied out as bytes.
        let bytes = |p: *const u8, n: usize| unsafe { std::slice::from_raw_parts(p, n) };
        match (local, ipv6_socket) {
            (Local::V4(addr), false) => {
                // SAFETY: a plain C struct.
                let mut info: libc::in_pktinfo = unsafe { zeroed() };
                info.ipi_spec_dst.s_addr = u32::from_ne_bytes(addr);
                let data = bytes((&raw const info).cast(), size_of::<libc::in_pktinfo>());
                push_control(m, libc::IPPROTO_IP, libc::IP_PKTINFO, data);
            }
            (local, _) => {
                // SAFETY: a plain C struct.
                let mut info: libc::in6_pktinfo = unsafe { zeroed() };
                match local {
                    Local::V4(addr) => {
                        info.ipi6_addr.s6_addr = Ipv4Addr::from(addr).to_ipv6_mapped().octets();
                    }
                    Local::V6 { addr, ifindex } => {
                        info.ipi6_addr.s6_addr = addr;
                        info.ipi6_ifindex = ifindex;
                    }
                }
                let data = bytes((&raw const info).cast(), size_of::<libc::in6_pktinfo>());
                push_control(m, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RecvMeta;

    #[test]
    fn segments_cut_a_coalesced_buffer_and_keep_an_empty_datagram() {
        let meta = |len, stride| RecvMeta {
            len,
            stride,
            ..RecvMeta::default()
        };
        let data = b"aaabbbcc";
        let cut: Vec<&[u8]> = meta(8, 3).segments(data).collect();
        assert_eq!(cut, [&b"aaa"[..], b"bbb", b"cc"]);
        assert_eq!(meta(8, 8).segments(data).count(), 1);
        assert_eq!(meta(0, 0).segments(b"").collect::<Vec<_>>(), [&b""[..]]);
    }
}
