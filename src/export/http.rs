//! The metrics endpoint's HTTP: one request a connection, over plain TCP, bounded in every
//! way a stranger could push on it.
//!
//! Why not `tiny_http`: its task pool starts a thread for every connection it cannot hand
//! to an idle one, without a limit (`util/task_pool.rs`), so a client that opens
//! connections and sends nothing makes threads without end. Here the request head is
//! parsed by `httparse`; what is ours is the bounds.
//!
//! Promise: request heads are read by one thread, non-blocking, on a poller: a connection
//! that sends nothing costs a file and a slot, never a thread; at most
//! [`limits::METRICS_CONNECTIONS`] wait for their heads, and when one more comes the oldest
//! is closed (so that idle connections cannot keep a scraper out); a head must come whole
//! within [`limits::METRICS_IO_TIMEOUT`] of the connection (`408`) and within
//! [`limits::METRICS_REQUEST_BYTES`] (`431`). Whole requests go to four threads; an answer
//! must be taken at [`limits::METRICS_MIN_RATE`] at least once its first
//! [`limits::METRICS_IO_TIMEOUT`] has passed, or it is cut (a slow reader cannot hold a
//! thread for long). Slow paths (`/probe`) run on [`limits::PROBES_AT_ONCE`] threads of
//! their own, so that a probe never delays a scrape; more are answered `503`. `HEAD` is
//! answered with the head alone. Every thread ends when the stop is set.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::io::wait::{Poller, Token};
use crate::{Error, Stop, limits};

/// A request: its path and its query's pairs, percent-decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// The path, without the query.
    pub path: String,
    /// `HEAD`: the answer's head alone is sent (its body is never made).
    pub head_only: bool,
    /// The query's `key=value` pairs, in order.
    pub query: Vec<(String, String)>,
}

impl Request {
    /// The value of the first `key` in the query.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What writes a streamed body.
pub type Writer = Box<dyn FnOnce(&mut dyn std::fmt::Write) -> std::fmt::Result + Send>;

/// An answer's body: text, or text written as it is made (a large exposition), which
/// goes out without a length, ended by closing the connection.
pub enum Body {
    /// The whole body.
    Text(String),
    /// A writer of the body, called once the head has gone.
    Stream(Writer),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Text(t) => f.debug_tuple("Text").field(t).finish(),
            Body::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// An answer.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Body,
}

impl Response {
    /// A plain-text answer of `status`.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        let mut body = body.into();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Body::Text(body),
        }
    }

    /// A 200 answer of `content_type`.
    pub fn ok(content_type: &'static str, body: String) -> Response {
        Response {
            status: 200,
            content_type,
            body: Body::Text(body),
        }
    }

    /// A 200 answer of `content_type` whose body `write` writes as it goes.
    pub fn stream(
        content_type: &'static str,
        write: impl FnOnce(&mut dyn std::fmt::Write) -> std::fmt::Result + Send + 'static,
    ) -> Response {
        Response {
            status: 200,
            content_type,
            body: Body::Stream(Box::new(write)),
        }
    }
}

/// What answers requests: called on a connection's thread.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A running endpoint; its threads end when the stop given to [`Endpoint::bind`] is set.
pub struct Endpoint {
    local: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

/// Threads that read requests and answer the fast paths.
const WORKERS: usize = 4;

impl Endpoint {
    /// Listens on `addr`; `handler` answers every path; requests whose path is one of
    /// `slow` are answered on the slow threads.
    pub fn bind(
        addr: SocketAddr,
        handler: Handler,
        slow: &'static [&'static str],
        stop: &Stop,
    ) -> Result<Endpoint, Error> {
        let listener = TcpListener::bind(addr).map_err(|source| Error::Bind {
            addr,
            source,
            port: "--metrics HOST:PORT",
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the metrics address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("cannot make the listener non-blocking", e))?;
        let mut poller = Poller::new(stop).map_err(|e| Error::io("cannot wait", e))?;
        poller
            .add(&listener, 0)
            .map_err(|e| Error::io("cannot wait", e))?;
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    // Serving others never keeps the process's own loop (probing, serving
                    // UDP) waiting.
                    crate::io::process::lower_priority();
                    f()
                })
                .map_err(|e| Error::io("cannot start the metrics endpoint's threads", e))
        };
        let (to_workers, connections) = sync_channel::<(TcpStream, Request)>(WORKERS);
        let connections = Arc::new(std::sync::Mutex::new(connections));
        let (to_slow, slow_work) = sync_channel::<(TcpStream, Request)>(limits::PROBES_AT_ONCE);
        let slow_work = Arc::new(std::sync::Mutex::new(slow_work));
        // Slow requests taken and not yet answered: at most one a slow thread.
        let busy = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for _ in 0..WORKERS {
            let (connections, handler, to_slow, busy, stop) = (
                Arc::clone(&connections),
                Arc::clone(&handler),
                to_slow.clone(),
                Arc::clone(&busy),
                stop.clone(),
            );
            threads.push(spawn(
                "metrics",
                Box::new(move || serve(&connections, &handler, slow, (&to_slow, &busy), &stop)),
            )?);
        }
        for _ in 0..limits::PROBES_AT_ONCE {
            let (slow_work, handler, busy, stop) = (
                Arc::clone(&slow_work),
                Arc::clone(&handler),
                Arc::clone(&busy),
                stop.clone(),
            );
            threads.push(spawn(
                "probe",
                Box::new(move || serve_slow(&slow_work, &handler, &busy, &stop)),
            )?);
        }
        let stop = stop.clone();
        threads.push(spawn(
            "metrics-accept",
            Box::new(move || Heads::new(listener, poller).run(&to_workers, &stop)),
        )?);
        Ok(Endpoint { local, threads })
    }

    /// The address it listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits for its threads (after the stop).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// How long idle threads sleep between looks at the stop.
