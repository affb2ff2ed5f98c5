//! One socket's (or one set of like sockets') abilities and options, and its sends, in the
//! shape of quinn-udp's `UdpSocketState`: [`SocketState::new`] sets every option asked for
//! ([`Options`]: buffers, GSO, GRO, receive metadata, fragmentation, marking) and learns
//! what the kernel grants; [`SocketState::send`] takes datagrams anywhere in the caller's
//! buffers, packs runs of one size to one peer into segmented sends (`UDP_SEGMENT`) where
//! the socket and the path allow, and says of each datagram refused why, as a
//! [`Refusal`].
//!
//! Promise: a segmented send the kernel refuses is sent again one datagram a call, here,
//! so that each datagram is sent or refused on its own: a path refusing segmentation
//! (`EIO`, `EINVAL`: quinn-udp's rule) turns it off for this state; a segment too big for
//! the path (`EMSGSIZE`, a route or tunnel whose MTU is under the datagram) turns it off
//! for datagrams of that size and larger; any other refusal of a segmented send says which
//! of its datagrams fail. Totals and refusals count datagrams, not calls. Nothing waits
//! (`MSG_DONTWAIT`) and nothing is allocated per datagram.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use crate::Error;
use crate::io::datagram::{BATCH, Destination, SendTotals, Sender, Transmit};
use crate::io::icmp::IcmpError;
use crate::io::socket as net;

/// Why the kernel refused to send a datagram, sorted once, here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Larger than this host sends on the path (`EMSGSIZE`).
    TooBig,
    /// The socket's or the kernel's buffers are full for now (`ENOBUFS`, `EAGAIN`): the
    /// same datagram may go a moment later.
    BufferFull,
    /// An ICMP error the kernel held from an earlier datagram (port unreachable, ...),
    /// reported on this send: the datagram itself did not go, and may go if tried again.
    Icmp(IcmpError),
    /// Anything else: a local firewall (`EPERM`), a broadcast not allowed, no route, ...
    Other {
        /// The kind of the send's error.
        kind: io::ErrorKind,
        /// The system's error number, where it is one.
        code: Option<i32>,
    },
}

impl Refusal {
    /// The refusal a failed send's error means.
    pub fn of(e: &io::Error) -> Refusal {
        if net::is_too_big(e) {
            return Refusal::TooBig;
        }
        if net::is_buffer_full(e) || e.kind() == io::ErrorKind::WouldBlock {
            return Refusal::BufferFull;
        }
        match IcmpError::of(e) {
            Some(kind) => Refusal::Icmp(kind),
            None => Refusal::Other {
                kind: e.kind(),
                code: e.raw_os_error(),
            },
        }
    }

    /// For now only: the same datagram may go a moment later.
    pub fn is_transient(self) -> bool {
        self == Refusal::BufferFull
    }

    /// The error itself, as the system would say it.
    pub fn error(self) -> io::Error {
        match self {
            Refusal::Other {
                code: Some(code), ..
            } => io::Error::from_raw_os_error(code),
            Refusal::Other { kind, .. } => io::Error::from(kind),
            Refusal::TooBig => io::Error::other("message too long"),
            Refusal::BufferFull => io::Error::from(io::ErrorKind::WouldBlock),
            Refusal::Icmp(kind) => io::Error::other(kind.as_str()),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooBig => f.write_str("too big for the path (EMSGSIZE)"),
            Refusal::BufferFull => f.write_str("the send buffers are full"),
            Refusal::Icmp(kind) => write!(f, "{} (an ICMP error)", kind.as_str()),
            Refusal::Other { .. } => f.write_str(&crate::error::plain(&self.error())),
        }
    }
}

/// What the kernel is told of the datagrams a socket receives, besides their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ArrivalInfo {
    /// Nothing more.
    #[default]
    Plain,
    /// When each arrived (`SO_TIMESTAMPNS`).
    Timed,
    /// When, and the TTL and TOS it came with: what a STAMP reflector reports.
    Full,
}

