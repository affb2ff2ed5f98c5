//! This host's clock: the time now on it, and what it can say of itself for the timestamps
//! STAMP carries: whether the kernel believes it synchronised to UTC, and its error bound.
//!
//! Promise: the estimate is the kernel's own (`adjtimex`, read only): synchronised only
//! when the kernel says so (no `STA_UNSYNC`, no `TIME_ERROR`), with its estimated error;
//! otherwise unsynchronised, with its maximum error (16 s on a clock nobody disciplines).
//! Elsewhere than Linux: unsynchronised, with an error of one second. Never better than the
//! nanosecond the clock reads in.

use std::time::{SystemTime, UNIX_EPOCH};

/// How good this host's wall clock says it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quality {
    /// The kernel believes the clock synchronised to UTC.
    pub synchronized: bool,
    /// Its error bound, in seconds (estimated when synchronised, the maximum otherwise).
    pub error_seconds: f64,
}

/// How good timestamps read now from this host's wall clock are.
pub fn quality() -> Quality {
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
            return Quality {
                synchronized,
                error_seconds: (micros.max(0) as f64 * 1e-6).max(1e-9),
            };
        }
    }
    Quality {
        synchronized: false,
        error_seconds: 1.0,
    }
}

/// Nanoseconds since the Unix epoch on this host's clock.
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_estimate_is_never_zero() {
        let q = super::quality();
        assert!(q.error_seconds > 0.0);
    }
}