const TICK: Duration = Duration::from_millis(200);

/// The listener's token on the heads' poller; a connection's is its slot plus one.
const LISTENER: Token = 0;

/// A connection whose request head is still coming.
struct Pending {
    stream: TcpStream,
    head: Vec<u8>,
    since: Instant,
}

/// The connections whose heads are awaited, on one poller (see the module's promise).
struct Heads {
    listener: TcpListener,
    poller: Poller,
    slots: Vec<Option<Pending>>,
    ready: Vec<Token>,
}

impl Heads {
    fn new(listener: TcpListener, poller: Poller) -> Heads {
        Heads {
            listener,
            poller,
            slots: (0..limits::METRICS_CONNECTIONS).map(|_| None).collect(),
            ready: Vec::new(),
        }
    }

    fn run(&mut self, workers: &SyncSender<(TcpStream, Request)>, stop: &Stop) {
        while !stop.is_stopped() {
            // Until the next head is due, at most a tick.
            let now = Instant::now();
            let due = self
                .slots
                .iter()
                .flatten()
                .map(|p| p.since + limits::METRICS_IO_TIMEOUT)
                .min()
                .map_or(TICK, |at| at.saturating_duration_since(now).min(TICK));
            if self.poller.wait(Some(due), &mut self.ready).is_err() {
                std::thread::sleep(TICK);
            }
            for r in 0..self.ready.len() {
                match self.ready[r] {
                    LISTENER => self.accept(),
                    token => self.read(token as usize - 1, workers),
                }
            }
            // Heads that did not come in time.
            let now = Instant::now();
            for i in 0..self.slots.len() {
                if self.slots[i]
                    .as_ref()
                    .is_some_and(|p| now >= p.since + limits::METRICS_IO_TIMEOUT)
                {
                    let mut p = self.close(i);
                    respond_at_once(
                        &mut p.stream,
                        Response::text(408, "the request head did not come in time"),
                    );
                }
            }
        }
    }

