//! Waiting, in one place. A loop over many sockets waits in a [`Poller`]: it sleeps until
//! one of its sockets is readable (or has an error to report, such as an ICMP error), until
//! its [`Stop`] is set, or until a deadline, and says which sockets are ready. A loop on one
//! socket (the server's workers, a one-flow load) waits in the receive itself through
//! [`Blocking`] (Linux): one system call where a poller and a receive take two, which is a
//! fair share of a ping-pong's round trip.
//!
//! Promise: a wait never outlasts its timeout (a [`Blocking`] wait by at most a
//! millisecond), ends at once when the stop is set (the stop's self-pipe is one of the
//! poller's descriptors; a blocked socket is shut for reading, which wakes its receive),
//! and costs the same whatever the number of idle sockets (epoll on Linux, with nanosecond
//! timeouts; `poll` elsewhere).

use std::io;
use std::time::Duration;

use crate::Stop;

/// Sleeps for `d`, or until `stop` is set, whichever comes first (to the nanosecond on
/// Linux, with the thread's timer slack); true if stopped. What a loop with no socket to
/// watch waits in: a pacer between slots, a pause while buffers are full, a start time.
pub fn pause(stop: &Stop, d: Duration) -> bool {
    if stop.is_stopped() {
        return true;
    }
    #[cfg(unix)]
    {
        let mut fd = libc::pollfd {
            fd: stop.wake_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        #[cfg(target_os = "linux")]
        {
            let spec = libc::timespec {
                tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            };
            // SAFETY: one valid pollfd and a timespec, both living for the call; no mask.
            unsafe { libc::ppoll(&mut fd, 1, &spec, std::ptr::null()) };
        }
        #[cfg(not(target_os = "linux"))]
        {
            let ms = d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd, for the call.
            unsafe { libc::poll(&mut fd, 1, ms) };
        }
    }
    #[cfg(not(unix))]
    std::thread::sleep(d.min(Duration::from_millis(1)));
    stop.is_stopped()
}

/// A socket's token, as given to [`Poller::add`] and reported by [`Poller::wait`].
pub type Token = u64;

/// The stop's own token (never reported).
const STOP: Token = u64::MAX;

/// Watches sockets and a stop; see the module's promise.
pub struct Poller {
    stop: Stop,
    /// False once [`Poller::ignore_stop`] was called.
    heed_stop: bool,
    #[cfg(target_os = "linux")]
    epoll: std::os::fd::OwnedFd,
    #[cfg(target_os = "linux")]
    events: Vec<libc::epoll_event>,
    #[cfg(all(unix, not(target_os = "linux")))]
    fds: Vec<(libc::pollfd, Token)>,
}

#[cfg(unix)]
type Fd = std::os::fd::RawFd;

impl Poller {
    /// A poller that also wakes when `stop` is set.
    pub fn new(stop: &Stop) -> io::Result<Self> {
        let poller = Self::create(stop.clone())?;
        #[cfg(unix)]
        poller.watch(stop.wake_fd(), STOP)?;
        Ok(poller)
    }

    /// Watches `socket` for reading; [`Poller::wait`] reports it as `token`.
    #[cfg(unix)]
    pub fn add(&mut self, socket: &impl std::os::fd::AsRawFd, token: Token) -> io::Result<()> {
        self.watch(socket.as_raw_fd(), token)
    }

    /// Stops watching `socket`.
    #[cfg(unix)]
    pub fn remove(&mut self, socket: &impl std::os::fd::AsRawFd) {
        self.unwatch(socket.as_raw_fd());
    }

    /// Sleeps until a watched socket is readable, the stop is set, or `timeout` passes
    /// (`None`: no timeout); `ready` gets the tokens of the readable sockets.
    pub fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<Token>) -> io::Result<()> {
        ready.clear();
        if self.heed_stop && self.stop.is_stopped() {
            return Ok(());
        }
        match self.wait_sys(timeout, ready) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            other => other,
        }
    }

    /// From now on waits end on readiness or timeout only: for a loop that, once stopped,
    /// still gives replies on their way a moment to arrive.
    pub fn ignore_stop(&mut self) {
        #[cfg(unix)]
        self.unwatch(self.stop.wake_fd());
        self.heed_stop = false;
    }

    /// Waits for the one socket this poller watches (or the stop, or `timeout`); true if
    /// it is readable.
    pub fn wait_one(&mut self, timeout: Duration) -> io::Result<bool> {
        let mut ready = Vec::new();
        self.wait(Some(timeout), &mut ready)?;
        Ok(!ready.is_empty())
    }
}

