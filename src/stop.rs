//! A cancel token: one flag shared by whoever may stop a long-running loop (a signal
//! handler, a test, a library user) and the loops that look at it, with a self-pipe that
//! wakes a loop asleep in [`crate::io::wait::Poller`].
//!
//! Promise: setting it is visible to every clone at once, and every poller waiting with it
//! wakes at once; a second stop changes nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Tells running loops to stop; clones share one flag and one wake-up pipe.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    flag: Arc<AtomicBool>,
    /// (read end, write end), made when first asked for; the read end is never drained,
    /// so every poller watching it stays woken.
    #[cfg(unix)]
    pipe: OnceLock<(
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    )>,
}

impl Stop {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every loop holding a clone to stop, and wakes those that wait.
    pub fn stop(&self) {
        self.0.flag.store(true, Ordering::Relaxed);
        #[cfg(unix)]
        if let Some((_, write)) = self.0.pipe.get() {
            use std::io::Write;
            let _ = (&*write).write(&[1]);
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.0.flag.load(Ordering::Relaxed)
    }

    /// The flag itself, for a signal handler to set (with [`Stop::signal_pipe`], so that
    /// waiting loops wake too).
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0.flag)
    }

    #[cfg(unix)]
    fn pipe(
        &self,
    ) -> &(
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ) {
        self.0.pipe.get_or_init(|| {
            let (read, write) =
                std::os::unix::net::UnixStream::pair().expect("a socket pair for stop");
            let _ = read.set_nonblocking(true);
            let _ = write.set_nonblocking(true);
            if self.is_stopped() {
                use std::io::Write;
                let _ = (&write).write(&[1]);
            }
            (read, write)
        })
    }

    /// A handle on the write end of the wake-up pipe: a byte written to it (by a signal
    /// handler, say `signal_hook::low_level::pipe::register`) wakes every waiting loop.
    #[cfg(unix)]
    pub fn signal_pipe(&self) -> std::io::Result<std::os::unix::net::UnixStream> {
        self.pipe().1.try_clone()
    }

    /// The read end, which becomes readable once stopped.
    #[cfg(unix)]
    pub(crate) fn wake_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.pipe().0.as_raw_fd()
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_stop_makes_the_wake_end_readable_whenever_it_was_made() {
        for make_pipe_first in [true, false] {
            let stop = Stop::new();
            if make_pipe_first {
                stop.wake_fd();
            }
            stop.stop();
            let mut fd = libc::pollfd {
                fd: stop.wake_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut fd, 1, 0) };
            assert_eq!(n, 1);
            assert!(stop.clone().is_stopped());
        }
    }
}
