//! Which protocol a server speaks and a client expects: the seed's (`Your data was N
//! bytes long`), echo (RFC 862: the datagram back unchanged), or STAMP (RFC 8762/8972).
//!
//! Promise: the names are the ones the command line takes and the JSON reports write.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The seed's sentence, with udpkit's request ID where the request carries one.
    #[default]
    Seed,
    /// RFC 862: every datagram back as it came.
    Echo,
    /// STAMP in unauthenticated mode: a Session-Reflector's reply.
    Stamp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Seed, Protocol::Echo, Protocol::Stamp];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Seed => "seed",
            Protocol::Echo => "echo",
            Protocol::Stamp => "stamp",
        }
    }

    /// The port a client aims at and a server binds when none is given: the seed's 1060,
    /// or STAMP's 862 (echo's own port, 7, is left to those who ask for it).
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Stamp => crate::wire::stamp::PORT,
            _ => crate::addr::DEFAULT_PORT,
        }
    }

    /// The request size when none is given: the seed's 38 bytes, or for STAMP the
    /// smallest packet that carries its Class of Service TLV and udpkit's nonce (72).
    pub fn default_size(self) -> usize {
        match self {
            Protocol::Stamp => crate::wire::stamp::Layout::FULL,
            _ => 38,
        }
    }

    /// The smallest request this protocol can send.
    pub fn min_size(self) -> usize {
        match self {
            Protocol::Stamp => crate::wire::stamp::BASE_LEN,
            _ => 0,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Protocol, String> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown protocol {s:?}: use seed, echo or stamp"))
    }
}
