//! A cancel token: one flag shared by whoever may stop a long-running loop (a signal
//! handler, a test, a library user) and the loops that look at it, with a self-pipe that
//! wakes a loop asleep in [`crate::io::wait::Poller`], and (Linux) a watcher that shuts
//! for reading the sockets a loop blocks on in a receive, which wakes that receive.
//!
//! Promise: setting it is visible to every clone at once, and every poller or blocked
//! receive waiting with it wakes at once; a second stop changes nothing. A socket is shut
//! only while it is registered (never after its registration is dropped), and the watcher
//! thread ends with the last clone of the stop.

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
    /// The sockets to shut for reading when the stop comes.
    #[cfg(target_os = "linux")]
    shut: std::sync::Mutex<Shut>,
}

#[cfg(target_os = "linux")]
#[derive(Debug, Default)]
struct Shut {
    /// (registration number, descriptor)
    fds: Vec<(u64, std::os::fd::RawFd)>,
    next: u64,
    watching: bool,
    fired: bool,
}

/// While it lives, a stop shuts its socket for reading (`shutdown(SHUT_RD)`), which wakes
/// a thread blocked receiving on it; datagrams still queue and can be read without
/// waiting. Drop it before the socket.
#[cfg(target_os = "linux")]
pub(crate) struct ShutOnStop {
    stop: Stop,
    id: u64,
}

#[cfg(target_os = "linux")]
impl Drop for ShutOnStop {
    fn drop(&mut self) {
        let mut shut = self.stop.0.shut.lock().unwrap_or_else(|p| p.into_inner());
        shut.fds.retain(|&(id, _)| id != self.id);
    }
}

#[cfg(target_os = "linux")]
fn shut_for_reading(fd: std::os::fd::RawFd) {
    // SAFETY: a descriptor still registered, hence still open. On an unconnected UDP socket
    // the call fails with ENOTCONN but shuts and wakes all the same.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RD);
    }
}

impl Stop {
    /// A token not yet stopped, for the loops given clones of it.
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

    /// Whether [`Stop::stop`] has been called on this token or any clone of it.
    pub fn is_stopped(&self) -> bool {
        self.0.flag.load(Ordering::Relaxed)
    }

    /// Sleeps for `d`, or until stopped, whichever comes first; true if stopped.
    pub fn wait(&self, d: std::time::Duration) -> bool {
        crate::io::wait::pause(self, d)
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
    /// Shuts `socket` for reading when the stop comes (at once if it has), for as long as
    /// the returned registration lives.
    #[cfg(target_os = "linux")]
    pub(crate) fn shut_on_stop(
        &self,
        socket: &impl std::os::fd::AsRawFd,
    ) -> std::io::Result<ShutOnStop> {
        let fd = socket.as_raw_fd();
        let mut shut = self.0.shut.lock().unwrap_or_else(|p| p.into_inner());
        let id = shut.next;
        shut.next += 1;
        shut.fds.push((id, fd));
        if shut.fired || self.is_stopped() {
            shut_for_reading(fd);
        } else if !shut.watching {
            let wake = self.pipe().0.try_clone()?;
            let inner = Arc::downgrade(&self.0);
            std::thread::Builder::new()
                .name("udpkit-stop".into())
                .spawn(move || watch(wake, inner))?;
            shut.watching = true;
        }
        Ok(ShutOnStop {
            stop: self.clone(),
            id,
        })
    }

    #[cfg(unix)]
    pub(crate) fn wake_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.pipe().0.as_raw_fd()
    }
}

/// The watcher: sleeps until the stop's pipe is readable (a stop) or hung up (the last
/// clone gone), then shuts every registered socket.
#[cfg(target_os = "linux")]
fn watch(wake: std::os::unix::net::UnixStream, inner: std::sync::Weak<Inner>) {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: wake.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the call.
    while unsafe { libc::poll(&mut fd, 1, -1) } < 0 {}
    if let Some(inner) = inner.upgrade() {
        let mut shut = inner.shut.lock().unwrap_or_else(|p| p.into_inner());
        shut.fired = true;
        for &(_, fd) in &shut.fds {
            shut_for_reading(fd);
        }
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
