//! Echo (RFC 862) as udpkit speaks it: the requests are the seed protocol's (udpkit's
//! request ID, a space, `x`s), and a genuine reply is the request itself, byte for byte.
//!
//! Promise: [`parse_echo`] accepts exactly the requests `seed::emit_request` writes (and
//! the all-`x` requests too small for an ID), and never panics.

use crate::wire::protocol::{Claim, Dialect, Prepared, Request, Shape};
use crate::wire::seed::{ID_LEN, RequestId, request_id};
use crate::wire::seed::{MAX_REPLY, Seed};
use crate::wire::stamp::NtpTime;

/// What an echoed datagram carries: `Some(Some(id))` for a request with an ID,
/// `Some(None)` for one too small for an ID (all `x`), `None` for anything udpkit did not
/// send.
pub fn parse_echo(data: &[u8]) -> Option<Option<RequestId>> {
    if data.len() < ID_LEN {
        return data.iter().all(|&b| b == b'x').then_some(None);
    }
    let id = request_id(data)?;
    match &data[ID_LEN..] {
        [] => Some(Some(id)),
        [b' ', rest @ ..] if rest.iter().all(|&b| b == b'x') => Some(Some(id)),
        _ => None,
    }
}

/// Echo: udpkit's requests as the seed's protocol writes them, each answered by itself.
#[derive(Debug)]
pub struct Echo;

impl Dialect for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn banner(&self, _stateful: bool) -> Option<&'static str> {
        Some("echo, RFC 862")
    }

    fn shape(&self, size: usize) -> Shape {
        // A request with an ID comes back with it: proof from the first reply. One too
        // small for an ID is matched by its length, as the seed's are.
        Shape {
            size,
            distinct_lengths: size < ID_LEN,
            ids_from_start: true,
        }
    }

    fn proves(&self, len: usize) -> bool {
        len >= ID_LEN
    }

    fn write_request(&self, buf: &mut Vec<u8>, r: &Request) -> NtpTime {
        Seed.write_request(buf, r)
    }

    fn read_reply(&self, data: &[u8]) -> Claim {
        match parse_echo(data) {
            None => Claim::Bad,
            Some(Some(id)) => Claim::Id {
                id,
                len: data.len(),
            },
            Some(None) => Claim::Length(data.len()),
        }
    }

    fn prepare(&self, request: &[u8], _reply: &mut [u8; MAX_REPLY]) -> Prepared {
        Prepared::InPlace(request.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::seed::emit_request;
    use proptest::prelude::*;

    #[test]
    fn an_echo_is_the_request_itself() {
        let id = RequestId { nonce: 5, seq: 9 };
        let mut request = Vec::new();
        assert!(emit_request(&mut request, id, 100));
        assert_eq!(parse_echo(&request), Some(Some(id)));
        assert_eq!(parse_echo(b"xxxx"), Some(None));
        assert_eq!(parse_echo(b""), Some(None));
        request[60] = b'y';
        assert_eq!(parse_echo(&request), None);
        assert_eq!(parse_echo(b"Your data was 38 bytes long"), None);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_echo(&data);
        }

        #[test]
        fn accepts_every_request(nonce in any::<u64>(), seq in any::<u64>(), size in ID_LEN..600usize) {
            let id = RequestId { nonce, seq };
            let mut request = Vec::new();
            prop_assert!(emit_request(&mut request, id, size));
            prop_assert_eq!(parse_echo(&request), Some(Some(id)));
        }
    }
}
