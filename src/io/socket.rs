//! Socket set-up, in one place: binding a server's socket, connecting a client's, buffer
//! sizes and the options that make the kernel tell what it knows (drops, destinations).
//!
//! Promise: every failure comes back as an [`Error`] that names the address and the cause.

use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use crate::Error;

/// A UDP socket of the right family for `addr`, not yet bound.
fn udp_socket(addr: &SocketAddr) -> Result<Socket, Error> {
    Socket::new(Domain::for_address(*addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| Error::io("cannot create a UDP socket", e))
}

/// The receive buffer a server asks for: room for bursts of tens of thousands of small
/// datagrams while its thread is busy.
pub const SERVER_RECEIVE_BUFFER: usize = 4 << 20;

/// A server's socket, bound to `addr` (port 0: a free port, see `local_addr`). With
/// `share_port`, other sockets may bind the same address (`SO_REUSEPORT`) and the kernel
/// spreads the clients over them.
/// `port` is how the user picks another port, for the error (`-p PORT`, `--listen
/// HOST:PORT`).
pub fn bind(addr: SocketAddr, share_port: bool, port: &'static str) -> Result<UdpSocket, Error> {
    let socket = udp_socket(&addr)?;
    if share_port {
        #[cfg(unix)]
        socket
            .set_reuse_port(true)
            .map_err(|e| Error::io("cannot share the port between threads (SO_REUSEPORT)", e))?;
        #[cfg(not(unix))]
        return Err(Error::io(
            "cannot share the port between threads",
            std::io::Error::from(std::io::ErrorKind::Unsupported),
        ));
    }
    socket
        .bind(&addr.into())
        .map_err(|source| Error::Bind { addr, source, port })?;
    Ok(socket.into())
}

/// Asks for a receive buffer of `bytes` (with `SO_RCVBUFFORCE` past the system's limit
/// when privileged) and returns what the kernel granted, as `SO_RCVBUF` reports it (Linux
/// reports twice the usable size, to cover its bookkeeping).
pub fn grow_receive_buffer(socket: &UdpSocket, bytes: usize) -> usize {
    grow_buffer(socket, bytes, Buffer::Receive)
}

/// The receive buffer the kernel granted `socket`, as `SO_RCVBUF` reports it.
pub fn receive_buffer(socket: &UdpSocket) -> usize {
    socket2::SockRef::from(socket)
        .recv_buffer_size()
        .unwrap_or(0)
}

#[derive(Clone, Copy)]
enum Buffer {
    Receive,
    Send,
}

/// Asks for a buffer of `bytes`, forcing past the system's limit when privileged, and
/// returns what the kernel granted.
fn grow_buffer(socket: &UdpSocket, bytes: usize, which: Buffer) -> usize {
    let sock = socket2::SockRef::from(socket);
    let size = |sock: &socket2::SockRef<'_>| match which {
        Buffer::Receive => sock.recv_buffer_size(),
        Buffer::Send => sock.send_buffer_size(),
    };
    let _ = match which {
        Buffer::Receive => sock.set_recv_buffer_size(bytes),
        Buffer::Send => sock.set_send_buffer_size(bytes),
    };
    #[cfg(target_os = "linux")]
    if size(&sock).unwrap_or(0) < bytes {
        let wanted = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        let force = match which {
            Buffer::Receive => libc::SO_RCVBUFFORCE,
            Buffer::Send => libc::SO_SNDBUFFORCE,
        };
        let _ = set_int_option(socket, libc::SOL_SOCKET, force, wanted);
    }
    size(&sock).unwrap_or(0)
}

/// The send buffer a server asks for: replies held by the kernel (waiting for a neighbour's
/// link-layer address, say) take room here before a reply must be dropped.
pub const SERVER_SEND_BUFFER: usize = 4 << 20;