/// What a socket is asked to do; the default asks for nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Send runs of one size to one peer as one call (`UDP_SEGMENT`) where the kernel can.
    pub gso: bool,
    /// Receive datagrams of one size from one sender as one buffer (`UDP_GRO`).
    pub gro: bool,
    /// Receive buffer to ask for (forced past the system's limit when privileged).
    pub receive_buffer: Option<usize>,
    /// Send buffer to ask for.
    pub send_buffer: Option<usize>,
    /// Have the kernel count the datagrams it dropped for a full receive buffer.
    pub count_drops: bool,
    /// A socket bound to this address: on a wildcard one, learn each datagram's
    /// destination, to reply from it.
    pub reply_from: Option<SocketAddr>,
    pub arrivals: ArrivalInfo,
}

/// A socket's abilities and the state of its sends; see the module's promise.
pub struct SocketState {
    sender: Sender,
    /// Datagrams one segmented send may carry (1: none).
    gso: usize,
    /// The smallest segment size a path refused as too big; larger ones go singly.
    too_big: usize,
    /// Coalesced receives are on (for every socket of the set).
    gro: bool,
    /// The last refusal of a segmented send got past by sending singly.
    recovered: Option<Refusal>,
    /// Where each transmit of the current call starts among the caller's datagrams.
    firsts: [usize; BATCH],
}

impl Clone for SocketState {
    /// The same abilities, with headers of its own (for another thread).
    fn clone(&self) -> Self {
        SocketState {
            sender: Sender::new(),
            recovered: None,
            ..*self
        }
    }
}

impl std::fmt::Debug for SocketState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketState")
            .field("gso", &self.gso)
            .field("gro", &self.gro)
            .finish()
    }
}

impl Default for SocketState {
    /// Sends one datagram a call, receives them one a buffer.
    fn default() -> Self {
        SocketState {
            sender: Sender::new(),
            gso: 1,
            too_big: usize::MAX,
            gro: false,
            recovered: None,
            firsts: [0; BATCH],
        }
    }
}

/// One datagram to send: `len` bytes from `start` of buffer `buffer` (an index into the
/// buffers given with it), to `to` (`None`: the connected peer) from `from` (`None`: the
/// kernel's choice).
#[derive(Clone, Copy, Debug)]
pub struct Out {
    pub buffer: usize,
    pub start: usize,
    pub len: usize,
    pub to: Option<SocketAddr>,
    pub from: Option<Destination>,
    /// The TOS or traffic class byte for this datagram alone (a reflector's reply with the
    /// DSCP its sender asked for); `None`: the socket's own.
    pub tos: Option<u8>,
}

impl Out {
    /// `len` bytes at `start` of buffer 0, to the connected peer.
    pub fn at(start: usize, len: usize) -> Out {
        Out {
            buffer: 0,
            start,
            len,
            to: None,
            from: None,
            tos: None,
        }
    }

    /// Whether `next` can ride in the same segmented send as a run ending with `self`.
    fn continued_by(&self, next: &Out) -> bool {
        next.buffer == self.buffer
            && next.len == self.len
            && next.start == self.start + self.len
            && next.to == self.to
            && next.tos == self.tos
            && same_source(self.from, next.from)
    }
}

fn same_source(a: Option<Destination>, b: Option<Destination>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same(&b),
        _ => false,
    }
}

impl SocketState {
    /// Sets `options` on `socket` and learns what the kernel grants.
    pub fn new(socket: &UdpSocket, options: &Options) -> SocketState {
        let mut state = SocketState {
            gso: BATCH,
            gro: options.gro,
            ..SocketState::default()
        };
        state.join(socket, options);
        state
    }

    /// Sets `options` on another socket of the same kind (a load's flows): the abilities
    /// become those every socket of the set has.
    pub fn join(&mut self, socket: &UdpSocket, options: &Options) {
        if let Some(bytes) = options.receive_buffer {
            net::grow_receive_buffer(socket, bytes);
        }
        if let Some(bytes) = options.send_buffer {
            net::grow_send_buffer(socket, bytes);
        }
        if options.count_drops {
            net::count_kernel_drops(socket);
        }
        if let Some(bound) = options.reply_from {
            net::reply_from_destination(socket, bound);
        }
        Self::arrivals(socket, options.arrivals);
        self.gso = if options.gso {
            self.gso.min(net::gso_segments(socket))
        } else {
            1
        };
        if options.gro {
            self.gro &= net::enable_gro(socket);
        }
    }