/// One socket's datagrams one at a time, each within a timeout, for the seed's client (which
/// also runs where [`Blocking`] does not). The socket is made non-blocking; an error the
/// kernel holds for it (an ICMP error) wakes the wait and comes back from the receive.
pub struct Receiver<'a> {
    socket: &'a std::net::UdpSocket,
    poller: Poller,
}

impl<'a> Receiver<'a> {
    pub fn new(socket: &'a std::net::UdpSocket, stop: &Stop) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        #[allow(unused_mut)]
        let mut poller = Poller::new(stop)?;
        #[cfg(unix)]
        poller.add(socket, 0)?;
        Ok(Receiver { socket, poller })
    }

    /// The next datagram's length, or `None` when `timeout` passes or the stop is set.
    pub fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        Ok(self.recv_from(buf, timeout)?.map(|(n, _)| n))
    }

    /// The next datagram's length and sender, or `None` when `timeout` passes or the stop
    /// is set.
    pub fn recv_from(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<Option<(usize, std::net::SocketAddr)>> {
        if !self.poller.wait_one(timeout)? && cfg!(unix) {
            return Ok(None);
        }
        match self.socket.recv_from(buf) {
            Ok(got) => Ok(Some(got)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Waits for one socket's datagrams inside the receive (Linux): the socket is made
/// blocking, its receive timeout is set to the wait (only when that changes by more than a
/// millisecond, so that a steady ping-pong makes no extra call), and the stop shuts it for
/// reading, which ends a receive blocked on it at once. Once stopped, datagrams still
/// queued or arriving are taken without waiting, a millisecond's sleep at a time.
/// Elsewhere it waits on a [`Poller`] and then receives.
pub struct Blocking {
    #[cfg(target_os = "linux")]
    linux: BlockingLinux,
    #[cfg(not(target_os = "linux"))]
    poller: Poller,
}

#[cfg(target_os = "linux")]
struct BlockingLinux {
    /// Dropped before the socket is (the owner keeps it beside the socket).
    _shut: crate::io::stop::ShutOnStop,
    stop: Stop,
    timeout: Option<Duration>,
}

impl Blocking {
    pub fn new(socket: &std::net::UdpSocket, stop: &Stop) -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        {
            socket.set_nonblocking(false)?;
            socket.set_read_timeout(None)?;
            Ok(Blocking {
                linux: BlockingLinux {
                    _shut: stop.shut_on_stop(socket)?,
                    stop: stop.clone(),
                    timeout: None,
                },
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            socket.set_nonblocking(true)?;
            #[allow(unused_mut)]
            let mut poller = Poller::new(stop)?;
            #[cfg(unix)]
            poller.add(socket, 0)?;
            Ok(Blocking { poller })
        }
    }

    /// Datagrams into `batch`: those queued, or the first to come within `timeout` (`None`:
    /// no limit) and those behind it; 0 when the wait ended with none.
    pub fn recv(
        &mut self,
        socket: &std::net::UdpSocket,
        batch: &mut super::datagram::RecvBatch,
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        #[cfg(not(target_os = "linux"))]
        {
            self.poller.wait(timeout, &mut Vec::new())?;
            return match batch.recv(socket) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                other => other,
            };
        }
        #[cfg(target_os = "linux")]
        self.linux.recv(socket, batch, timeout)
    }
}

#[cfg(target_os = "linux")]
impl BlockingLinux {
    fn recv(
        &mut self,
        socket: &std::net::UdpSocket,
        batch: &mut super::datagram::RecvBatch,
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        if self.stop.is_stopped() {
            // Shut for reading: nothing waits any more.
            let n = match batch.recv(socket) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                other => other?,
            };
            if n == 0 {
                std::thread::sleep(timeout.map_or(Duration::from_millis(1), |t| {
                    t.min(Duration::from_millis(1))
                }));
            }
            return Ok(n);
        }
        // A zero timeout means none to the kernel: the shortest wait is 100 µs. Longer ones
        // are rounded down to whole 10 ms, so that a deadline drawing nearer keeps the
        // same timeout for a while (waking early only means waiting again).
        let step = Duration::from_millis(10);
        let timeout = timeout.map(|t| {
            if t >= step {
                step * (t.as_nanos() / step.as_nanos()) as u32
            } else {
                t.max(Duration::from_micros(100))
            }
        });
        let close = match (self.timeout, timeout) {
            (Some(a), Some(b)) => a.abs_diff(b) <= Duration::from_millis(1),
            (None, None) => true,
            _ => false,
        };
        if !close {
            socket.set_read_timeout(timeout)?;
            self.timeout = timeout;
        }
        match batch.recv_wait(socket) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(0)
            }
            other => other,
        }
    }
}

#[cfg(target_os = "linux")]
impl Poller {
    fn create(stop: Stop) -> io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: epoll_create1 returns a new descriptor that we own, or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            stop,
            heed_stop: true,
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            epoll: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
        })
    }

    fn control(&self, op: libc::c_int, fd: Fd, token: Token) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid descriptors and an event struct that lives for the call.
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn watch(&self, fd: Fd, token: Token) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_ADD, fd, token)
    }

    fn unwatch(&mut self, fd: Fd) {
        let _ = self.control(libc::EPOLL_CTL_DEL, fd, 0);
    }

    fn wait_sys(&mut self, timeout: Option<Duration>, ready: &mut Vec<Token>) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let spec = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        // SAFETY: `events` is a valid buffer of the length given; the timespec, if any,
        // lives for the call; no signal mask.
        let mut n = unsafe {
            libc::epoll_pwait2(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                spec.as_ref().map_or(std::ptr::null(), |s| s as *const _),
                std::ptr::null(),
            )
        };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            // Kernels before 5.11: millisecond timeouts, rounded up.
            let ms = timeout.map_or(-1, |t| {
                t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            });
            // SAFETY: as above.
            n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    self.events.len() as libc::c_int,
                    ms,
                )
            };
        }
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        ready.extend(
            self.events[..n as usize]
                .iter()
                .map(|e| e.u64)
                .filter(|&t| t != STOP),
        );
        Ok(())
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
impl Poller {
    fn create(stop: Stop) -> io::Result<Self> {
        Ok(Poller {
            stop,
            heed_stop: true,
            fds: Vec::new(),
        })
    }

