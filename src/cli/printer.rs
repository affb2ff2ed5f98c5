//! Lines out to a terminal or pipe without ever making the caller wait: the server's
//! threads hand their lines to a [`Printer`], whose own thread writes them; a terminal or
//! pipe that cannot keep up (or is never read) fills a bounded queue, and lines past it are
//! dropped and counted, so that serving never waits on whoever reads the output.
//!
//! Promise: [`Outlet::out`] and [`Outlet::err`] never block and never hold more than
//! [`limits::CONSOLE_QUEUE_BYTES`] of lines (lines that must not be dropped for room, a
//! summary or a stats line, take at most [`RESERVE`] more); what they drop is counted in
//! whole lines ([`Outlet::dropped`]). Lines are written whole and in the order handed over. A writer
//! that fails (a closed pipe) is reported to the next caller, once. [`Printer::finish`]
//! waits a bounded time for what is queued, then lets go.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use udpkit::limits;

/// Room beyond the queue's bound for lines that must not be dropped for room: a stats line a
/// period on a reader stuck for days still cannot grow the queue past it.
pub const RESERVE: usize = 64 << 10;

/// How long the writer, woken by a first line, lets more gather before it writes them all
/// in one call: a thread printing a line a batch costs a lock, not a wake-up, a batch.
const GATHER: Duration = Duration::from_millis(1);

#[derive(Default)]
struct Queue {
    /// Lines waiting, for standard output and standard error.
    out: Vec<u8>,
    err: Vec<u8>,
    /// The writer sleeps, waiting for lines (a caller with the first lines wakes it).
    idle: bool,
    /// No more lines will come.
    closed: bool,
    /// The writer is busy with lines it has taken, this many bytes of them (counted
    /// against the bound until written).
    writing: bool,
    in_flight: usize,
    /// The writer's failure, once, for the next caller.
    failed: Option<io::Error>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when lines arrive for an idle writer, when the writer goes idle, and on
    /// close.
    changed: Condvar,
    dropped: AtomicU64,
}

/// A handle the server's threads give their lines to (cheap to clone).
#[derive(Clone)]
pub struct Outlet(Arc<Shared>);

/// The writing thread; see the module's promise.
pub struct Printer {
    outlet: Outlet,
    thread: Option<JoinHandle<()>>,
}

impl Printer {
    /// Starts the writer of `out` and `err`.
    pub fn start(
        mut out: impl Write + Send + 'static,
        mut err: impl Write + Send + 'static,
    ) -> Printer {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let writer = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("udpkit-printer".into())
            .spawn(move || {
                // Two buffers swapped with the queue's: nothing allocated a write.
                let (mut to_out, mut to_err) = (Vec::new(), Vec::new());
                let mut queue = writer.queue.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if queue.out.is_empty() && queue.err.is_empty() {
                        if queue.closed {
                            return;
                        }
                        queue.idle = true;
                        writer.changed.notify_all();
                        queue = writer
                            .changed
                            .wait(queue)
                            .unwrap_or_else(|p| p.into_inner());
                        if queue.idle && !queue.closed {
                            // Woken by a first line: let the lines of this moment gather.
                            drop(queue);
                            std::thread::sleep(GATHER);
                            queue = writer.queue.lock().unwrap_or_else(|p| p.into_inner());
                        }
                        queue.idle = false;
                        continue;
                    }
                    std::mem::swap(&mut queue.out, &mut to_out);
                    std::mem::swap(&mut queue.err, &mut to_err);
                    queue.writing = true;
                    queue.in_flight = to_out.len() + to_err.len();
                    drop(queue);
                    let written = (|| {
                        if !to_err.is_empty() {
                            err.write_all(&to_err)?;
                            err.flush()?;
                        }
                        if !to_out.is_empty() {
                            out.write_all(&to_out)?;
                            out.flush()?;
                        }
                        Ok::<(), io::Error>(())
                    })();
                    to_out.clear();
                    to_err.clear();
                    queue = writer.queue.lock().unwrap_or_else(|p| p.into_inner());
                    queue.writing = false;
                    queue.in_flight = 0;
                    if let Err(e) = written {
                        // Nothing more can be written; the callers hear of it.
                        queue.failed.get_or_insert(e);
                        queue.out = Vec::new();
                        queue.err = Vec::new();
                        queue.closed = true;
                    }
                    writer.changed.notify_all();
                }
            })
            .ok();
        Printer {
            outlet: Outlet(shared),
            thread,
        }
    }

    /// A handle for a thread that prints.
    pub fn outlet(&self) -> Outlet {
        self.outlet.clone()
    }

    /// Waits at most `wait` for every line queued to be written (the writer may be stuck
    /// on a reader that never reads: then it is left behind); true if all were.
    pub fn finish(mut self, wait: Duration) -> bool {
        let shared = &self.outlet.0;
        let deadline = Instant::now() + wait;
        let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.closed = true;
        shared.changed.notify_all();
        while !queue.out.is_empty() || !queue.err.is_empty() || queue.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.thread.is_none() {
                return false;
            }
            queue = shared
                .changed
                .wait_timeout(queue, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(queue);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        true
    }
}