    /// Asks, from now on, for what `arrivals` says of each datagram (best effort; asking
    /// again is harmless).
    pub fn arrivals(socket: &UdpSocket, arrivals: ArrivalInfo) {
        match arrivals {
            ArrivalInfo::Plain => {}
            ArrivalInfo::Timed => net::timestamp_arrivals(socket),
            ArrivalInfo::Full => {
                let v6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
                net::report_arrival(socket, v6);
            }
        }
    }

    /// Turns coalesced receives on now (after a handshake read one datagram at a time);
    /// true if the kernel agreed.
    pub fn enable_gro(&mut self, socket: &UdpSocket) -> bool {
        self.gro = net::enable_gro(socket);
        self.gro
    }

    /// Marks every datagram `socket` sends to `peer` with this TOS byte (DSCP and ECN)
    /// and TTL (hop limit), where given.
    pub fn mark(
        socket: &UdpSocket,
        peer: SocketAddr,
        tos: Option<u8>,
        ttl: Option<u8>,
    ) -> Result<(), Error> {
        if let Some(tos) = tos {
            net::set_tos(socket, peer, tos)?;
        }
        if let Some(ttl) = ttl {
            net::set_ttl(socket, peer, ttl)?;
        }
        Ok(())
    }

    /// The TTL (hop limit) `socket` sends to `peer` with, if the kernel says.
    pub fn ttl(socket: &UdpSocket, peer: SocketAddr) -> Option<u8> {
        net::ttl(socket, peer)
    }

    /// Forbids fragmentation, ignoring the kernel's cached path MTU (a forged ICMP can
    /// lower it): what a path-MTU search needs.
    pub fn forbid_fragments(socket: &UdpSocket, peer: SocketAddr) -> Result<(), Error> {
        net::forbid_fragments(socket, peer)
    }

    /// The kernel's MTU for a connected socket's route, where it says.
    pub fn path_mtu(socket: &UdpSocket, peer: SocketAddr) -> Option<usize> {
        net::path_mtu(socket, peer)
    }

    /// Whether segmented sends are on (the socket has them and no path refused them all).
    pub fn gso(&self) -> bool {
        self.gso > 1
    }

    /// Whether coalesced receives are on.
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// How many datagrams of `size` bytes one send may carry now (1: singly): never past
    /// 64 KiB in all, never what a path refused.
    pub fn segments(&self, size: usize) -> usize {
        if size >= self.too_big {
            return 1;
        }
        net::gso_fit(self.gso, size)
    }

    /// The last refusal of a segmented send since asked, whose datagrams then went singly
    /// (what a caller counts: an ICMP error held from an earlier datagram, say).
    pub fn take_recovered(&mut self) -> Option<Refusal> {
        self.recovered.take()
    }

    /// Whether each datagram sent can carry a TOS byte of its own ([`Out::tos`]).
    pub fn marks_each(&self) -> bool {
        cfg!(target_os = "linux")
    }

    /// Learns from a segmented send's refusal (before its datagrams go singly).
    fn refused_segmented(&mut self, e: &io::Error, size: usize) {
        if net::gso_refused(e) {
            self.gso = 1;
        } else if net::is_too_big(e) {
            self.too_big = self.too_big.min(size);
        }
        self.recovered = Some(Refusal::of(e));
    }