    fn watch(&mut self, fd: Fd, token: Token) -> io::Result<()> {
        self.fds.push((
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            token,
        ));
        Ok(())
    }

    fn unwatch(&mut self, fd: Fd) {
        self.fds.retain(|(p, _)| p.fd != fd);
    }

    fn wait_sys(&mut self, timeout: Option<Duration>, ready: &mut Vec<Token>) -> io::Result<()> {
        let mut fds: Vec<libc::pollfd> = self.fds.iter().map(|(p, _)| *p).collect();
        let ms = timeout.map_or(-1, |t| {
            t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        // SAFETY: `fds` is a valid array of pollfd of the length given.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for (p, (_, token)) in fds.iter().zip(&self.fds) {
            if p.revents != 0 && *token != STOP {
                ready.push(*token);
            }
        }
        Ok(())
    }
}

#[cfg(not(unix))]
impl Poller {
    fn create(stop: Stop) -> io::Result<Self> {
        Ok(Poller {
            stop,
            heed_stop: true,
        })
    }

    fn wait_sys(&mut self, timeout: Option<Duration>, _: &mut Vec<Token>) -> io::Result<()> {
        std::thread::sleep(
            timeout
                .unwrap_or(Duration::from_millis(1))
                .min(Duration::from_millis(1)),
        );
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Instant;

    #[test]
    fn it_reports_the_ready_socket_and_only_it() {
        let stop = Stop::new();
        let mut poller = Poller::new(&stop).unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        poller.add(&a, 1).unwrap();
        poller.add(&b, 2).unwrap();
        b.send_to(b"x", b.local_addr().unwrap()).unwrap();
        let mut ready = Vec::new();
        poller
            .wait(Some(Duration::from_secs(5)), &mut ready)
            .unwrap();
        assert_eq!(ready, [2]);
    }

    /// Stops `stop` from another thread 50 ms from now.
    fn stop_soon(stop: &Stop) -> std::thread::JoinHandle<()> {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            stop.stop();
        })
    }

