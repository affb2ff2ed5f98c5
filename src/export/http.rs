//! The metrics endpoint's HTTP: a few fixed threads answering `GET` over plain TCP, one
//! request a connection, bounded in every way a stranger could push on it.
//!
//! Why not `tiny_http`: its task pool starts a thread for every connection it cannot hand
//! to an idle one, without a limit (`util/task_pool.rs`), so a client that opens
//! connections and sends nothing makes threads without end. Here the request head is
//! parsed by `httparse`; what is ours is the bounds.
//!
//! Promise: at most [`limits::METRICS_CONNECTIONS`] connections are served at once, the
//! rest answered `503` and closed at once; a request head over
//! [`limits::METRICS_REQUEST_BYTES`], or not complete within
//! [`limits::METRICS_IO_TIMEOUT`], is answered `400`/`408` and closed; an answer not taken
//! within that time is dropped. Slow paths (`/probe`) run on [`limits::PROBES_AT_ONCE`]
//! threads of their own, so that a probe never delays a scrape; more are answered `503`.
//! Every thread ends when the stop is set.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::io::wait::Poller;
use crate::{Error, Stop, limits};

/// A request: its path and its query's pairs, percent-decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// The path, without the query.
    pub path: String,
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
        let (to_workers, connections) = sync_channel::<TcpStream>(limits::METRICS_CONNECTIONS);
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
            Box::new(move || accept(&listener, &mut poller, &to_workers, &stop)),
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

fn accept(
    listener: &TcpListener,
    poller: &mut Poller,
    workers: &SyncSender<TcpStream>,
    stop: &Stop,
) {
    let mut ready = Vec::new();
    while !stop.is_stopped() {
        if poller.wait(Some(TICK), &mut ready).is_err() {
            std::thread::sleep(TICK);
        }
        // Every connection waiting, one at a time (a bounded number a turn).
        for _ in 0..64 {
            let Ok((stream, _)) = listener.accept() else {
                break;
            };
            let _ = stream.set_nonblocking(false);
            match workers.try_send(stream) {
                Ok(()) => {}
                Err(TrySendError::Full(mut stream) | TrySendError::Disconnected(mut stream)) => {
                    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                    respond(
                        &mut stream,
                        Response::text(503, "busy: too many connections"),
                    );
                }
            }
        }
    }
}

fn serve(
    connections: &std::sync::Mutex<Receiver<TcpStream>>,
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
        let Ok(mut stream) = next else {
            continue;
        };
        let request = match read_request(&mut stream) {
            Ok(request) => request,
            Err(response) => {
                respond(&mut stream, response);
                continue;
            }
        };
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
                );
            }
            continue;
        }
        respond(&mut stream, handler(&request));
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
            respond(&mut stream, handler(&request));
            busy.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Reads one request head within the limits; the answer to give when it cannot.
fn read_request(stream: &mut TcpStream) -> Result<Request, Response> {
    let deadline = Instant::now() + limits::METRICS_IO_TIMEOUT;
    let _ = stream.set_write_timeout(Some(limits::METRICS_IO_TIMEOUT));
    let mut head = vec![0u8; limits::METRICS_REQUEST_BYTES];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Err(Response::text(408, "the request head did not come in time"));
        }
        match stream.read(&mut head[len..]) {
            Ok(0) => return Err(Response::text(400, "the connection closed mid-request")),
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Response::text(408, "the request head did not come in time")),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&head[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                if !matches!(parsed.method, Some("GET" | "HEAD")) {
                    return Err(Response::text(405, "only GET is answered here"));
                }
                let target = parsed.path.unwrap_or("/");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                return Ok(Request {
                    path: path.to_string(),
                    query: form_urlencoded::parse(query.as_bytes())
                        .into_owned()
                        .take(16)
                        .collect(),
                });
            }
            Ok(httparse::Status::Partial) if len < head.len() => {}
            Ok(httparse::Status::Partial) => {
                return Err(Response::text(431, "the request head is too long"));
            }
            Err(_) => return Err(Response::text(400, "not an HTTP request")),
        }
    }
}

fn respond(stream: &mut TcpStream, response: Response) {
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
    let mut out = std::io::BufWriter::with_capacity(STREAM_BUFFER, &mut *stream);
    let _ = out.write_all(head.as_bytes());
    match response.body {
        Body::Text(text) => {
            let _ = out.write_all(text.as_bytes());
        }
        Body::Stream(write) => {
            // A reader that stops taking it ends the writing (the write timeout).
            let _ = write(&mut Adapter(&mut out));
        }
    }
    let _ = out.flush();
    drop(out);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Bytes a streamed body is sent by.
const STREAM_BUFFER: usize = 64 << 10;

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
        // Connections that send nothing hold at most the workers and the queue: the rest
        // are refused at once (503); those held are dropped when their time is up (408),
        // and the endpoint answers again once they are gone.
        let idle: Vec<TcpStream> = (0..64)
            .filter_map(|_| TcpStream::connect(addr).ok())
            .collect();
        assert_eq!(idle.len(), 64);
        let answers: Vec<String> = idle
            .into_iter()
            .map(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("a timeout");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                answer
            })
            .collect();
        let refused = answers
            .iter()
            .filter(|a| a.starts_with("HTTP/1.1 503"))
            .count();
        let held = answers
            .iter()
            .filter(|a| a.starts_with("HTTP/1.1 408"))
            .count();
        assert_eq!(refused + held, 64, "{answers:?}");
        // At most the workers and the queue at a time (twice over, should the machine be
        // so slow that the first held ones time out before the last are accepted).
        let slots = WORKERS + limits::METRICS_CONNECTIONS;
        assert!(held <= 2 * slots, "{held} held, {refused} refused");
        assert!(get(addr, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        stop.stop();
        endpoint.join();
        Ok(())
    }
}