    /// Takes the connections waiting (a bounded number a turn); when every slot is taken,
    /// the oldest connection makes room.
    fn accept(&mut self) {
        for _ in 0..64 {
            let Ok((stream, _)) = self.listener.accept() else {
                return;
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let i = match self.slots.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    let oldest = (0..self.slots.len())
                        .min_by_key(|&i| self.slots[i].as_ref().map(|p| p.since))
                        .expect("slots");
                    let mut p = self.close(oldest);
                    respond_at_once(
                        &mut p.stream,
                        Response::text(503, "busy: too many connections"),
                    );
                    oldest
                }
            };
            if self.poller.add(&stream, i as Token + 1).is_err() {
                continue;
            }
            self.slots[i] = Some(Pending {
                stream,
                head: Vec::new(),
                since: Instant::now(),
            });
        }
    }

    /// Reads what connection `i` has sent; a whole head goes to the workers.
    fn read(&mut self, i: usize, workers: &SyncSender<(TcpStream, Request)>) {
        let Some(p) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let mut buf = [0u8; 4096];
        let outcome = loop {
            match p.stream.read(&mut buf) {
                Ok(0) => break Err(None), // closed mid-request: nobody to answer
                Ok(n) => {
                    let room = limits::METRICS_REQUEST_BYTES + 1
                        - p.head.len().min(limits::METRICS_REQUEST_BYTES + 1);
                    p.head.extend_from_slice(&buf[..n.min(room)]);
                    match parse(&p.head) {
                        Some(result) => break result.map_err(Some),
                        None if p.head.len() > limits::METRICS_REQUEST_BYTES => {
                            break Err(Some(Response::text(431, "the request head is too long")));
                        }
                        None => {}
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => break Err(None),
            }
        };
        let mut p = self.close(i);
        match outcome {
            Ok(request) => {
                if p.stream.set_nonblocking(false).is_err() {
                    return;
                }
                if let Err(
                    TrySendError::Full((mut stream, _))
                    | TrySendError::Disconnected((mut stream, _)),
                ) = workers.try_send((p.stream, request))
                {
                    respond_at_once(
                        &mut stream,
                        Response::text(503, "busy: every thread is answering"),
                    );
                }
            }
            Err(Some(response)) => respond_at_once(&mut p.stream, response),
            Err(None) => {}
        }
    }

    /// Takes connection `i` off the poller and out of its slot.
    fn close(&mut self, i: usize) -> Pending {
        let p = self.slots[i].take().expect("a connection in the slot");
        self.poller.remove(&p.stream);
        p
    }
}

/// A request head parsed: `None` while incomplete; the answer to give when it is not one
/// to serve.
fn parse(head: &[u8]) -> Option<Result<Request, Response>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {
            let head_only = match parsed.method {
                Some("GET") => false,
                Some("HEAD") => true,
                _ => {
                    return Some(Err(Response::text(
                        405,
                        "only GET and HEAD are answered here",
                    )));
                }
            };
            let target = parsed.path.unwrap_or("/");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            Some(Ok(Request {
                path: path.to_string(),
                head_only,
                query: form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .take(16)
                    .collect(),
            }))
        }
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(Err(Response::text(
            431,
            "too many header fields (32 at most)",
        ))),
        Err(_) => Some(Err(Response::text(400, "not an HTTP request"))),
    }
}

/// Answers on a connection without waiting for it: what a refusal gets (a client that does
/// not read it loses it).
fn respond_at_once(stream: &mut TcpStream, response: Response) {
    let _ = stream.set_nonblocking(true);
    respond(stream, response, false);
}

fn serve(
    connections: &std::sync::Mutex<Receiver<(TcpStream, Request)>>,
    handler: &Handler,
    slow: &[&str],
    (to_slow, busy): (&SyncSender<(TcpStream, Request)>, &AtomicUsize),
    stop: &Stop,
) {
    while !stop.is_stopped() {
        let next = connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv_timeout(TICK);
        let Ok((mut stream, request)) = next else {
            continue;
        };
        let _ = stream.set_write_timeout(Some(limits::METRICS_IO_TIMEOUT));
        if slow.contains(&request.path.as_str()) {
            let taken = busy
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limits::PROBES_AT_ONCE).then_some(n + 1)
                })
                .is_ok();
            // (The queue holds as many as there are slow threads: it never refuses a
            // request counted in.)
            let refused = if taken {
                to_slow.try_send((stream, request)).err().map(|e| {
                    busy.fetch_sub(1, Ordering::AcqRel);
                    match e {
                        TrySendError::Full((s, _)) | TrySendError::Disconnected((s, _)) => s,
                    }
                })
            } else {
                Some(stream)
            };
            if let Some(mut stream) = refused {
                respond(
                    &mut stream,
                    Response::text(
                        503,
                        format!("busy: {} probes at once at most", limits::PROBES_AT_ONCE),
                    ),
                    false,
                );
            }
            continue;
        }
        let head_only = request.head_only;
        respond(&mut stream, handler(&request), head_only);
    }
}

