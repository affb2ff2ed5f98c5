//! How each subcommand runs: builds the library's configuration from the checked
//! arguments, runs it, and prints through `text` and `json`.
//!
//! Promise: a run's report is printed before anything else can fail (files, pipes); a
//! signal stops a long run with its summary.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use udpkit::Requests;
use udpkit::addr as net;
use udpkit::wire::Protocol;
use udpkit::{
    Backoff, Client, ClientEvent, Error, RateLimit, Server, ServerConfig, Stop, bench, ping, relay,
};

use udpkit::export::http::{Endpoint, Handler, Request, Response};
use udpkit::export::metrics;

use super::args::*;
use super::console::{self, Console};
use super::output::Output;
use super::printer::Printer;
use super::{json, text};

/// The bytes of a command-line argument as given (Unix), or its UTF-8 form elsewhere.
fn os_bytes(text: &OsString) -> Vec<u8> {
    #[cfg(unix)]
    {
        std::os::unix::ffi::OsStrExt::as_bytes(text.as_os_str()).to_vec()
    }
    #[cfg(not(unix))]
    {
        text.to_string_lossy().into_owned().into_bytes()
    }
}

/// A stop handle set by SIGINT, SIGTERM or SIGHUP (a closed terminal): long-running
/// commands then stop within a second and print what they have. A second signal ends the
/// process at once, should a stop ever hang.
fn stop_on_signals() -> Stop {
    stop_on(&[SIGINT, SIGTERM, SIGHUP])
}

/// A stop handle set by `signals` (as [`stop_on_signals`]).
pub(super) fn stop_on(signals: &[std::ffi::c_int]) -> Stop {
    let stop = Stop::new();
    let wake = stop.signal_pipe().ok();
    for &signal in signals {
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 1, stop.flag());
        let _ = signal_hook::flag::register(signal, stop.flag());
        // The same signal writes a byte to the stop's pipe: every waiting loop wakes now.
        if let Some(pipe) = wake.as_ref().and_then(|p| p.try_clone().ok()) {
            let _ = signal_hook::low_level::pipe::register(signal, pipe);
        }
    }
    stop
}

/// Writes the ready event to `path`, whole (see `output`: a reader never sees half of it,
/// and a link planted at the name is replaced, never followed).
pub(super) fn write_ready(
    path: Option<&std::path::Path>,
    event: serde_json::Value,
) -> Result<(), Error> {
    let Some(path) = path else { return Ok(()) };
    let mut file = Output::create(path)?;
    file.write(format!("{event}\n").as_bytes())?;
    file.commit()
}

/// Serves `render`'s text at `/metrics` on `addr` until `stop`; a line to say where.
fn serve_metrics(
    addr: std::net::SocketAddr,
    render: impl Fn() -> String + Send + Sync + 'static,
    stop: &Stop,
) -> Result<Endpoint, Error> {
    let handler: Handler =
        std::sync::Arc::new(move |request: &Request| match request.path.as_str() {
            "/metrics" => Response::ok(metrics::CONTENT_TYPE, render()),
            "/" => Response::text(200, "udpkit: metrics at /metrics"),
            _ => Response::text(404, "not found: metrics are at /metrics"),
        });
    Endpoint::bind(addr, handler, &[], stop)
}

pub(super) fn output(source: io::Error) -> Error {
    Error::Callback { source }
}