    /// Packs `datagrams[..]` (at most BATCH transmits' worth) into `transmits`; returns how
    /// many transmits and how many datagrams they carry.
    fn pack<'b>(
        &mut self,
        buffers: &[&'b [u8]],
        datagrams: &[Out],
        transmits: &mut [Transmit<'b>; BATCH],
    ) -> (usize, usize) {
        let mut t = 0;
        let mut d = 0;
        while t < BATCH && d < datagrams.len() {
            let first = datagrams[d];
            let most = self.segments(first.len);
            let mut n = 1;
            while n < most
                && d + n < datagrams.len()
                && datagrams[d + n - 1].continued_by(&datagrams[d + n])
            {
                n += 1;
            }
            let buffer = buffers[first.buffer];
            transmits[t] = Transmit {
                destination: first.to,
                source: first.from,
                contents: &buffer[first.start..first.start + first.len * n],
                segment_size: (n > 1).then_some(first.len),
                tos: first.tos,
            };
            self.firsts[t] = d;
            t += 1;
            d += n;
        }
        (t, d)
    }

    /// Sends `datagrams` (any number) in order without waiting; `refused(i, why)` hears of
    /// datagram `i` that the kernel refused; the rest still go.
    pub fn send(
        &mut self,
        socket: &UdpSocket,
        buffers: &[&[u8]],
        datagrams: &[Out],
        mut refused: impl FnMut(usize, Refusal),
    ) -> SendTotals {
        let mut totals = SendTotals::default();
        let mut done = 0;
        while done < datagrams.len() {
            let mut transmits = [Transmit::EMPTY; BATCH];
            let (count, carried) = self.pack(buffers, &datagrams[done..], &mut transmits);
            let mut failures: [Option<io::Error>; BATCH] = std::array::from_fn(|_| None);
            let t = self
                .sender
                .send_sys(socket, &transmits[..count], false, &mut |i, e| {
                    failures[i] = Some(own(e))
                });
            totals.bytes += t.bytes;
            for (i, transmit) in transmits[..count].iter().enumerate() {
                let first = done + self.firsts[i];
                let Some(e) = failures[i].take() else {
                    totals.sent += datagrams_in(transmit) as u64;
                    continue;
                };
                if datagrams_in(transmit) == 1 {
                    totals.failed += 1;
                    refused(first, Refusal::of(&e));
                    continue;
                }
                self.refused_segmented(&e, transmit.segment_size.unwrap_or(1));
                let singly = self.singly(socket, transmit, false, &mut |k, e| {
                    refused(first + k, Refusal::of(e))
                });
                totals.sent += singly.sent;
                totals.bytes += singly.bytes;
                totals.failed += singly.failed;
            }
            done += carried;
        }
        totals
    }

    /// Sends `datagrams` in order until the kernel refuses one, and stops there: those sent
    /// are always the first `totals.sent` (a numbered stream must not skip a number it will
    /// send again); with the refusal that stopped it, if any.
    pub fn send_prefix(
        &mut self,
        socket: &UdpSocket,
        buffers: &[&[u8]],
        datagrams: &[Out],
    ) -> (SendTotals, Option<Refusal>) {
        let mut totals = SendTotals::default();
        let mut done = 0;
        while done < datagrams.len() {
            let mut transmits = [Transmit::EMPTY; BATCH];
            let (count, carried) = self.pack(buffers, &datagrams[done..], &mut transmits);
            let mut refusal = None;
            let t = self
                .sender
                .send_sys(socket, &transmits[..count], true, &mut |i, e| {
                    refusal = Some((i, own(e)))
                });
            totals.bytes += t.bytes;
            let Some((at, e)) = refusal else {
                totals.sent += carried as u64;
                done += carried;
                continue;
            };
            totals.sent += transmits[..at]
                .iter()
                .map(|t| datagrams_in(t) as u64)
                .sum::<u64>();
            let transmit = transmits[at];
            if datagrams_in(&transmit) == 1 {
                return (totals, Some(Refusal::of(&e)));
            }
            self.refused_segmented(&e, transmit.segment_size.unwrap_or(1));
            let mut stopped = None;
            let singly = self.singly(socket, &transmit, true, &mut |_, e| {
                stopped = Some(Refusal::of(e))
            });
            totals.sent += singly.sent;
            totals.bytes += singly.bytes;
            if stopped.is_some() {
                return (totals, stopped);
            }
            done += self.firsts[at] + datagrams_in(&transmit);
        }
        (totals, None)
    }

    /// Sends a segmented transmit's datagrams one a datagram.
    fn singly(
        &mut self,
        socket: &UdpSocket,
        transmit: &Transmit<'_>,
        stop_at_failure: bool,
        failed: &mut impl FnMut(usize, &io::Error),
    ) -> SendTotals {
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let mut totals = SendTotals::default();
        for (c, chunk) in transmit.contents.chunks(size * BATCH).enumerate() {
            let mut singles = [Transmit::EMPTY; BATCH];
            let mut n = 0;
            for part in chunk.chunks(size) {
                singles[n] = Transmit {
                    contents: part,
                    segment_size: None,
                    ..*transmit
                };
                n += 1;
            }
            let mut stopped = false;
            let t = self
                .sender
                .send_sys(socket, &singles[..n], stop_at_failure, &mut |i, e| {
                    stopped = true;
                    failed(c * BATCH + i, e)
                });
            totals.sent += t.sent;
            totals.bytes += t.bytes;
            totals.failed += t.failed;
            if stop_at_failure && stopped {
                break;
            }
        }
        totals
    }
}

/// Datagrams in a transmit.
fn datagrams_in(t: &Transmit<'_>) -> usize {
    match t.segment_size {
        Some(size) if size > 0 => t.contents.len().div_ceil(size).max(1),
        _ => 1,
    }
}

/// An owned copy of a refusal (the OS error, where it is one).
fn own(e: &io::Error) -> io::Error {
    e.raw_os_error().map_or_else(
        || io::Error::new(e.kind(), e.to_string()),
        io::Error::from_raw_os_error,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_one_size_to_one_peer_pack_and_nothing_else_does() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = Some(receiver.local_addr().unwrap());
        let mut state = SocketState::new(
            &socket,
            &Options {
                gso: true,
                ..Options::default()
            },
        );
        let buf = vec![7u8; 1000];
        let out = |start, len| Out {
            to,
            ..Out::at(start, len)
        };
        // Three of 10 back to back, then one of 10 not contiguous, then two of 20.
        let datagrams = [
            out(0, 10),
            out(10, 10),
            out(20, 10),
            out(40, 10),
            out(50, 20),
            out(70, 20),
        ];
        let mut transmits = [Transmit::EMPTY; BATCH];
        let (count, carried) = state.pack(&[&buf], &datagrams, &mut transmits);
        assert_eq!(carried, 6);
        let shape: Vec<_> = transmits[..count]
            .iter()
            .map(|t| (t.contents.len(), t.segment_size))
            .collect();
        if state.gso() {
            assert_eq!(shape, [(30, Some(10)), (10, None), (40, Some(20))]);
        } else {
            assert_eq!(count, 6);
        }
        let totals = state.send(&socket, &[&buf], &datagrams, |i, why| panic!("{i}: {why}"));
        assert_eq!(totals.sent, 6);
        let mut got = Vec::new();
        let mut b = [0u8; 100];
        receiver.set_nonblocking(true).unwrap();
        for _ in 0..100 {
            match receiver.recv(&mut b) {
                Ok(n) => got.push(n),
                Err(_) if got.len() == 6 => break,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        assert_eq!(got, [10, 10, 10, 10, 20, 20]);
    }

    #[test]
    fn a_refusal_is_sorted_once() {
        assert_eq!(
            Refusal::of(&io::Error::from(io::ErrorKind::WouldBlock)),
            Refusal::BufferFull
        );
        #[cfg(unix)]
        {
            assert_eq!(
                Refusal::of(&io::Error::from_raw_os_error(libc::EMSGSIZE)),
                Refusal::TooBig
            );
            assert_eq!(
                Refusal::of(&io::Error::from_raw_os_error(libc::ECONNREFUSED)),
                Refusal::Icmp(IcmpError::PortUnreachable)
            );
            assert!(matches!(
                Refusal::of(&io::Error::from_raw_os_error(libc::EPERM)),
                Refusal::Other { .. }
            ));
        }
    }
}