fn serve_slow(
    work: &std::sync::Mutex<Receiver<(TcpStream, Request)>>,
    handler: &Handler,
    busy: &AtomicUsize,
    stop: &Stop,
) {
    while !stop.is_stopped() {
        let next = work
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv_timeout(TICK);
        if let Ok((mut stream, request)) = next {
            let head_only = request.head_only;
            respond(&mut stream, handler(&request), head_only);
            busy.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn respond(stream: &mut TcpStream, response: Response, head_only: bool) {
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let length = match &response.body {
        Body::Text(text) => format!("Content-Length: {}\r\n", text.len()),
        Body::Stream(_) => String::new(),
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\n{length}Connection: close\r\n\r\n",
        response.status, response.content_type,
    );
    let mut out = Paced::new(std::io::BufWriter::with_capacity(
        STREAM_BUFFER,
        &mut *stream,
    ));
    let _ = out.write_all(head.as_bytes());
    if !head_only {
        match response.body {
            Body::Text(text) => {
                let _ = out.write_all(text.as_bytes());
            }
            Body::Stream(write) => {
                // A reader that stops taking it, or takes it too slowly, ends the writing.
                let _ = write(&mut Adapter(&mut out));
            }
        }
    }
    let _ = out.flush();
    let cut = out.cut;
    drop(out);
    if cut {
        // Too slow a reader: what the kernel still holds for it is dropped (a reset), not
        // trickled out.
        let _ = socket2::SockRef::from(&*stream).set_linger(Some(Duration::ZERO));
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Bytes a streamed body is sent by.
const STREAM_BUFFER: usize = 64 << 10;

/// A writer that fails once its reader takes less than [`limits::METRICS_MIN_RATE`]
/// (after a first [`limits::METRICS_IO_TIMEOUT`] of grace): a slow reader cannot hold a
/// thread, nor the page it is written from, for long.
struct Paced<W: Write> {
    inner: W,
    started: Instant,
    written: u64,
    /// The reader was too slow: the answer was cut.
    cut: bool,
}

impl<W: Write> Paced<W> {
    fn new(inner: W) -> Self {
        Paced {
            inner,
            started: Instant::now(),
            written: 0,
            cut: false,
        }
    }
}

impl<W: Write> Write for Paced<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let elapsed = self.started.elapsed();
        if let Some(after) = elapsed.checked_sub(limits::METRICS_IO_TIMEOUT) {
            let owed = after.as_secs_f64() * limits::METRICS_MIN_RATE as f64;
            if (self.written as f64) < owed {
                self.cut = true;
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the reader takes the answer too slowly",
                ));
            }
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `fmt::Write` onto a byte stream; an I/O error becomes `fmt::Error` (which ends the
/// writer).
struct Adapter<'a, W: Write>(&'a mut W);

impl<W: Write> std::fmt::Write for Adapter<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.write_all(s.as_bytes()).map_err(|_| std::fmt::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, raw: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("a connection");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a timeout");
        s.write_all(raw.as_bytes()).expect("a request");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn answers_and_refuses_as_promised() -> Result<(), Error> {
        let stop = Stop::new();
        let handler: Handler = Arc::new(|r: &Request| {
            Response::text(200, format!("{} {:?}", r.path, r.param("target")))
        });
        let endpoint = Endpoint::bind("127.0.0.1:0".parse().expect("addr"), handler, &[], &stop)?;
        let addr = endpoint.local_addr();
        let ok = get(
            addr,
            "GET /probe?target=127.0.0.1%3A862 HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("/probe Some(\"127.0.0.1:862\")\n"), "{ok}");
        assert!(get(addr, "POST / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(addr, "\x16\x03\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        let long = format!(
            "GET /{} HTTP/1.1\r\n\r\n",
            "a".repeat(limits::METRICS_REQUEST_BYTES)
        );
        assert!(get(addr, &long).starts_with("HTTP/1.1 431"));
        // Connections that send nothing cost no thread: when every slot waits on one, the
        // oldest is closed (503) to make room, and a request that comes whole is answered.
        let idle: Vec<TcpStream> = (0..100)
            .filter_map(|_| TcpStream::connect(addr).ok())
            .collect();
        assert_eq!(idle.len(), 100);
        std::thread::sleep(Duration::from_millis(300));
        let ok = get(addr, "GET /busy HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        let refused = idle
            .into_iter()
            .filter(|s| {
                let mut s = s;
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("a timeout");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                answer.starts_with("HTTP/1.1 503")
            })
            .count();
        assert!(
            refused >= 100 + 1 - limits::METRICS_CONNECTIONS,
            "{refused} refused"
        );
        // HEAD: the head alone; too many header fields: 431.
        let head = get(addr, "HEAD / HTTP/1.1\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
            "{head:?}"
        );
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(40));
        assert!(get(addr, &many).starts_with("HTTP/1.1 431"));
        // A head that never ends is cut when its time is up.
        let mut slow = TcpStream::connect(addr).expect("a connection");
        slow.write_all(b"GET / HT").expect("a part");
        slow.set_read_timeout(Some(limits::METRICS_IO_TIMEOUT * 3))
            .expect("a timeout");
        let mut answer = String::new();
        let _ = slow.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        stop.stop();
        endpoint.join();
        Ok(())
    }
}