/// The protocol asked for; STAMP's authenticated mode when a key file is given (its key in
/// hexadecimal, 32 to 128 digits, the file readable by its owner alone).
fn speaking(protocol: Protocol, key_file: Option<&std::path::Path>) -> Result<Protocol, Error> {
    let Some(path) = key_file else {
        return Ok(protocol);
    };
    if protocol != Protocol::STAMP {
        return Err(Error::Invalid(
            "--key-file is for STAMP's authenticated mode: add --protocol stamp".into(),
        ));
    }
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("cannot read the key file {shown}"), e))?;
    if !meta.is_file() || meta.len() > 4096 {
        return Err(Error::Invalid(format!(
            "{shown} is not a key file: give a regular file holding the key in hexadecimal"
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::Invalid(format!(
                "the key file {shown} is readable by others: chmod 600 {shown}"
            )));
        }
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("cannot read the key file {shown}"), e))?;
    let hex: String = text.split_whitespace().collect();
    let hex = hex
        .strip_prefix("0x")
        .or_else(|| hex.strip_prefix("0X"))
        .unwrap_or(&hex);
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Invalid(format!(
            "{shown} does not hold a key in hexadecimal (digits 0-9 and a-f only)"
        )));
    }
    let key: Option<Vec<u8>> = hex
        .len()
        .is_multiple_of(2)
        .then(|| {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten();
    let key = key.ok_or_else(|| {
        Error::Invalid(format!(
            "{shown} does not hold a key in hexadecimal (an even number of digits 0-9, a-f)"
        ))
    })?;
    Protocol::stamp_authenticated(&key).map_err(|e| Error::Invalid(format!("{shown}: {e}")))
}

/// The server's address (on the protocol's port unless one is given) and what the
/// requests speak and carry.
fn aim(to: &TargetArgs) -> Result<(std::net::SocketAddr, Requests), Error> {
    let protocol = speaking(to.protocol, to.key_file.as_deref())?;
    let port = to.port.unwrap_or(protocol.default_port());
    let requests = Requests {
        protocol,
        tos: to.marking.tos(),
        ttl: to.marking.ttl,
    };
    Ok((net::resolve(&to.host, port)?, requests))
}

/// The size of each request: as asked, or the protocol's default; a STAMP packet is at
/// least 44 bytes.
fn request_size(protocol: Protocol, asked: Option<u16>) -> Result<usize, Error> {
    let size = asked.map_or(protocol.default_size(), usize::from);
    if size < protocol.min_size() {
        return Err(Error::Invalid(format!(
            "a {protocol} request is at least {} bytes: give -s {} or more",
            protocol.min_size(),
            protocol.min_size()
        )));
    }
    Ok(size)
}

/// Runs the server until SIGINT or SIGTERM, then prints the summary.
pub fn server(args: &ServerArgs) -> Result<(), Error> {
    let protocol = speaking(args.protocol, args.key_file.as_deref())?;
    if args.stateful && !protocol.has_sessions() {
        let with: Vec<&str> = Protocol::ALL
            .iter()
            .filter(|p| p.has_sessions())
            .map(|p| p.as_str())
            .collect();
        return Err(Error::Invalid(format!(
            "--stateful is for a reflector that keeps sessions: add --protocol {}",
            with.join(" or --protocol ")
        )));
    }
    let port = args.port.unwrap_or(protocol.default_port());
    let server = std::sync::Arc::new(Server::with_config(ServerConfig {
        threads: usize::from(args.threads),
        drop_rate: args.drop_rate,
        seed: args.seed,
        rate_limit: args.rate_limit.unwrap_or(RateLimit::Auto),
        gso: !args.no_gso,
        gro: !args.no_gro,
        protocol,
        stateful: args.stateful,
        ..ServerConfig::new(net::resolve(&args.host, port)?)
    })?);
    // Before anyone is told it is ready: a signal from then on stops it with its summary.
    let stop = stop_on_signals();
    let endpoint = match args.metrics {
        Some(addr) => {
            let server = std::sync::Arc::clone(&server);
            Some(serve_metrics(
                addr,
                move || metrics::server(&server.stats(), &server.in_use()),
                &stop,
            )?)
        }
        None => None,
    };
    let mut ready = serde_json::json!({
        "event": "ready",
        "tool": "server",
        "address": net::shown(server.local_addr()).to_string(),
        "protocol": protocol.as_str(),
    });
    if let Some(e) = &endpoint {
        ready["metrics"] = e.local_addr().to_string().into();
    }
    write_ready(args.ready_file.as_deref(), ready)?;
    // Every line from here on goes through the printer: the server never waits on
    // whoever reads its output (lines it cannot take are dropped and counted).
    let printer = Printer::start(io::stdout(), io::stderr());
    let outlet = printer.outlet();
    let say = |line: String| {
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        outlet.out_always(&bytes).map_err(output)
    };
    // With --json, standard output is JSON only: the seed's line becomes an event.
    say(if args.json {
        serde_json::json!({
            "event": "listening",
            "address": net::shown(server.local_addr()).to_string(),
            "protocol": protocol.as_str(),
            "stateful": args.stateful,
        })
        .to_string()
    } else {
        console::listening_speaking(server.local_addr(), protocol, args.stateful)
    })?;
    if server.receive_buffer() < udpkit::SERVER_RECEIVE_BUFFER {
        let note = format!(
            "udpkit: note: the kernel granted a {} KiB receive buffer, less than the {} KiB \
             asked; bursts may be dropped (raise net.core.rmem_max)\n",
            server.receive_buffer() >> 10,
            udpkit::SERVER_RECEIVE_BUFFER >> 10
        );
        outlet.err(note.as_bytes(), 1).map_err(output)?;
    }

    let started = Instant::now();
    let line_by_line = io::stdout().is_terminal();
    let report = |event: &str| {
        let stats = server.stats();
        let seconds = started.elapsed().as_secs_f64();
        let not_shown = outlet.dropped();
        let line = if args.json {
            json::server_stats(&stats, event, seconds, not_shown)
        } else {
            let label = if event == "summary" {
                "Summary"
            } else {
                "Stats"
            };
            let mut line = format!(
                "{label} after {seconds:.1} s: {}",
                text::server_stats(&stats)
            );
            if not_shown > 0 {
                line.push_str(&format!(
                    "; {not_shown} lines not shown (the terminal or pipe could not keep up)"
                ));
            }
            line
        };
        say(line)
    };
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            server.run(&stop, || {
                Console::new(outlet.clone(), args.quiet, line_by_line)
                    .speaking(protocol)
                    .json(args.json)
            })
        });
        let mut next = args.stats.map(|period| (started + period, period));
        // Until the server ends (a stop, or a failure, which stops it too), waking for each
        // line of statistics.
        while !worker.is_finished() {
            let wake = next.map_or(Duration::from_secs(3600), |(at, _)| {
                at.saturating_duration_since(Instant::now())
            });
            if stop.wait(wake) {
                break;
            }
            if let Some((at, period)) = next
                && Instant::now() >= at
            {
                next = Some((at + period, period));
                if let Err(e) = report("stats") {
                    stop.stop();
                    let _ = worker.join();
                    return Err(e);
                }
            }
        }
        worker.join().expect("the server thread panicked")
    })?;
    report("summary")?;
    // The summary is written unless the reader is stuck; the process ends either way.
    printer.finish(SUMMARY_WAIT);
    stop.stop();
    if let Some(e) = endpoint {
        e.join();
    }
    Ok(())
}

