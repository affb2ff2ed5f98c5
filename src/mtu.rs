//! `udpkit mtu`: the largest datagram that reaches a server and comes back answered, with
//! fragmentation forbidden, found by a binary search of probes in the spirit of RFC 8899
//! (DPLPMTUD) rather than by trusting the kernel's cache alone.
//!
//! Promise: every probe is a real request that the server must answer (each retransmitted
//! with a short backoff); a probe too big for the path ends as "too big", never as a bare
//! `os error 90`; the search takes at most about 17 probes.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::flow::{Flow, Outcome};
use crate::protocol::{ID_LEN, RECV_BUFFER};
use crate::{Error, net};

/// What the search found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The largest UDP payload that came back answered.
    pub payload: usize,
    /// The path MTU it implies: payload + 28 bytes over IPv4, + 48 over IPv6.
    pub path_mtu: usize,
    /// What the kernel says of the route after the search (`IP_MTU`/`IPV6_MTU`).
    pub kernel_mtu: Option<usize>,
    /// Probes sent, retransmissions included.
    pub probes: u32,
}

/// How one probe size fared.
enum Probe {
    Answered,
    TooBig,
    Silent,
}

/// Searches the path to `target`; `waits` are the successive waits for each probe.
pub fn mtu(target: SocketAddr, waits: &[Duration]) -> Result<Report, Error> {
    let socket = net::connect(target)?;
    forbid_fragments(&socket, target)?;
    let overhead = if target.is_ipv4() { 28 } else { 48 };
    let largest = if target.is_ipv4() { 65_507 } else { 65_527 };
    let mut high =
        kernel_mtu(&socket, target).map_or(largest, |m| m.saturating_sub(overhead).min(largest));
    let mut low = ID_LEN;
    let mut probes = 0;
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut probe = |size: usize, probes: &mut u32| -> Result<Probe, Error> {
        let mut flow = Flow::new(size, 16);
        let mut request = Vec::with_capacity(size);
        for &wait in waits {
            *probes += 1;
            flow.next_request(&mut request, Instant::now());
            match socket.send(&request) {
                Ok(_) => {}
                Err(e) if is_too_big(&e) => return Ok(Probe::TooBig),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(Error::Refused { server: target });
                }
                Err(e) => return Err(Error::io(format!("cannot send to {target}"), e)),
            }
            let deadline = Instant::now() + wait;
            while let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            {
                socket
                    .set_read_timeout(Some(left))
                    .map_err(|e| Error::io("cannot set the socket's timeout", e))?;
                match socket.recv(&mut buf) {
                    Ok(len) => {
                        if let Outcome::Answer { .. } = flow.on_reply(&buf[..len], Instant::now()) {
                            return Ok(Probe::Answered);
                        }
                    }
                    Err(e) if is_too_big(&e) => return Ok(Probe::TooBig),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        return Err(Error::Refused { server: target });
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io(format!("cannot receive from {target}"), e)),
                }
            }
        }
        Ok(Probe::Silent)
    };
    match probe(low, &mut probes)? {
        Probe::Answered => {}
        _ => {
            return Err(Error::NoReply {
                server: target,
                tries: probes,
                waited: waits.iter().sum(),
            });
        }
    }
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        match probe(mid, &mut probes)? {
            Probe::Answered => low = mid,
            Probe::TooBig => {
                // The kernel learned a smaller path MTU (ICMP "fragmentation needed"):
                // nothing above it can pass, but check rather than trust it.
                high = mid - 1;
                if let Some(m) = kernel_mtu(&socket, target) {
                    high = high.min(m.saturating_sub(overhead)).max(low);
                }
            }
            Probe::Silent => high = mid - 1,
        }
    }
    Ok(Report {
        payload: low,
        path_mtu: low + overhead,
        kernel_mtu: kernel_mtu(&socket, target),
        probes,
    })
}

fn is_too_big(e: &io::Error) -> bool {
    #[cfg(unix)]
    return e.raw_os_error() == Some(libc::EMSGSIZE);
    #[cfg(not(unix))]
    return e.kind() == io::ErrorKind::InvalidInput;
}

/// Sets the don't-fragment bit (IPv4) or forbids fragmentation (IPv6).
fn forbid_fragments(socket: &UdpSocket, target: SocketAddr) -> Result<(), Error> {
    #[cfg(target_os = "linux")]
    {
        let (level, name, value) = if target.is_ipv4() {
            (
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_DO,
            )
        } else {
            (
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_DO,
            )
        };
        net::set_int_option(socket, level, name, value)
            .map_err(|e| Error::io("cannot forbid fragmentation", e))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, target);
        Err(Error::io(
            "cannot forbid fragmentation on this system",
            io::Error::from(io::ErrorKind::Unsupported),
        ))
    }
}

/// The kernel's MTU for the connected route (`IP_MTU`/`IPV6_MTU`), Linux only.
fn kernel_mtu(socket: &UdpSocket, target: SocketAddr) -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        let (level, name) = if target.is_ipv4() {
            (libc::IPPROTO_IP, libc::IP_MTU)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_MTU)
        };
        let value = net::get_int_option(socket, level, name).ok()?;
        usize::try_from(value).ok().filter(|v| *v > 0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, target);
        None
    }
}
