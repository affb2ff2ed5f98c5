//! The client's default message, `The time is <now>`, with the local time written as
//! Python's `str(datetime.now())` writes it.
//!
//! Promise: `2026-11-25 08:28:25.226815` (microseconds, local time zone), and no fraction
//! at all when the microsecond is exactly zero, as Python does.

use jiff::ZonedDateTime as Zoned;

/// `str(datetime.now())`: the local wall-clock time in Python's format.
pub fn python_now() -> String {
    python_format(&Zoned::now())
}

/// The seed client's message for this moment: `The time is 2026-11-25 08:28:25.226815`.
pub fn time_message() -> String {
    format!("The time is {}", python_now())
}

/// Formats `time` as Python's `str(datetime)` formats a naive datetime.
pub fn python_format(time: &Zoned) -> String {
    let micros = time.subsec_nanosecond() / 1_000;
    let whole = time.strftime("%Y-%m-%d %H:%M:%S");
    if micros == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{micros:06}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Zoned {
        text.parse().expect("valid test time")
    }

    #[test]
    fn microseconds_are_six_digits() {
        let t = at("2026-11-25T08:28:25.226815[UTC]");
        assert_eq!(python_format(&t), "2026-11-25 08:28:25.226815");
        let t = at("2026-11-25T08:28:25.000007[UTC]");
        assert_eq!(python_format(&t), "2026-11-25 08:28:25.000007");
    }

    #[test]
    fn a_zero_microsecond_leaves_the_fraction_out() {
        let t = at("2026-11-25T08:28:25[UTC]");
        assert_eq!(python_format(&t), "2026-11-25 08:28:25");
        // Nanoseconds below one microsecond are dropped, as datetime has no room for them.
        let t = at("2026-11-25T08:28:25.000000999[UTC]");
        assert_eq!(python_format(&t), "2026-11-25 08:28:25");
    }

    #[test]
    fn the_message_is_the_seeds_38_bytes_most_of_the_time() {
        let message = time_message();
        assert!(message.starts_with("The time is "));
        assert!(message.len() == 38 || message.len() == 31, "{message}");
    }
}
