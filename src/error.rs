//! The errors that udpkit reports, each one line that names the address, the cause and,
//! where there is one, what to do about it.
//!
//! Promise: `Display` never shows a bare `os error N`; it reads as a sentence for a user.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// What can go wrong in udpkit's library calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host name that does not resolve.
    #[error("cannot resolve host '{host}': {reason}")]
    Resolve {
        /// The name (or `HOST:PORT` text) as given.
        host: String,
        /// Why it failed, in lower case: the resolver's message or what to give instead.
        reason: String,
    },

    /// A socket that cannot be bound to the address asked for; `port` says how the user
    /// picks another (`-p PORT`, `--listen HOST:PORT`; empty where they do not pick it).
    #[error("cannot bind {addr}: {}", bind_cause(source, port))]
    Bind {
        /// The address the socket was to be bound to.
        addr: SocketAddr,
        /// The system's error from `bind`.
        source: io::Error,
        /// The flag that picks another port (`-p PORT`, `--listen HOST:PORT`), or empty.
        port: &'static str,
    },

    /// The server's host answered with ICMP port unreachable: nothing listens there.
    #[error(
        "no server at {server}: the port is closed (ICMP port unreachable); \
         start one with `udpkit server` or check the host and -p PORT"
    )]
    Refused {
        /// The address the requests went to.
        server: SocketAddr,
    },

    /// Every retransmission went unanswered.
    #[error(
        "no reply from {server} after {tries} tries over {:.1} s; {}",
        waited.as_secs_f64(),
        why_silent(*spoke)
    )]
    NoReply {
        /// The address the requests went to.
        server: SocketAddr,
        /// Requests sent, the first one included.
        tries: u32,
        /// Time from the first request until the client gave up.
        waited: Duration,
        /// The protocol the requests spoke, where the caller could choose another with
        /// `--protocol` (`None`: no choice to suggest).
        spoke: Option<&'static str>,
    },

    /// Any other failed system call, with what udpkit was doing at the time.
    #[error("{context}: {}", plain(source))]
    Io {
        /// What udpkit was doing, as the start of a sentence (`cannot receive from
        /// 127.0.0.1:1060`).
        context: String,
        /// The system's error.
        source: io::Error,
    },

    /// Settings that cannot work together, with what to change.
    #[error("{0}")]
    Invalid(String),

    /// The caller's [`Stop`](crate::Stop) was set before the work ended; `what` names the
    /// work (`the search for the path MTU to 192.0.2.1:1060`).
    #[error("stopped before {what} ended")]
    Stopped {
        /// The work that was stopped.
        what: String,
    },

    /// A callback given to the library (an observer, an event handler) returned an error;
    /// the run ended there. The error is the callback's own (a closed pipe, a full disk).
    #[error("stopped by the caller's callback: {}", plain(source))]
    Callback {
        /// The error the callback returned.
        source: io::Error,
    },
}

impl Error {
    /// Wraps a failed system call with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The error of a callback that ended the run, if that is what happened.
    pub fn callback_error(&self) -> Option<&io::Error> {
        match self {
            Error::Callback { source } => Some(source),
            _ => None,
        }
    }
}

/// The cause of a failed bind, with the usual remedy (`port`: the flag that picks it).
fn bind_cause(err: &io::Error, port: &str) -> String {
    let in_use = match port {
        "" => "; another program uses that port".to_string(),
        "-p PORT" => {
            "; another program uses that port: choose another with -p PORT, or -p 0 for a free one"
                .to_string()
        }
        flag => format!(
            "; another program uses that port: choose another with {flag} (port 0 for a free one)"
        ),
    };
    let hint = match err.kind() {
        io::ErrorKind::AddrInUse => in_use.as_str(),
        io::ErrorKind::AddrNotAvailable => {
            "; that address is not on this host: use 127.0.0.1, 0.0.0.0 (all interfaces) \
             or one of this host's addresses"
        }
        io::ErrorKind::PermissionDenied => {
            "; ports below 1024 need root or CAP_NET_BIND_SERVICE: use a higher port"
        }
        _ => "",
    };
    format!("{}{hint}", plain(err))
}

/// The system's message for `err` without the trailing `(os error N)`, in lower case as
/// the middle of a sentence wants it.
pub fn plain(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// What a silence may mean, naming the protocol spoken where another would be silent too.
fn why_silent(spoke: Option<&'static str>) -> String {
    match spoke {
        Some(p) => format!(
            "the server may be down or speak another protocol than {p} (see --protocol), \
             or the path may drop UDP"
        ),
        None => "the server may be down or the path may drop UDP".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_numbers_are_left_out() {
        let err = io::Error::from_raw_os_error(98);
        assert_eq!(plain(&err), "address already in use");
    }

    #[test]
    fn bind_errors_name_the_address_and_the_remedy() {
        let err = Error::Bind {
            addr: "127.0.0.1:1060".parse().unwrap(),
            source: io::Error::from_raw_os_error(98),
            port: "-p PORT",
        };
        let text = err.to_string();
        assert!(
            text.starts_with("cannot bind 127.0.0.1:1060: address already in use;"),
            "{text}"
        );
        assert!(text.contains("-p 0"), "{text}");
        assert!(!text.contains("os error"), "{text}");
    }
}
