//! Shows untrusted bytes the way Python's `repr` shows a string, so that a datagram can
//! never write raw control sequences to a terminal.
//!
//! Promise: the output is one line of printable text for any input. Valid UTF-8 keeps its
//! printable characters; everything else is escaped (`\n`, `\x1b`, `\u202e`), and a byte
//! that is not part of valid UTF-8 appears as `\xNN`. For ASCII input the result is exactly
//! what Python 3 prints for `repr(data.decode('ascii'))`, quotes included.

use std::fmt::Write as _;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Returns `data` quoted and escaped as Python's `repr` would show the decoded string.
///
/// ```
/// assert_eq!(udpkit::wire::repr(b"hi\n"), r"'hi\n'");
/// assert_eq!(udpkit::wire::repr(b"it's"), r#""it's""#);
/// assert_eq!(udpkit::wire::repr(b"\xff\x1b[2J"), r"'\xff\x1b[2J'");
/// ```
pub fn repr(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() + 2);
    repr_into(&mut out, data);
    out
}

/// Appends `repr(data)` to `out` (no allocation beyond growing `out`).
pub fn repr_into(out: &mut String, data: &[u8]) {
    // Python picks double quotes only when the text holds a single quote and no double one.
    let quote = if data.contains(&b'\'') && !data.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for chunk in data.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(out, c, quote);
        }
        for &byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out.push(quote);
}

fn push_char(out: &mut String, c: char, quote: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        c if is_printable(c) => out.push(c),
        c if (c as u32) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// Python's `str.isprintable` for one character: everything but controls, format
/// characters (bidi overrides among them), surrogates, private use, unassigned code points
/// and separators other than the ASCII space.
fn is_printable(c: char) -> bool {
    if c.is_ascii() {
        return c == ' ' || c.is_ascii_graphic();
    }
    !matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::Surrogate
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::SpaceSeparator
    )
}

#[cfg(test)]
mod tests {
    use super::repr;

    #[test]
    fn ascii_text_is_single_quoted_as_python_does() {
        assert_eq!(
            repr(b"The time is 2026-11-25 08:28:25.226815"),
            "'The time is 2026-11-25 08:28:25.226815'"
        );
        assert_eq!(repr(b""), "''");
    }

    #[test]
    fn quote_choice_follows_python() {
        assert_eq!(repr(b"it's"), "\"it's\"");
        assert_eq!(repr(b"say \"hi\""), "'say \"hi\"'");
        assert_eq!(repr(b"both ' and \""), "'both \\' and \"'");
    }

    #[test]
    fn control_characters_are_escaped_like_python() {
        assert_eq!(repr(b"a\tb\nc\rd\\e"), "'a\\tb\\nc\\rd\\\\e'");
        assert_eq!(repr(b"\x00\x07\x1b[31m\x7f"), "'\\x00\\x07\\x1b[31m\\x7f'");
    }

    #[test]
    fn invalid_utf8_bytes_are_escaped() {
        assert_eq!(repr(b"\xff\xfe"), "'\\xff\\xfe'");
        assert_eq!(repr(b"ok\xc3"), "'ok\\xc3'");
    }

    #[test]
    fn printable_unicode_is_kept_and_invisible_unicode_is_escaped() {
        assert_eq!(repr("héllo 世界".as_bytes()), "'héllo 世界'");
        // C1 control (CSI on some terminals), bidi override, no-break space, plane-15 private use.
        assert_eq!(repr("\u{9b}".as_bytes()), "'\\x9b'");
        assert_eq!(repr("a\u{202e}b".as_bytes()), "'a\\u202eb'");
        assert_eq!(repr("\u{a0}".as_bytes()), "'\\xa0'");
        assert_eq!(repr("\u{f0000}".as_bytes()), "'\\U000f0000'");
    }

    #[test]
    fn output_never_holds_a_control_character() {
        let all: Vec<u8> = (0..=255u8).collect();
        let shown = repr(&all);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
    }
}
