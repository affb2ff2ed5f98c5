//! Batched datagram I/O for the server's hot loop: `recvmmsg`/`sendmmsg` on Linux, a plain
//! `recv_from`/`send_to` loop elsewhere, behind one small interface.
//!
//! Promise: one [`Batch`] holds every buffer the loop needs, allocated once; receiving and
//! replying allocate nothing. A failed send is reported for that datagram alone and the rest
//! of the batch still goes out.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use crate::protocol::{MAX_REPLY, RECV_BUFFER};

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

    pub fn is_empty(&self) -> bool {
        self.count == 0
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

    use super::{BATCH, Batch, RECV_BUFFER, SendTotals};

    /// Room for one `SO_RXQ_OVFL` control message (a u32) per datagram, 8-byte aligned.
    const CONTROL: usize = 32;

    #[repr(C, align(8))]
    struct Control([u8; CONTROL]);

    pub(super) struct Headers {
        names: [libc::sockaddr_storage; BATCH],
        iov: [libc::iovec; BATCH],
        msgs: [libc::mmsghdr; BATCH],
        control: [Control; BATCH],
    }

    impl Headers {
        pub(super) fn new() -> Self {
            // SAFETY: these are plain C structs for which all-zero is a valid value.
            unsafe { zeroed() }
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
                if h.msgs[i].msg_hdr.msg_controllen > 0
                    && let Some(drops) = rxq_ovfl(&h.msgs[i].msg_hdr)
                {
                    self.kernel_drops = Some(self.kernel_drops.map_or(drops, |d| d.max(drops)));
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
                        0,
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

    /// The drop counter in a received datagram's `SO_RXQ_OVFL` control message, if any.
    fn rxq_ovfl(msg: &libc::msghdr) -> Option<u32> {
        // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
        // msg_controllen; the data of an SO_RXQ_OVFL message is one u32.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL
                {
                    return Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<u32>(),
                    ));
                }
                cmsg = libc::CMSG_NXTHDR(msg, cmsg);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_receives_queued_datagrams_and_answers_each_sender() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let addr = server.local_addr().unwrap();
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (n, c) in clients.iter().enumerate() {
            c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            c.send_to(&vec![b'x'; n * 100], addr).unwrap();
        }
        let mut batch = Batch::new();
        let mut seen = Vec::new();
        while seen.len() < 3 {
            batch.receive(&server).unwrap();
            for i in 0..batch.len() {
                let (peer, data) = batch.datagram(i).unwrap();
                seen.push((peer, data.len()));
                let len = data.len();
                batch.answer(i, |buf| crate::protocol::emit_reply(buf, len));
            }
            let totals = batch.send(&server, |_, e| panic!("send failed: {e}"));
            assert_eq!(totals.failed, 0);
        }
        seen.sort_by_key(|s| s.1);
        for (n, c) in clients.iter().enumerate() {
            assert_eq!(seen[n], (c.local_addr().unwrap(), n * 100));
            let mut buf = [0u8; 64];
            let got = c.recv(&mut buf).unwrap();
            assert_eq!(
                &buf[..got],
                format!("Your data was {} bytes long", n * 100).as_bytes()
            );
        }
    }
}
