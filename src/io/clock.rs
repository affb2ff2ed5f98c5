//! What this host's clock can say of itself, for the timestamps STAMP carries: whether the
//! kernel believes it synchronised to UTC, and its error bound, as an RFC 4656 Error
//! Estimate.
//!
//! Promise: the estimate is the kernel's own (`adjtimex`, read only): synchronised only
//! when the kernel says so (no `STA_UNSYNC`, no `TIME_ERROR`), with its estimated error;
//! otherwise unsynchronised, with its maximum error (16 s on a clock nobody disciplines).
//! Elsewhere than Linux: unsynchronised, with an error of one second.

use crate::wire::stamp::ErrorEstimate;

/// The Error Estimate for timestamps read now from this host's wall clock.
pub fn error_estimate() -> ErrorEstimate {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a plain C struct, all-zero valid; modes 0 only reads.
        let mut t: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid timex for the call to fill.
        let state = unsafe { libc::adjtimex(&mut t) };
        if state >= 0 {
            let synchronized = state != libc::TIME_ERROR && t.status & libc::STA_UNSYNC == 0;
            // Microseconds; a clock no daemon disciplines says 16 s as its maximum.
            let micros = if synchronized { t.esterror } else { t.maxerror };
            // Never better than the nanosecond the clock reads in.
            let seconds = (micros.max(0) as f64 * 1e-6).max(1e-9);
            return ErrorEstimate::for_error(seconds, synchronized);
        }
    }
    ErrorEstimate::for_error(1.0, false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_estimate_is_never_zero_and_says_whether_synchronised() {
        let e = super::error_estimate();
        assert!(e.multiplier >= 1);
        assert!(e.seconds() > 0.0);
        assert!(!e.ptp);
    }
}