/// How long a stopping server waits for its last lines to be taken by the terminal or pipe.
const SUMMARY_WAIT: Duration = Duration::from_secs(2);

/// Sends one request and prints the reply, as the seed's client does.
pub fn client(args: &ClientArgs) -> Result<(), Error> {
    let client = Client::connect(net::resolve(&args.host, args.port)?)?;
    let message = match &args.message {
        Some(text) => os_bytes(text),
        None => udpkit::wire::time_message().into_bytes(),
    };
    let backoff = Backoff {
        first_wait: args.wait,
        max_wait: args.max_wait,
    };
    let mut out = io::stdout().lock();
    let mut failed: Option<io::Error> = None;
    let mut say = |line: String| {
        if failed.is_none() {
            failed = writeln!(out, "{line}").err();
        }
    };
    // Ctrl-C ends the client as it always has (by the signal): nobody sets this stop.
    let reply = client.request(&message, &backoff, &Stop::new(), |event| match event {
        ClientEvent::Sent(attempt) => {
            if attempt.number == 1 {
                say(console::assigned(client.local_addr()));
            }
            if args.verbose {
                say(console::waiting(attempt.wait));
            }
        }
        ClientEvent::Ignored(data) => say(format!(
            "Ignored {} from the server's address: not the reply to this request",
            udpkit::wire::repr(data)
        )),
    });
    let reply = reply?;
    say(console::server_replied(reply.from, &reply.data));

    failed.map_or(Ok(()), |e| Err(output(e)))
}