    #[test]
    fn a_stop_from_another_thread_ends_a_wait_without_timeout() {
        let stop = Stop::new();
        let mut poller = Poller::new(&stop).unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        poller.add(&socket, 1).unwrap();
        let stopper = stop_soon(&stop);
        let started = Instant::now();
        let mut ready = Vec::new();
        poller.wait(None, &mut ready).unwrap();
        assert!(ready.is_empty());
        assert!(started.elapsed() < Duration::from_secs(5));
        stopper.join().unwrap();
    }

    #[test]
    fn a_pause_lasts_its_time_unless_stopped() {
        let stop = Stop::new();
        let started = Instant::now();
        assert!(!pause(&stop, Duration::from_millis(20)));
        assert!(started.elapsed() >= Duration::from_millis(20));
        let stopper = stop_soon(&stop);
        let started = Instant::now();
        assert!(stop.wait(Duration::from_secs(30)));
        assert!(started.elapsed() < Duration::from_secs(5));
        stopper.join().unwrap();
        assert!(
            pause(&stop, Duration::from_secs(30)),
            "at once when stopped"
        );
    }

    #[test]
    fn a_short_timeout_still_waits_at_least_that_long() {
        let stop = Stop::new();
        let mut poller = Poller::new(&stop).unwrap();
        let started = Instant::now();
        assert!(!poller.wait_one(Duration::from_micros(50)).unwrap());
        assert!(started.elapsed() >= Duration::from_micros(50));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_stop_wakes_a_receive_blocked_without_timeout_and_spares_dropped_registrations() {
        use crate::io::datagram::RecvBatch;
        let stop = Stop::new();
        let spared = UdpSocket::bind("127.0.0.1:0").unwrap();
        drop(Blocking::new(&spared, &stop).unwrap()); // registered, then not
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut blocking = Blocking::new(&socket, &stop).unwrap();
        let stopper = stop_soon(&stop);
        let started = Instant::now();
        let mut batch = RecvBatch::new(64);
        assert_eq!(blocking.recv(&socket, &mut batch, None).unwrap(), 0);
        assert!(started.elapsed() < Duration::from_secs(5));
        stopper.join().unwrap();
        // Stopped: a datagram that arrives is still taken, without waiting.
        socket
            .send_to(b"late", socket.local_addr().unwrap())
            .unwrap();
        let n = blocking
            .recv(&socket, &mut batch, Some(Duration::from_secs(1)))
            .unwrap();
        assert_eq!((n, batch.get(0).1), (1, &b"late"[..]));
        // The dropped registration was not shut: its receive still waits out its timeout.
        spared
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let started = Instant::now();
        assert!(spared.recv(&mut [0u8; 8]).is_err());
        assert!(started.elapsed() >= Duration::from_millis(90));
    }
}