/// Asks for a send buffer of `bytes` (`SO_SNDBUFFORCE` past the system's limit when
/// privileged) and returns what the kernel granted.
pub fn grow_send_buffer(socket: &UdpSocket, bytes: usize) -> usize {
    grow_buffer(socket, bytes, Buffer::Send)
}

/// Asks the kernel to tell, with received datagrams, how many it dropped for a full
/// receive buffer (`SO_RXQ_OVFL`, Linux). Elsewhere nothing is counted.
pub fn count_kernel_drops(socket: &UdpSocket) {
    #[cfg(target_os = "linux")]
    let _ = set_int_option(socket, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1);
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// The kernel's count of datagrams this socket dropped (full receive buffer, and the like),
/// read at once (`SO_MEMINFO`, Linux; `None` elsewhere). Unlike `SO_RXQ_OVFL`, which only a
/// later datagram carries, this sees drops at the end of a burst too.
pub fn kernel_drops(socket: &UdpSocket) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        const SO_MEMINFO: libc::c_int = 55;
        let mut info = [0u32; 16];
        let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: a valid socket and a buffer of the length given.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let index = libc::SK_MEMINFO_DROPS as usize;
        (rc == 0 && (len as usize) > index * 4).then(|| u64::from(info[index]))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        None
    }
}