/// Pings until COUNT or Ctrl-C; fails (exit 1) when no reply came at all.
pub fn ping(args: &PingArgs) -> Result<bool, Error> {
    let (target, requests) = aim(&args.to)?;
    let config = ping::Config {
        target,
        count: args.count,
        interval: args.interval,
        size: request_size(requests.protocol, args.size)?,
        timeout: args.timeout,
        requests,
    };
    // Before the first line: a signal from then on stops it with its summary.
    let stop = stop_on_signals();
    let shown = net::shown(target);
    let mut out = io::stdout();
    if !args.json {
        writeln!(out, "PING {shown}: {} data bytes", config.size).map_err(output)?;
    }
    let lines = !args.quiet && !args.json;
    let report = ping::ping(&config, &stop, |event| {
        // Notes are always said (but not in JSON); per-request lines unless -q or --json.
        let always =
            matches!(event, ping::Event::Unverified | ping::Event::Revoked { .. }) && !args.json;
        if !(lines || always) {
            return Ok(()); // nothing formatted on the hot path
        }
        let line = match *event {
            ping::Event::Reply {
                seq,
                bytes,
                reply_bytes,
                rtt,
                late,
                duplicate,
                verified,
                stamp,
                ..
            } => {
                let mut mark = String::new();
                if let Some(s) = stamp {
                    let ms = |nanos: i64| nanos as f64 / 1e6;
                    let rtt_ns = rtt.as_nanos() as i64;
                    mark.push_str(&format!(
                        " net={:.3} ms",
                        ms(rtt_ns - s.reflector_nanos().max(0))
                    ));
                    // One-way delays only where they mean something.
                    if target.ip().is_loopback()
                        || (s.reflector_error.synchronized && s.sender_error.synchronized)
                    {
                        mark.push_str(&format!(
                            " there={:.3} ms back={:.3} ms",
                            ms(s.forward_nanos()),
                            ms(s.backward_nanos())
                        ));
                    }
                    if s.ttl != 0 {
                        mark.push_str(&format!(" ttl={}", s.ttl));
                    }
                    if let Some(cos) = s.cos {
                        mark.push_str(&format!(" dscp={}", cos.dscp));
                    }
                }
                if duplicate {
                    mark.push_str(" (DUP!)");
                } else if late {
                    mark.push_str(" (late)");
                }
                if !verified {
                    mark.push_str(" (unverified)");
                }
                let ms = rtt.as_secs_f64() * 1e3;
                // A reflected packet's own length (a TWAMP reflector's may be shorter); the
                // seed's sentence names its request's.
                let bytes = if config.requests.protocol.test_packets() {
                    reply_bytes
                } else {
                    bytes
                };
                let unit = if bytes == 1 { "byte" } else { "bytes" };
                format!("{bytes} {unit} from {shown}: seq={seq} time={ms:.3} ms{mark}")
            }
            ping::Event::Unreachable { seq, kind } => {
                format!("From {shown}: seq={seq} {}", kind.as_str())
            }
            ping::Event::Forged => {
                format!("Ignored a forged reply from {shown} (no or wrong request ID)")
            }
            ping::Event::NotSent { seq, why, .. } => {
                format!("seq={seq} not sent: {}", text::not_sent(why))
            }
            ping::Event::Bad { .. } => {
                format!("Ignored a datagram from {shown} that answers no request")
            }
            ping::Event::Cut { seq, got, .. } => format!(
                "seq={seq} came back cut to {got} bytes (the request or the reply was cut \
                 short on the way): not counted as an answer"
            ),
            ping::Event::Progress(_) => return Ok(()),
            ping::Event::Unverified if config.size < udpkit::wire::ID_LEN => format!(
                "Note: requests of {} bytes are too small to carry a request ID ({} bytes): \
                 each reply is matched by the length it names, and cannot be authenticated",
                config.size,
                udpkit::wire::ID_LEN
            ),
            ping::Event::Unverified if config.requests.protocol.test_packets() => format!(
                "Note: {shown} does not echo udpkit's nonce (a reflector that does not return \
                 TLVs, or requests too small for one): each reply is matched by the sequence \
                 number and timestamp it echoes, and cannot be authenticated"
            ),
            ping::Event::Unverified => format!(
                "Note: {shown} does not repeat request IDs (the seed's protocol): each reply is \
                 matched by the length it names, and cannot be authenticated"
            ),
            ping::Event::Revoked { count } => format!(
                "Note: {shown} repeats request IDs: {count} earlier replies without one were forged and are not counted"
            ),
        };
        writeln!(io::stdout(), "{line}")
    })?;
    let text = if args.json {
        json::ping(&report) + "\n"
    } else {
        format!(
            "\n{}",
            text::ping_summary(&report, config.requests.protocol)
        )
    };
    out.write_all(text.as_bytes()).map_err(output)?;
    Ok(report.tally.received > 0)
}

