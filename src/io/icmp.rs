//! ICMP errors as the kernel reports them on a connected socket: what kind each is, and
//! counts by kind.
//!
//! Promise: every error that ICMP can cause maps to one kind; none is a reason to stop (any
//! of them can be forged), so callers count them and go on.

/// An ICMP error that the kernel passed on to a connected socket, as the error of a later
/// send or receive. Anyone can forge one, so each is an event to count, never a reason to
/// stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IcmpError {
    /// Nothing listens on the port (type 3 code 3).
    PortUnreachable,
    /// Host unreachable, down, or communication administratively prohibited (codes 1, 10,
    /// 13, ...).
    HostUnreachable,
    /// No route to the network, or the network is down (code 0, `ENETUNREACH`).
    NetworkUnreachable,
    /// Protocol unreachable (code 2).
    ProtocolUnreachable,
    /// Fragmentation needed (code 4): the datagram is larger than the path takes.
    TooBig,
    /// Any other error the kernel reports for ICMP (parameter problem, source route failed).
    Other,
}

impl IcmpError {
    /// The ICMP error behind a failed send or receive on a connected socket, if it is one.
    pub fn of(e: &std::io::Error) -> Option<IcmpError> {
        #[cfg(unix)]
        {
            match e.raw_os_error()? {
                libc::ECONNREFUSED => Some(IcmpError::PortUnreachable),
                libc::EHOSTUNREACH | libc::EHOSTDOWN => Some(IcmpError::HostUnreachable),
                libc::ENETUNREACH => Some(IcmpError::NetworkUnreachable),
                #[cfg(target_os = "linux")]
                libc::ENONET => Some(IcmpError::NetworkUnreachable),
                libc::ENOPROTOOPT => Some(IcmpError::ProtocolUnreachable),
                libc::EMSGSIZE => Some(IcmpError::TooBig),
                libc::EPROTO | libc::EOPNOTSUPP => Some(IcmpError::Other),
                _ => None,
            }
        }
        #[cfg(not(unix))]
        {
            match e.kind() {
                std::io::ErrorKind::ConnectionRefused => Some(IcmpError::PortUnreachable),
                std::io::ErrorKind::HostUnreachable => Some(IcmpError::HostUnreachable),
                std::io::ErrorKind::NetworkUnreachable => Some(IcmpError::NetworkUnreachable),
                _ => None,
            }
        }
    }

    /// `port unreachable`, `host unreachable`, ... as a line says it.
    pub fn as_str(self) -> &'static str {
        match self {
            IcmpError::PortUnreachable => "port unreachable",
            IcmpError::HostUnreachable => "host unreachable",
            IcmpError::NetworkUnreachable => "network unreachable",
            IcmpError::ProtocolUnreachable => "protocol unreachable",
            IcmpError::TooBig => "fragmentation needed",
            IcmpError::Other => "ICMP error",
        }
    }
}

/// ICMP errors by kind (see [`IcmpError`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IcmpCounts {
    /// Port unreachable errors: nothing listened where the datagram went.
    pub port_unreachable: u64,
    /// Host unreachable (or down, or administratively prohibited) errors.
    pub host_unreachable: u64,
    /// Network unreachable errors.
    pub network_unreachable: u64,
    /// Protocol unreachable errors.
    pub protocol_unreachable: u64,
    /// Fragmentation-needed errors: a datagram larger than the path takes.
    pub too_big: u64,
    /// Any other ICMP error the kernel passed on.
    pub other: u64,
}

impl IcmpCounts {
    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &IcmpCounts) {
        self.port_unreachable += other.port_unreachable;
        self.host_unreachable += other.host_unreachable;
        self.network_unreachable += other.network_unreachable;
        self.protocol_unreachable += other.protocol_unreachable;
        self.too_big += other.too_big;
        self.other += other.other;
    }

    /// Counts one error of `kind`.
    pub fn note(&mut self, kind: IcmpError) {
        *match kind {
            IcmpError::PortUnreachable => &mut self.port_unreachable,
            IcmpError::HostUnreachable => &mut self.host_unreachable,
            IcmpError::NetworkUnreachable => &mut self.network_unreachable,
            IcmpError::ProtocolUnreachable => &mut self.protocol_unreachable,
            IcmpError::TooBig => &mut self.too_big,
            IcmpError::Other => &mut self.other,
        } += 1;
    }
}
