//! Socket set-up, in one place: resolving `HOST` and `PORT` to an address, binding a
//! server's socket, connecting a client's.
//!
//! Promise: every failure comes back as an [`Error`] that names the address and the cause.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use crate::Error;

/// The seed's address: the server binds it, the client sends to it.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// The seed's port.
pub const DEFAULT_PORT: u16 = 1060;

/// Resolves `host` (an IPv4 or IPv6 literal, with or without brackets, or a name) with
/// `port`. A name with both kinds of address gives the IPv4 one, as the seed's `AF_INET`
/// socket would.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, Error> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse() {
        return Ok(SocketAddr::new(ip, port));
    }
    let failed = |reason: String| Error::Resolve {
        host: host.to_string(),
        reason,
    };
    let addrs: Vec<SocketAddr> = (bare, port)
        .to_socket_addrs()
        .map_err(|e| {
            let text = crate::error::plain(&e);
            failed(
                text.strip_prefix("failed to lookup address information: ")
                    .unwrap_or(&text)
                    .to_lowercase(),
            )
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| failed("the name has no address".to_string()))
}

/// A UDP socket of the right family for `addr`, not yet bound.
fn udp_socket(addr: &SocketAddr) -> Result<Socket, Error> {
    Socket::new(Domain::for_address(*addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| Error::io("cannot create a UDP socket", e))
}

/// A server's socket, bound to `addr` (port 0: a free port, see `local_addr`).
pub fn bind(addr: SocketAddr) -> Result<UdpSocket, Error> {
    let socket = udp_socket(&addr)?;
    socket
        .bind(&addr.into())
        .map_err(|source| Error::Bind { addr, source })?;
    Ok(socket.into())
}

/// A client's socket, connected to `server` so that the kernel delivers only the server's
/// datagrams to it and reports ICMP port unreachable as a refused connection.
pub fn connect(server: SocketAddr) -> Result<UdpSocket, Error> {
    let socket = udp_socket(&server)?;
    socket
        .connect(&server.into())
        .map_err(|e| Error::io(format!("cannot send to {server}"), e))?;
    Ok(socket.into())
}

/// The address a socket is bound to.
pub fn local_addr(socket: &UdpSocket) -> Result<SocketAddr, Error> {
    socket
        .local_addr()
        .map_err(|e| Error::io("cannot read the socket's address", e))
}

/// How an address is shown to a user: an IPv4 client of a dual-stack `::` server appears
/// as `127.0.0.1:5000`, not `[::ffff:127.0.0.1]:5000`.
pub fn shown(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_resolve_without_a_lookup() {
        assert_eq!(
            resolve("127.0.0.1", 1060).unwrap().to_string(),
            "127.0.0.1:1060"
        );
        assert_eq!(resolve("::1", 7).unwrap().to_string(), "[::1]:7");
        assert_eq!(resolve("[::1]", 7).unwrap().to_string(), "[::1]:7");
    }

    #[test]
    fn localhost_prefers_ipv4() {
        assert_eq!(resolve("localhost", 1).unwrap().to_string(), "127.0.0.1:1");
    }

    #[test]
    fn an_unresolvable_name_says_so() {
        let err = resolve("no-such-host.invalid", 1).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot resolve host 'no-such-host.invalid': "),
            "{err}"
        );
    }

    #[test]
    fn mapped_addresses_are_shown_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        assert_eq!(shown(mapped).to_string(), "127.0.0.1:5000");
    }
}