/// Loads the server and prints the report; fails (exit 1) when no reply came at all.
pub fn bench(args: &BenchArgs) -> Result<bool, Error> {
    let (target, requests) = aim(&args.to)?;
    let config = bench::Config {
        target,
        flows: usize::from(args.flows),
        window: args.window as usize,
        duration: match (args.duration, args.count) {
            (None, None) => Some(Duration::from_secs(10)),
            (d, _) => d,
        },
        count: args.count,
        rate: args.rate,
        size: request_size(requests.protocol, args.size)?,
        timeout: args.timeout,
        requests,
        offload: udpkit::Offload {
            gso: !args.no_gso,
            gro: !args.no_gro,
        },
        threads: usize::from(args.threads),
        segment: agent_segment(args)?,
        start_at: args.start_at.as_ref().map(|(t, _)| *t),
        intervals: args.hlog.is_some(),
    };
    // Output files are made before the run (privately, beside their places): a path that
    // cannot be written is said now, not after a long benchmark.
    let histogram_file = args.histogram.as_deref().map(Output::create).transpose()?;
    let hlog_file = args.hlog.as_deref().map(Output::create).transpose()?;
    let plot_file = args.plot.as_deref().map(Output::create).transpose()?;
    let stop = stop_on_signals();
    if let Some((at, name)) = &args.start_at
        && let Ok(wait) = at.duration_since(std::time::SystemTime::now())
        && wait > Duration::from_secs(1)
    {
        eprintln!(
            "udpkit: waiting {:.0} s to start at {name} (--start-at)",
            wait.as_secs_f64()
        );
    }
    let bar = if io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(config.duration.map_or(0, |d| d.as_millis() as u64));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {elapsed}/{duration} {msg}")
                .expect("a valid template"),
        );
        Some(bar)
    } else {
        None
    };
    let report = bench::bench(&config, &stop, |p| {
        if let Some(bar) = &bar {
            bar.set_position(p.elapsed.as_millis() as u64);
            let rate = p.received as f64 / p.elapsed.as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "{rate:.0} requests/s, {} sent, {} received",
                p.sent, p.received
            ));
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(late) = report.late_start {
        eprintln!(
            "udpkit: started {:.3} s late against --start-at; ran this agent's whole share anyway",
            late.as_secs_f64()
        );
    }
    // Nothing there, said by the host itself (ICMP port unreachable) and nothing answered:
    // one line, as the client says it, not a table of zeros.
    let t = &report.tally;
    if t.received == 0 && t.icmp.port_unreachable > 0 && !args.json {
        return Err(Error::Refused { server: target });
    }
    // The report first: a file that fails to write afterwards never loses it.
    let text = if args.json {
        json::bench(&report) + "\n"
    } else {
        text::bench_summary(&report)
    };
    io::stdout().write_all(text.as_bytes()).map_err(output)?;
    if let (Some(mut file), Some(path)) = (histogram_file, &args.histogram) {
        report
            .latency
            .write_distribution(file.writer(), 1e3)
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        file.commit()?;
    }
    if let (Some(mut file), Some(path)) = (hlog_file, &args.hlog) {
        let run = args.start_at.as_ref().map_or("", |(_, name)| name.as_str());
        report
            .write_interval_log(file.writer(), run)
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        file.commit()?;
    }
    if let Some(mut file) = plot_file {
        let labels = text::bench_plot_labels(&report);
        let picture = udpkit::measure::plot::svg(&report.latency, 1e3, "µs", &labels);
        file.write(picture.as_bytes())?;
        file.commit()?;
    }
    Ok(report.tally.received > 0)
}

