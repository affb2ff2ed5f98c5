//! The bytes on the wire: the seed's reply, `Your data was N bytes long`, in ASCII.
//!
//! Promise: `emit_reply` writes exactly the bytes that the seed's Python server sends, and
//! `parse_reply` accepts exactly those bytes back; neither panics on any input.

/// The largest UDP payload over IPv4 (65535 - 20 bytes of IP header - 8 of UDP header).
pub const MAX_IPV4_PAYLOAD: usize = 65_507;

/// A receive buffer this large never truncates a UDP datagram, over IPv4 or IPv6.
pub const RECV_BUFFER: usize = 65_536;

/// The longest reply: `Your data was 18446744073709551615 bytes long` fits with room.
pub const MAX_REPLY: usize = 64;

const PREFIX: &[u8] = b"Your data was ";
const SUFFIX: &[u8] = b" bytes long";

/// Writes the seed's reply for a datagram of `len` bytes into `buf` and returns its length.
///
/// ```
/// let mut buf = [0u8; udpkit::protocol::MAX_REPLY];
/// let n = udpkit::protocol::emit_reply(&mut buf, 38);
/// assert_eq!(&buf[..n], b"Your data was 38 bytes long");
/// ```
pub fn emit_reply(buf: &mut [u8; MAX_REPLY], len: usize) -> usize {
    // By hand rather than through `write!`: this runs once per datagram on the hot path.
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = len;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let digits = &digits[at..];
    let mut end = 0;
    for part in [PREFIX, digits, SUFFIX] {
        buf[end..end + part.len()].copy_from_slice(part);
        end += part.len();
    }
    end
}

/// The seed's reply for a datagram of `len` bytes, as a string.
pub fn reply_text(len: usize) -> String {
    format!("Your data was {len} bytes long")
}

/// Reads the length out of a seed reply, or `None` if `data` is not exactly such a reply
/// (canonical decimal: no sign, no leading zeros, no spaces).
///
/// ```
/// assert_eq!(udpkit::protocol::parse_reply(b"Your data was 38 bytes long"), Some(38));
/// assert_eq!(udpkit::protocol::parse_reply(b"Your data was 038 bytes long"), None);
/// ```
pub fn parse_reply(data: &[u8]) -> Option<usize> {
    let digits = data.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let canonical = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits.len() == 1 || digits[0] != b'0');
    if !canonical {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_bytes_match_the_seed() {
        let mut buf = [0u8; MAX_REPLY];
        for (len, text) in [
            (0, "Your data was 0 bytes long"),
            (1, "Your data was 1 bytes long"),
            (65_507, "Your data was 65507 bytes long"),
            (
                usize::MAX,
                &format!("Your data was {} bytes long", usize::MAX),
            ),
        ] {
            let n = emit_reply(&mut buf, len);
            assert_eq!(&buf[..n], text.as_bytes());
            assert_eq!(reply_text(len), text);
            assert_eq!(parse_reply(text.as_bytes()), Some(len));
        }
    }

    #[test]
    fn parse_rejects_anything_but_a_canonical_reply() {
        for bad in [
            &b""[..],
            b"Your data was  bytes long",
            b"Your data was -1 bytes long",
            b"Your data was +1 bytes long",
            b"Your data was 01 bytes long",
            b"Your data was 1 bytes long\n",
            b"your data was 1 bytes long",
            b"Your data was 99999999999999999999999 bytes long",
            b"Your data was 1x bytes long",
        ] {
            assert_eq!(parse_reply(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