impl Outlet {
    /// Queues `lines` (whole lines, `count` of them) for standard output; if they do not
    /// fit, drops them and counts them. The writer's failure, if it has failed.
    pub fn out(&self, lines: &[u8], count: u64) -> io::Result<()> {
        self.queue(To::Out, lines, count, false)
    }

    /// The same for standard error.
    pub fn err(&self, lines: &[u8], count: u64) -> io::Result<()> {
        self.queue(To::Err, lines, count, false)
    }

    /// Queues a line that must not be dropped for room (a summary, a stats line: one a
    /// period at most), in the queue's reserve.
    pub fn out_always(&self, line: &[u8]) -> io::Result<()> {
        self.queue(To::Out, line, 1, true)
    }

    fn queue(&self, to: To, lines: &[u8], count: u64, always: bool) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut queue = self.0.queue.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = queue.failed.take() {
            return Err(e);
        }
        if queue.closed {
            return Ok(());
        }
        let room = limits::CONSOLE_QUEUE_BYTES + if always { RESERVE } else { 0 };
        if queue.in_flight + queue.out.len() + queue.err.len() + lines.len() > room {
            self.0.dropped.fetch_add(count, Ordering::Relaxed);
            return Ok(());
        }
        let first = queue.out.is_empty() && queue.err.is_empty();
        match to {
            To::Out => queue.out.extend_from_slice(lines),
            To::Err => queue.err.extend_from_slice(lines),
        }
        // Only an idle writer needs waking, once; a busy one takes these when it is done.
        if first && queue.idle {
            self.0.changed.notify_all();
        }
        Ok(())
    }

    /// Lines dropped so far because the reader could not keep up.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

/// Which stream lines go to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum To {
    Out,
    Err,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that blocks until told to go on: a pipe nobody reads.
    struct Stuck(Arc<(Mutex<bool>, Condvar)>, Arc<Mutex<Vec<u8>>>);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (lock, cv) = &*self.0;
            let mut go = lock.lock().unwrap();
            while !*go {
                go = cv.wait(go).unwrap();
            }
            self.1.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reader_that_never_reads_neither_blocks_nor_swells_the_caller() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let printer = Printer::start(Stuck(Arc::clone(&gate), Arc::clone(&seen)), io::sink());
        let outlet = printer.outlet();
        let started = Instant::now();
        let line = vec![b'x'; 1000];
        for _ in 0..10_000 {
            let mut l = line.clone();
            l.push(b'\n');
            outlet.out(&l, 1).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the caller waited"
        );
        let dropped = outlet.dropped();
        assert!(dropped > 8000, "{dropped} dropped");
        assert!(
            !printer.finish(Duration::from_millis(100)),
            "stuck, left behind"
        );
        // Let the writer go: what was kept is whole lines.
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        std::thread::sleep(Duration::from_millis(200));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len() % 1001, 0);
        assert!(seen.len() as u64 / 1001 + dropped <= 10_000);
    }

    #[test]
    fn lines_come_out_whole_and_in_order_and_a_failure_is_told() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new((Mutex::new(true), Condvar::new()));
        let printer = Printer::start(Stuck(gate, Arc::clone(&seen)), io::sink());
        let outlet = printer.outlet();
        for i in 0..100 {
            outlet.out(format!("{i}\n").as_bytes(), 1).unwrap();
        }
        assert!(printer.finish(Duration::from_secs(5)));
        let text = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
        let want: String = (0..100).map(|i| format!("{i}\n")).collect();
        assert_eq!(text, want);

        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let printer = Printer::start(Broken, io::sink());
        let outlet = printer.outlet();
        outlet.out(b"a\n", 1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let failed = loop {
            if let Err(e) = outlet.out(b"b\n", 1) {
                break e;
            }
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(failed.kind(), io::ErrorKind::BrokenPipe);
    }
}