/// Streams and prints iperf3's lines; fails (exit 1) when nothing got through or the
/// figures are incomplete.
pub fn stream(args: &StreamArgs) -> Result<bool, Error> {
    let target = net::resolve(&args.host, args.port)?;
    let size = usize::from(args.size);
    let pps = args.pps.unwrap_or(args.bitrate / (size as f64 * 8.0));
    if !(udpkit::limits::STREAM_PPS_MIN..=udpkit::limits::STREAM_PPS_MAX).contains(&pps) {
        return Err(Error::Invalid(format!(
            "-b {} with -s {size} is {pps:.3e} datagrams a second: a stream runs at {} to {}; \
             give another -b (or --pps)",
            args.bitrate,
            udpkit::limits::STREAM_PPS_MIN,
            udpkit::limits::STREAM_PPS_MAX
        )));
    }
    if args.reverse && pps > udpkit::limits::REVERSE_PPS_MAX {
        return Err(Error::Invalid(format!(
            "-R at {pps:.0} datagrams a second: a server sends a reverse stream at most {}; \
             give a lower -b (or --pps)",
            udpkit::limits::REVERSE_PPS_MAX
        )));
    }
    if let Some(count) = args.count
        && count as f64 / pps > udpkit::limits::STREAM_DURATION_MAX.as_secs_f64()
    {
        return Err(Error::Invalid(format!(
            "-n {count} at {pps:.0} datagrams a second would run {:.0} s: a stream runs at most \
             {} s; give a smaller -n or a higher rate",
            count as f64 / pps,
            udpkit::limits::STREAM_DURATION_MAX.as_secs()
        )));
    }
    let config = udpkit::stream::Config {
        target,
        pps,
        size,
        duration: match (args.duration, args.count) {
            (None, None) => Some(Duration::from_secs(10)),
            (d, _) => d,
        },
        count: args.count,
        reverse: args.reverse,
        interval: args.interval,
        tos: args.tos.or(args.dscp.map(|d| d << 2)),
        offload: !args.no_gso,
    };
    // Before the first line: a signal from then on stops it with what it has.
    let stop = stop_on_signals();
    let mut out = io::stdout();
    // The banner once the stream runs (its first figures), so that a stream that never
    // starts is one line of error, not a banner and a table.
    let mut banner = !args.json && !args.json_lines;
    let report = udpkit::stream::stream(&config, &stop, |f| {
        if std::mem::take(&mut banner) {
            let _ = write!(io::stdout(), "{}", text::stream_header(&config));
        }
        let line = if args.json_lines {
            json::stream_interval(f)
        } else if args.json {
            return;
        } else {
            text::stream_line(f, "")
        };
        let _ = writeln!(io::stdout(), "{line}");
    })?;
    if banner {
        write!(out, "{}", text::stream_header(&config)).map_err(output)?;
    }
    let text = if args.json || args.json_lines {
        json::stream(&report, args.json_lines) + "\n"
    } else {
        text::stream_summary(&report)
    };
    out.write_all(text.as_bytes()).map_err(output)?;
    // The run did what was asked: complete, something arrived, nothing refused here.
    Ok(report.complete && report.total.received > 0 && report.refused_here == 0)
}

