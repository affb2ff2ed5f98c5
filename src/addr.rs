//! Addresses as a user gives and sees them: the seed's defaults, `HOST` and `HOST:PORT`
//! resolved (IPv4 first, as the seed's `AF_INET` socket), and an address shown without
//! the IPv4-mapped disguise.
//!
//! Promise: every failure comes back as an [`Error`] that names the host and the cause.

use std::net::{SocketAddr, ToSocketAddrs};

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
    // `127.0.0.1:1060`, `[::1]:1060`, `localhost:1060` where a host alone goes.
    if host.parse::<SocketAddr>().is_ok()
        || host
            .rsplit_once(':')
            .is_some_and(|(name, p)| !name.contains(':') && p.parse::<u16>().is_ok())
    {
        return Err(failed(
            "give the host alone and the port with -p PORT".to_string(),
        ));
    }
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

/// Resolves `HOST:PORT` (`127.0.0.1:1060`, `[::1]:1060`, `localhost:1060`).
pub fn resolve_host_port(text: &str) -> Result<SocketAddr, Error> {
    let failed = |reason: &str| Error::Resolve {
        host: text.to_string(),
        reason: reason.to_string(),
    };
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| failed("give HOST:PORT, like 127.0.0.1:1060 or [::1]:1060"))?;
    let port = port
        .parse()
        .map_err(|_| failed("the port must be a number from 0 to 65535"))?;
    resolve(host, port)
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
    fn host_and_port_come_together() {
        assert_eq!(
            resolve_host_port("127.0.0.1:9").unwrap().to_string(),
            "127.0.0.1:9"
        );
        assert_eq!(resolve_host_port("[::1]:9").unwrap().to_string(), "[::1]:9");
        assert!(resolve_host_port("127.0.0.1").is_err());
        assert!(resolve_host_port("127.0.0.1:x").is_err());
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