/// Asks the kernel to tell, with each datagram, the address it was sent to, so that a
/// server bound to a wildcard address can reply from that address (`IP_PKTINFO`,
/// `IPV6_RECVPKTINFO`; Linux). Without it a host with several addresses could reply from
/// another one, and a connected client would drop the reply as foreign.
pub fn reply_from_destination(socket: &UdpSocket, bound: SocketAddr) {
    #[cfg(target_os = "linux")]
    if bound.ip().is_unspecified() {
        let _ = set_int_option(socket, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
        if bound.is_ipv6() {
            let _ = set_int_option(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (socket, bound);
}

/// Asks the kernel to say, with each datagram, when it arrived (`SO_TIMESTAMPNS`, this
/// host's clock): for STAMP's receive timestamp and a stream's jitter. Best effort.
pub fn timestamp_arrivals(socket: &UdpSocket) {
    #[cfg(target_os = "linux")]
    let _ = set_int_option(socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1);
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Asks the kernel to say, with each datagram, the TTL (hop limit) and TOS (traffic
/// class) it arrived with and when it arrived: what a STAMP reflector reports. Best
/// effort: a kernel that refuses leaves those unknown (`RecvMeta`).
pub fn report_arrival(socket: &UdpSocket, ipv6: bool) {
    timestamp_arrivals(socket);
    #[cfg(target_os = "linux")]
    {
        let _ = set_int_option(socket, libc::IPPROTO_IP, libc::IP_RECVTTL, 1);
        let _ = set_int_option(socket, libc::IPPROTO_IP, libc::IP_RECVTOS, 1);
        if ipv6 {
            let _ = set_int_option(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1);
            let _ = set_int_option(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (socket, ipv6);
}

/// Sets the TOS byte (IPv4) or traffic class (IPv6) of every datagram `socket` sends:
/// DSCP in the high six bits, ECN in the low two.
pub fn set_tos(socket: &UdpSocket, peer: SocketAddr, tos: u8) -> Result<(), Error> {
    let sock = socket2::SockRef::from(socket);
    let result = match peer {
        SocketAddr::V4(_) => sock.set_tos_v4(u32::from(tos)),
        SocketAddr::V6(_) => sock.set_tclass_v6(u32::from(tos)),
    };
    result.map_err(|e| Error::io(format!("cannot set the TOS byte to {tos}"), e))
}

/// The TTL (IPv4) or unicast hop limit (IPv6) `socket` sends with, if the kernel says.
pub fn ttl(socket: &UdpSocket, peer: SocketAddr) -> Option<u8> {
    let sock = socket2::SockRef::from(socket);
    let ttl = match peer {
        SocketAddr::V4(_) => sock.ttl_v4().ok()?,
        SocketAddr::V6(_) => sock.unicast_hops_v6().ok()?,
    };
    u8::try_from(ttl).ok()
}

/// Sets the TTL (IPv4) or unicast hop limit (IPv6) of every datagram `socket` sends.
pub fn set_ttl(socket: &UdpSocket, peer: SocketAddr, ttl: u8) -> Result<(), Error> {
    let sock = socket2::SockRef::from(socket);
    let result = match peer {
        SocketAddr::V4(_) => sock.set_ttl_v4(u32::from(ttl)),
        SocketAddr::V6(_) => sock.set_unicast_hops_v6(u32::from(ttl)),
    };
    result.map_err(|e| Error::io(format!("cannot set the TTL to {ttl}"), e))
}

/// The most bytes one segmented send carries in all (an IP packet's limit, before the
/// kernel cuts it): more fails with `EMSGSIZE`.
pub const MAX_GSO_BYTES: usize = crate::wire::MAX_IPV4_PAYLOAD;

/// How many datagrams of `size` bytes one segmented send may carry, at most `segments`.
pub fn gso_fit(segments: usize, size: usize) -> usize {
    segments.min(MAX_GSO_BYTES / size.max(1)).max(1)
}

/// How many datagrams one send may carry with `UDP_SEGMENT` (GSO) on `socket`: 64 where
/// the kernel has it (Linux 4.18 and later), 1 where it does not. A kernel that has it
/// may still refuse a segmented send (`EIO` or `EINVAL`, a device without checksum
/// offload): callers fall back to one datagram a transmit then, as quinn-udp does.
pub fn gso_segments(socket: &UdpSocket) -> usize {
    #[cfg(target_os = "linux")]
    if get_int_option(socket, libc::SOL_UDP, libc::UDP_SEGMENT).is_ok() {
        return 64;
    }
    let _ = socket;
    1
}

/// Asks the kernel to coalesce datagrams of one size from one sender into one receive
/// (`UDP_GRO`, Linux 5.0 and later); true if it agreed. Receives then report each
/// buffer's segment size (`RecvMeta::stride`), and need room for 64 datagrams.
pub fn enable_gro(socket: &UdpSocket) -> bool {
    #[cfg(target_os = "linux")]
    return set_int_option(socket, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        false
    }
}

/// Whether a failed segmented send means the path refuses GSO (the caller should send
/// one datagram a transmit from now on).
pub fn gso_refused(e: &std::io::Error) -> bool {
    #[cfg(target_os = "linux")]
    return matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL));
    #[cfg(not(target_os = "linux"))]
    {
        let _ = e;
        false
    }
}

/// Whether a refused send means the datagram (or a segment of a segmented send) is larger
/// than this host sends on the path (`EMSGSIZE`).
pub fn is_too_big(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    return e.raw_os_error() == Some(libc::EMSGSIZE);
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// Whether a refused send means the kernel's buffers were full for now (`ENOBUFS`): the
/// same datagram may go a moment later.
pub fn is_buffer_full(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    return e.raw_os_error() == Some(libc::ENOBUFS);
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// Sets the don't-fragment bit (IPv4) or forbids fragmentation (IPv6), ignoring the
/// kernel's cached path MTU (`IP_PMTUDISC_PROBE`), which a forged ICMP can lower.
pub fn forbid_fragments(socket: &UdpSocket, target: SocketAddr) -> Result<(), Error> {
    #[cfg(target_os = "linux")]
    {
        let (level, name, value) = if target.is_ipv4() {
            (
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_PROBE,
            )
        } else {
            (
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_PROBE,
            )
        };
        set_int_option(socket, level, name, value)
            .map_err(|e| Error::io("cannot forbid fragmentation", e))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, target);
        Err(Error::io(
            "cannot forbid fragmentation on this system",
            std::io::Error::from(std::io::ErrorKind::Unsupported),
        ))
    }
}

/// The kernel's MTU for a connected socket's route (`IP_MTU`/`IPV6_MTU`, its cached path
/// MTU where it has one), Linux only.
pub fn path_mtu(socket: &UdpSocket, target: SocketAddr) -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        let (level, name) = if target.is_ipv4() {
            (libc::IPPROTO_IP, libc::IP_MTU)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_MTU)
        };
        let value = get_int_option(socket, level, name).ok()?;
        usize::try_from(value).ok().filter(|v| *v > 0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, target);
        None
    }
}

/// Sets an integer socket option (Linux).
#[cfg(target_os = "linux")]
pub(crate) fn set_int_option(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket, and an int option passed with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads an integer socket option (Linux).
#[cfg(target_os = "linux")]
pub(crate) fn get_int_option(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
) -> std::io::Result<libc::c_int> {
    use std::os::fd::AsRawFd;
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket and an int-sized buffer with its length.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A client's socket, connected to `server` so that the kernel delivers only the server's
/// datagrams to it and reports ICMP errors (port unreachable, ...) to it.
///
/// Its port is its own: bound without `SO_REUSEPORT`, so the kernel gives it a port no
/// other socket holds (a port-0 bind with `SO_REUSEPORT` may be handed a port another
/// socket of the same user already shares, and two flows on one port and one server
/// receive each other's replies). A [`foreign_witness`] may then join it, briefly allowed.
pub fn connect(server: SocketAddr) -> Result<UdpSocket, Error> {
    let socket = udp_socket(&server)?;
    let any = match server {
        SocketAddr::V4(_) => SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0),
        SocketAddr::V6(_) => SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), 0),
    };
    socket.bind(&any.into()).map_err(|source| Error::Bind {
        addr: any,
        source,
        port: "",
    })?;
    socket
        .connect(&server.into())
        .map_err(|e| Error::io(format!("cannot send to {server}"), e))?;
    Ok(socket.into())
}

/// A socket for the datagrams that reach a connected client's port from anyone but its
/// server: bound to the same port (the kernel gives the connected socket, the better match,
/// everything its server sends), non-blocking. What arrives here was never accepted as a
/// reply, and is counted as foreign. To share the port, both sockets allow `SO_REUSEPORT`
/// (which Linux lets only the same effective user join) just for the witness's bind, then
/// forbid it again: from then on nobody, this user included, can bind the port. `None`
/// where the system will not share the port (everywhere but Linux).
#[cfg(target_os = "linux")]
pub fn foreign_witness(connected: &UdpSocket) -> Option<UdpSocket> {
    let local = connected.local_addr().ok()?;
    let any = match local {
        SocketAddr::V4(_) => SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), local.port()),
        SocketAddr::V6(_) => SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), local.port()),
    };
    let connected = socket2::SockRef::from(connected);
    connected.set_reuse_port(true).ok()?;
    let witness = udp_socket(&any).ok().and_then(|w| {
        w.set_reuse_port(true).ok()?;
        w.bind(&any.into()).ok()?;
        w.set_reuse_port(false).ok()?;
        w.set_nonblocking(true).ok()?;
        Some(w)
    });
    connected.set_reuse_port(false).ok()?;
    witness.map(Into::into)
}

/// No witness off Linux (see the Linux version).
#[cfg(not(target_os = "linux"))]
pub fn foreign_witness(_connected: &UdpSocket) -> Option<UdpSocket> {
    None
}

/// Counts (and discards) the datagrams waiting on a foreign witness.
pub fn drain_foreign(witness: Option<&UdpSocket>, buf: &mut [u8]) -> u64 {
    let Some(witness) = witness else { return 0 };
    let mut n = 0;
    // Bounded: a flood cannot keep the caller here.
    while n < 4096 && witness.recv_from(buf).is_ok() {
        n += 1;
    }
    n
}

/// The address a socket is bound to.
pub fn local_addr(socket: &UdpSocket) -> Result<SocketAddr, Error> {
    socket
        .local_addr()
        .map_err(|e| Error::io("cannot read the socket's address", e))
}