/// This agent's share of a split run: `--segment`, or the orchestrator's environment
/// (said on stderr), or none. A variable that is set must be a number within
/// `limits::SEGMENTS`: anything else is refused by name, never ignored or wrapped.
fn agent_segment(args: &BenchArgs) -> Result<Option<(usize, usize)>, Error> {
    if args.segment.is_some() {
        return Ok(args.segment);
    }
    let var = |name: &str| -> Result<Option<usize>, Error> {
        let Some(value) = std::env::var_os(name) else {
            return Ok(None);
        };
        let text = value.to_string_lossy();
        match text.trim().parse::<usize>() {
            Ok(n) if n <= udpkit::limits::SEGMENTS => Ok(Some(n)),
            _ => Err(Error::Invalid(format!(
                "{name}={text:?} is not a number from 0 to {}: unset it, or fix the \
                 orchestrator's setting",
                udpkit::limits::SEGMENTS
            ))),
        }
    };
    let found = if let Some(index) = var("JOB_COMPLETION_INDEX")? {
        let count = match args.segments {
            Some(n) => n as usize,
            None => var("UDPKIT_SEGMENTS")?.ok_or_else(|| {
                Error::Invalid(
                    "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but not how many \
                     agents share the run: give --segments N (the Job's completions) or \
                     UDPKIT_SEGMENTS"
                        .into(),
                )
            })?,
        };
        Some((index + 1, count, "JOB_COMPLETION_INDEX"))
    } else {
        match (var("SLURM_PROCID")?, var("SLURM_NTASKS")?) {
            (Some(index), Some(count)) => Some((index + 1, count, "SLURM_PROCID and SLURM_NTASKS")),
            (Some(_), None) => {
                return Err(Error::Invalid(
                    "SLURM_PROCID is set but not SLURM_NTASKS: not how many agents share the \
                     run; give --segment I/N"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                eprintln!(
                    "udpkit: note: SLURM_NTASKS is set but not SLURM_PROCID (not a task of \
                     srun): this agent runs the whole load; give --segment I/N to share it"
                );
                None
            }
            (None, None) => None,
        }
    };
    if found.is_none() {
        if args.segments.is_some() {
            return Err(Error::Invalid(
                "--segments N shares the run where JOB_COMPLETION_INDEX gives this agent's \
                 index, and it is not set: give --segment I/N"
                    .into(),
            ));
        }
        if std::env::var_os("UDPKIT_SEGMENTS").is_some() {
            eprintln!(
                "udpkit: note: UDPKIT_SEGMENTS is set but not JOB_COMPLETION_INDEX: this agent \
                 runs the whole load"
            );
        }
    }
    match found {
        Some((i, n, from)) if (1..=n).contains(&i) => {
            eprintln!("udpkit: this agent is segment {i}/{n} (from {from})");
            Ok(Some((i, n)))
        }
        Some((i, n, from)) => Err(Error::Invalid(format!(
            "{from} makes this agent {i} of {n}: the index is past the count"
        ))),
        None => Ok(None),
    }
}

/// Merges interval logs and prints the report.
pub fn merge(args: &MergeArgs) -> Result<bool, Error> {
    // The plot's file is made (privately, beside its place) before the work: a path that
    // cannot be written is said now.
    let plot_file = args.plot.as_deref().map(Output::create).transpose()?;
    let report = udpkit::merge::merge_files(&args.files)?;
    let text = if args.json {
        json::merge(&report) + "\n"
    } else {
        text::merge(&report)
    };
    io::stdout().write_all(text.as_bytes()).map_err(output)?;
    if let Some(mut file) = plot_file {
        let labels = text::merge_plot_labels(&report);
        let picture = udpkit::measure::plot::svg(&report.latency, 1e3, "µs", &labels);
        file.write(picture.as_bytes())?;
        file.commit()?;
    }
    Ok(report.complete)
}

/// Relays until SIGINT or SIGTERM, then prints the counters.
pub fn relay(args: &RelayArgs) -> Result<(), Error> {
    let relay = relay::Relay::bind(relay::Config {
        listen: net::resolve_host_port(&args.listen)?,
        to: net::resolve_host_port(&args.to)?,
        impair: udpkit::Impairment {
            drop: args.drop,
            duplicate: args.duplicate,
            reorder: args.reorder,
            delay: args.delay,
            jitter: args.jitter,
            rate: args.pps,
        },
        direction: args.direction,
        seed: args.seed,
        idle: args.idle,
        queue_bytes: args.queue_limit as usize * (1 << 20),
        rate_limit: args.rate_limit.unwrap_or(RateLimit::Auto),
        impair_from: args.impair_from,
    })?;
    let relay = std::sync::Arc::new(relay);
    let to = net::resolve_host_port(&args.to)?;
    // Before anyone is told it is ready: a signal from then on stops it with its summary.
    let stop = stop_on_signals();
    let endpoint = match args.metrics {
        Some(addr) => {
            let relay = std::sync::Arc::clone(&relay);
            Some(serve_metrics(
                addr,
                move || metrics::relay(&relay.counters()),
                &stop,
            )?)
        }
        None => None,
    };
    let mut out = io::stdout();
    let mut ready = serde_json::json!({
        "event": "ready",
        "tool": "relay",
        "address": net::shown(relay.local_addr()).to_string(),
        "to": net::shown(to).to_string(),
    });
    if let Some(e) = &endpoint {
        ready["metrics"] = e.local_addr().to_string().into();
    }
    write_ready(args.ready_file.as_deref(), ready)?;
    let line = if args.json {
        serde_json::json!({
            "event": "relaying",
            "address": net::shown(relay.local_addr()).to_string(),
            "to": net::shown(to).to_string(),
        })
        .to_string()
    } else {
        format!(
            "Relaying {} -> {}",
            net::shown(relay.local_addr()),
            net::shown(to)
        )
    };
    writeln!(out, "{line}").map_err(output)?;
    out.flush().map_err(output)?;
    let counters = relay.run(&stop)?;
    let line = if args.json {
        let mut v = serde_json::to_value(counters).expect("plain numbers serialize");
        v["event"] = "summary".into();
        v.to_string()
    } else {
        format!("Summary: {}", text::relay_summary(&counters))
    };
    stop.stop();
    if let Some(e) = endpoint {
        e.join();
    }
    writeln!(out, "{line}").map_err(output)
}

/// Lists the servers that answer a broadcast; fails (exit 1) when none does.
pub fn discover(args: &DiscoverArgs) -> Result<bool, Error> {
    let config = udpkit::discover::Config {
        wait: args.wait,
        ..udpkit::discover::Config::new(net::resolve(&args.broadcast, args.port)?)
    };
    // The window is short and ends by itself: Ctrl-C ends the process, as it always has.
    let report = udpkit::discover::discover(&config, &Stop::new(), |_| {})?;
    let text = if args.json {
        json::discover(report.broadcast, &report.servers) + "\n"
    } else {
        text::discover(report.broadcast, &report.servers, report.wait)
    };
    io::stdout().write_all(text.as_bytes()).map_err(output)?;
    Ok(!report.servers.is_empty())
}

/// Finds the path MTU to a server and prints it.
pub fn mtu(args: &MtuArgs) -> Result<(), Error> {
    let protocol = speaking(args.protocol, args.key_file.as_deref())?;
    let target = net::resolve(&args.host, args.port.unwrap_or(protocol.default_port()))?;
    let config = udpkit::mtu::Config {
        target,
        protocol,
        wait: args.wait,
    };
    let report = udpkit::mtu::mtu(&config, &stop_on_signals(), |_| {})?;
    let text = if args.json {
        json::mtu(&report) + "\n"
    } else {
        text::mtu(target, &report)
    };
    io::stdout().write_all(text.as_bytes()).map_err(output)
}

/// Writes a completion script for `args.shell`, generated from the same CLI definition.
pub fn completions(args: &CompletionsArgs) -> Result<(), Error> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let shell = match args.shell.as_str() {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        _ => Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "udpkit", &mut out);
    io::stdout().write_all(&out).map_err(output)
}

/// Writes the man page, generated from the same CLI definition: the main page (its
/// commands listed as sections of this page, not as pages of their own), the exit status,
/// then one section per subcommand.
pub fn man() -> Result<(), Error> {
    use clap::CommandFactory;
    let command = Cli::command();
    let mut out = Vec::new();
    let page = clap_mangen::Man::new(command.clone());
    page.render_title(&mut out)
        .and_then(|()| page.render_name_section(&mut out))
        .and_then(|()| page.render_synopsis_section(&mut out))
        .and_then(|()| page.render_description_section(&mut out))
        .and_then(|()| page.render_options_section(&mut out))
        .map_err(output)?;
    let roff = |text: &str| text.replace('\\', "\\\\").replace('-', "\\-");
    out.extend_from_slice(b".SH COMMANDS\n");
    let subcommands: Vec<_> = command
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .collect();
    for sub in &subcommands {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.extend_from_slice(
            format!(
                ".TP\n\\fBudpkit {}\\fR\n{} (section UDPKIT {} below)\n",
                sub.get_name(),
                roff(&about),
                sub.get_name().to_uppercase()
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(
        b".SH \"EXIT STATUS\"\n.TP\n0\nThe command did what was asked.\n.TP\n1\nIt ran, and \
          the answer is no: no reply, no server at that port, nothing found, figures \
          incomplete.\n.TP\n2\nAn error: a bad flag or value, a port in use, a file that \
          cannot be written.\n",
    );
    page.render_version_section(&mut out).map_err(output)?;
    for sub in subcommands {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.extend_from_slice(
            format!(
                ".SH \"UDPKIT {}\"\n{}\n",
                sub.get_name().to_uppercase(),
                roff(&about)
            )
            .as_bytes(),
        );
        let sub = sub.clone().bin_name(format!("udpkit {}", sub.get_name()));
        let page = clap_mangen::Man::new(sub);
        page.render_synopsis_section(&mut out)
            .and_then(|()| page.render_options_section(&mut out))
            .map_err(output)?;
    }
    io::stdout().write_all(&out).map_err(output)
}
