//! The command line: what each subcommand takes, in clap's derive form, and how it runs.
//!
//! Promise: every flag is documented in `--help`; bad values are refused by the parser with
//! a one-line reason before anything touches the network.

pub mod console;

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use console::Console;
use udpkit::addr::{self as net, DEFAULT_HOST, DEFAULT_PORT};
use udpkit::{
    Backoff, Client, ClientEvent, Error, RateLimit, Server, ServerConfig, Stop, bench, ping, relay,
};

#[derive(Debug, Parser)]
#[command(
    name = "udpkit",
    version,
    about = "Send and receive UDP: the udp_local.py server and client, made robust",
    long_about = "Send and receive UDP: the server and client of udp_local.py (Foundations of \
                  Python Network Programming, chapter 2), with the same lines and the same \
                  bytes on the wire, made robust: the client retransmits with backoff and \
                  accepts only its server's replies; the server survives any datagram."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Answer every datagram with "Your data was N bytes long"
    Server(ServerArgs),
    /// Send one request (the time, or -m TEXT) and print the server's reply
    Client(ClientArgs),
    /// Measure round-trip time and loss to a server, as ping does
    Ping(PingArgs),
    /// Load a server: requests per second, loss and latency percentiles
    Bench(BenchArgs),
    /// Find the servers on the local network: one request to a broadcast address
    Discover(DiscoverArgs),
    /// Find the largest datagram that reaches a server unfragmented (path MTU)
    Mtu(MtuArgs),
    /// Print a shell completion script (bash, zsh or fish) to standard output
    Completions(CompletionsArgs),
    /// Print udpkit's man page (roff) to standard output
    Man,
    /// Forward UDP between clients and a server, with loss, duplication, reordering,
    /// delay and rate limits applied on purpose (netem without root)
    Relay(RelayArgs),
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on: 127.0.0.1 (this host only), 0.0.0.0 or :: (all interfaces),
    /// ::1, one of this host's addresses, or a host name
    #[arg(default_value = DEFAULT_HOST)]
    pub host: String,
    /// UDP port to listen on; 0 picks a free one (printed)
    #[arg(short = 'p', value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// No line per datagram (errors and the summary are still printed)
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Serve with N sockets on the same port (SO_REUSEPORT), one thread each; with more
    /// than one, lines from different clients may interleave in any order
    #[arg(long = "threads", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Print the counters every SECS seconds (they are always printed on exit)
    #[arg(long = "stats", value_name = "SECS", value_parser = seconds)]
    pub stats: Option<Duration>,
    /// Once listening, write FILE with one JSON object, {"event":"ready","address":...}:
    /// for scripts and tests that need the port chosen with -p 0 (written whole, by rename)
    #[arg(long = "ready-file", value_name = "FILE")]
    pub ready_file: Option<std::path::PathBuf>,
    /// Print the counters as JSON objects, one a line
    #[arg(long = "json")]
    pub json: bool,
    /// Ignore this share of datagrams at random, 0 to 1, saying
    /// "Pretending to drop packet from ADDR" (the book's udp_remote.py)
    #[arg(long = "drop-rate", value_name = "P", default_value = "0", value_parser = share)]
    pub drop_rate: f64,
    /// Seed for --drop-rate's random choices, for a reproducible run
    #[arg(long = "seed", value_name = "N")]
    pub seed: Option<u64>,
    /// Replies a second allowed per source prefix (IPv4 /24, IPv6 /56), or "off". By
    /// default 100 when listening beyond loopback, off on loopback (see SECURITY.md)
    #[arg(long = "rate-limit", value_name = "N|off", value_parser = rate_limit)]
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server's address or host name
    #[arg(default_value = DEFAULT_HOST)]
    pub host: String,
    /// The server's UDP port
    #[arg(short = 'p', value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Send TEXT instead of "The time is <local time>" (any bytes the shell can pass)
    #[arg(short = 'm', long = "message", value_name = "TEXT")]
    pub message: Option<OsString>,
    /// Seconds to wait for the first reply; each retransmission waits twice as long
    #[arg(short = 'W', long = "wait", value_name = "SECS", default_value = "0.1", value_parser = seconds)]
    pub wait: Duration,
    /// Give up once the next wait would be longer than this many seconds
    #[arg(long = "max-wait", value_name = "SECS", default_value = "2.0", value_parser = seconds)]
    pub max_wait: Duration,
    /// Print each wait ("Waiting up to 0.2 seconds for a reply")
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct PingArgs {
    /// The server's address or host name
    pub host: String,
    /// The server's UDP port
    #[arg(short = 'p', value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Stop after COUNT requests (default: until Ctrl-C)
    #[arg(short = 'c', value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Seconds between requests; 0 sends the next as soon as the reply (or timeout) comes
    #[arg(short = 'i', value_name = "SECS", default_value = "1", value_parser = seconds_or_zero)]
    pub interval: Duration,
    /// Bytes in each request; 33 or more carry a request ID
    #[arg(short = 's', value_name = "SIZE", default_value_t = 38,
          value_parser = clap::value_parser!(u16).range(0..=65507))]
    pub size: u16,
    /// Seconds to wait for each reply before counting it lost
    #[arg(short = 'W', value_name = "SECS", default_value = "1", value_parser = seconds)]
    pub timeout: Duration,
    /// Only the summary, no line per reply
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Print the summary as one JSON object
    #[arg(long = "json")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server's address or host name
    pub host: String,
    /// The server's UDP port
    #[arg(short = 'p', value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Flows: sockets with a source port each
    #[arg(long = "flows", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub flows: u16,
    /// Requests in flight per flow (closed loop; ignored with --rate)
    #[arg(long = "window", value_name = "W", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub window: u32,
    /// Seconds to send for (default 10, unless -n is given)
    #[arg(short = 'd', long = "duration", value_name = "SECS", value_parser = seconds, conflicts_with = "count")]
    pub duration: Option<Duration>,
    /// Requests to send in all
    #[arg(short = 'n', long = "count", value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Open loop: this many requests a second in all, paced across the flows; latency
    /// counts from when each request was meant to go
    #[arg(long = "rate", value_name = "RPS", value_parser = per_second)]
    pub rate: Option<f64>,
    /// Bytes in each request; 33 or more carry a request ID
    #[arg(short = 's', value_name = "SIZE", default_value_t = 38,
          value_parser = clap::value_parser!(u16).range(0..=65507))]
    pub size: u16,
    /// Seconds to wait for a reply before counting the request lost
    #[arg(short = 'W', value_name = "SECS", default_value = "1", value_parser = seconds)]
    pub timeout: Duration,
    /// Write the latency distribution (HdrHistogram's percentile text, in µs) to FILE
    #[arg(long = "histogram", value_name = "FILE")]
    pub histogram: Option<std::path::PathBuf>,
    /// Draw latency by percentile as an SVG picture in FILE
    #[arg(long = "plot", value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
    /// Print the summary as one JSON object
    #[arg(long = "json")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Address to listen on for clients, HOST:PORT (port 0: a free one, printed)
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    pub listen: String,
    /// The server to forward to, HOST:PORT
    #[arg(long = "to", value_name = "ADDR:PORT")]
    pub to: String,
    /// Drop this share of datagrams, 0 to 1
    #[arg(long = "drop", value_name = "P", default_value = "0", value_parser = share)]
    pub drop: f64,
    /// Send this share of datagrams twice
    #[arg(long = "duplicate", value_name = "P", default_value = "0", value_parser = share)]
    pub duplicate: f64,
    /// Hold this share of datagrams back until the next one has passed them
    #[arg(long = "reorder", value_name = "P", default_value = "0", value_parser = share)]
    pub reorder: f64,
    /// Delay every datagram by this many milliseconds
    #[arg(long = "delay", value_name = "MS", default_value = "0", value_parser = millis)]
    pub delay: Duration,
    /// Vary each delay by up to this many milliseconds either way
    #[arg(long = "jitter", value_name = "MS", default_value = "0", value_parser = millis)]
    pub jitter: Duration,
    /// Let at most this many datagrams a second through in each direction; more wait
    #[arg(long = "rate", value_name = "PPS", value_parser = per_second)]
    pub rate: Option<f64>,
    /// Seed for the random choices, for a reproducible run
    #[arg(long = "seed", value_name = "N")]
    pub seed: Option<u64>,
    /// Impair requests (up), replies (down) or both
    #[arg(long = "direction", value_name = "up|down|both", default_value = "both", value_parser = direction)]
    pub direction: relay::Direction,
    /// Close a client's session after this many idle seconds (a session whose client sent
    /// only one datagram: after at most 5 s)
    #[arg(long = "idle", value_name = "SECS", default_value = "60", value_parser = seconds)]
    pub idle: Duration,
    /// Memory for datagrams waiting out --delay, --jitter or --rate, in MiB; what does not
    /// fit is dropped and counted ("queue full")
    #[arg(long = "queue-limit", value_name = "MIB", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub queue_limit: u32,
    /// Datagrams a second sent to each client prefix (IPv4 /24, IPv6 /56), or "off". By
    /// default 100 when listening beyond loopback, off on loopback: a relay that answers
    /// forged sources must not become a reflector (see SECURITY.md)
    #[arg(long = "rate-limit", value_name = "N|off", value_parser = rate_limit)]
    pub rate_limit: Option<RateLimit>,
    /// Once listening (and forwarding to --to), write FILE with one JSON object, {"event":"ready","address":...}:
    /// for scripts and tests that need the port chosen with -p 0 (written whole, by rename)
    #[arg(long = "ready-file", value_name = "FILE")]
    pub ready_file: Option<std::path::PathBuf>,
    /// Print the counters on exit as one JSON object
    #[arg(long = "json")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// The broadcast address: 255.255.255.255 (this link), or a subnet's, like 192.0.2.255
    #[arg(default_value = "255.255.255.255")]
    pub broadcast: String,
    /// The servers' UDP port
    #[arg(short = 'p', value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Seconds to wait for answers
    #[arg(short = 'W', value_name = "SECS", default_value = "1", value_parser = seconds)]
    pub wait: Duration,
    /// Print one JSON object: {"servers": [{"address": ..., "rtt_ms": ...}, ...]}
    #[arg(long = "json")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MtuArgs {
    /// The server's address or host name
    pub host: String,
    /// The server's UDP port
    #[arg(short = 'p', value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Seconds to wait for each try of a probe. A size is called too big only after enough
    /// unanswered tries, given the loss measured on sizes that pass, to be wrong less than
    /// once in a thousand; a path too lossy for that is reported as undecidable
    #[arg(short = 'W', value_name = "SECS", default_value = "0.2", value_parser = seconds)]
    pub wait: Duration,
    /// Print one JSON object: payload, path_mtu, kernel_mtu, probes, authenticated,
    /// answered_share, tries_to_fail, forged, icmp_errors
    #[arg(long = "json")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh or fish (e.g. `udpkit completions bash > /etc/bash_completion.d/udpkit`)
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
}

/// Milliseconds, zero or more.
fn millis(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(ms) if (0.0..=3_600_000.0).contains(&ms) => Ok(Duration::from_secs_f64(ms / 1000.0)),
        _ => Err(format!(
            "'{text}' is not a number of milliseconds from 0 to 3600000"
        )),
    }
}

fn direction(text: &str) -> Result<relay::Direction, String> {
    match text {
        "up" => Ok(relay::Direction::Up),
        "down" => Ok(relay::Direction::Down),
        "both" => Ok(relay::Direction::Both),
        _ => Err(format!("'{text}' is not up, down or both")),
    }
}

/// A rate: from 0.001 to a billion a second.
fn per_second(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(n) if (0.001..=1e9).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{text}' is not a rate from 0.001 to 1000000000 a second"
        )),
    }
}

/// A number of seconds from a millisecond to a day.
fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds (try 0.5)"))?;
    if !(0.001..=86_400.0).contains(&value) {
        return Err(format!(
            "{text} seconds is out of range: give from 0.001 to 86400"
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

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

/// Zero, or a positive number of seconds up to a day.
fn seconds_or_zero(text: &str) -> Result<Duration, String> {
    if text.parse::<f64>() == Ok(0.0) {
        return Ok(Duration::ZERO);
    }
    seconds(text)
}

/// A probability: a number from 0 to 1.
fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("'{text}' is not a share from 0 to 1 (try 0.25)")),
    }
}

/// `off`, or a positive number of replies a second.
fn rate_limit(text: &str) -> Result<RateLimit, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(RateLimit::Off);
    }
    match text.parse::<f64>() {
        Ok(n) if n > 0.0 && n.is_finite() => Ok(RateLimit::PerSecond(n)),
        _ => Err(format!(
            "'{text}' is neither 'off' nor a positive number of replies a second"
        )),
    }
}

/// A stop handle set by SIGINT, SIGTERM or SIGHUP (a closed terminal): long-running
/// commands then stop within a second and print what they have. A second signal ends the
/// process at once, should a stop ever hang.
fn stop_on_signals() -> Stop {
    let stop = Stop::new();
    let wake = stop.signal_pipe().ok();
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 1, stop.flag());
        let _ = signal_hook::flag::register(signal, stop.flag());
        // The same signal writes a byte to the stop's pipe: every waiting loop wakes now.
        if let Some(pipe) = wake.as_ref().and_then(|p| p.try_clone().ok()) {
            let _ = signal_hook::low_level::pipe::register(signal, pipe);
        }
    }
    stop
}

/// Writes the ready event to `path`, whole: to a file beside it, then renamed, so that a
/// reader never sees half of it.
fn write_ready(path: Option<&std::path::Path>, event: serde_json::Value) -> Result<(), Error> {
    let Some(path) = path else { return Ok(()) };
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let failed = |e| Error::io(format!("cannot write the ready file {}", path.display()), e);
    std::fs::write(&partial, format!("{event}\n")).map_err(failed)?;
    std::fs::rename(&partial, path).map_err(failed)
}

fn output(source: io::Error) -> Error {
    Error::Callback { source }
}

/// Runs the server until SIGINT or SIGTERM, then prints the summary.
pub fn server(args: &ServerArgs) -> Result<(), Error> {
    let server = Server::with_config(ServerConfig {
        threads: usize::from(args.threads),
        drop_rate: args.drop_rate,
        seed: args.seed,
        rate_limit: args.rate_limit.unwrap_or(RateLimit::Auto),
        ..ServerConfig::new(net::resolve(&args.host, args.port)?)
    })?;
    let mut out = io::stdout();
    write_ready(
        args.ready_file.as_deref(),
        serde_json::json!({
            "event": "ready",
            "tool": "server",
            "address": net::shown(server.local_addr()).to_string(),
        }),
    )?;
    writeln!(out, "{}", console::listening(server.local_addr())).map_err(output)?;
    out.flush().map_err(output)?;
    if server.receive_buffer() < udpkit::serve::RECEIVE_BUFFER {
        eprintln!(
            "udpkit: note: the kernel granted a {} KiB receive buffer, less than the {} KiB \
             asked; bursts may be dropped (raise net.core.rmem_max)",
            server.receive_buffer() >> 10,
            udpkit::serve::RECEIVE_BUFFER >> 10
        );
    }

    let stop = stop_on_signals();
    let started = Instant::now();
    let line_by_line = io::stdout().is_terminal();
    let report = |event: &str| {
        let stats = server.stats();
        let seconds = started.elapsed().as_secs_f64();
        let line = if args.json {
            stats.to_json(event, seconds)
        } else {
            let label = if event == "summary" {
                "Summary"
            } else {
                "Stats"
            };
            format!("{label} after {seconds:.1} s: {}", stats.describe())
        };
        writeln!(io::stdout(), "{line}").map_err(output)
    };
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            server.run(&stop, || {
                Console::new(io::stdout(), io::stderr(), args.quiet, line_by_line)
            })
        });
        let mut next = args.stats.map(|period| (started + period, period));
        while !worker.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
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
    report("summary")
}

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
    let reply = client.request(&message, &backoff, |event| match event {
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
    let target = net::resolve(&args.host, args.port)?;
    let config = ping::Config {
        target,
        count: args.count,
        interval: args.interval,
        size: usize::from(args.size),
        timeout: args.timeout,
    };
    let shown = net::shown(target);
    let mut out = io::stdout();
    if !args.json {
        writeln!(out, "PING {shown}: {} data bytes", config.size).map_err(output)?;
    }
    let stop = stop_on_signals();
    let lines = !args.quiet && !args.json;
    let report = ping::ping(&config, &stop, |event| {
        let line = match *event {
            ping::Event::Reply {
                seq,
                bytes,
                rtt,
                late,
                duplicate,
                verified,
            } => {
                let mut mark = String::new();
                if duplicate {
                    mark.push_str(" (DUP!)");
                } else if late {
                    mark.push_str(" (late)");
                }
                if !verified {
                    mark.push_str(" (unverified)");
                }
                let ms = rtt.as_secs_f64() * 1e3;
                format!("{bytes} bytes from {shown}: seq={seq} time={ms:.3} ms{mark}")
            }
            ping::Event::Unreachable { seq, kind } => {
                format!("From {shown}: seq={seq} {}", kind.as_str())
            }
            ping::Event::Forged => {
                format!("Ignored a forged reply from {shown} (no or wrong request ID)")
            }
            ping::Event::Bad => format!("Ignored a datagram from {shown} that answers no request"),
            ping::Event::Unverified => format!(
                "Note: {shown} does not repeat request IDs (the seed's protocol): each reply is \
                 matched by the length it names, and cannot be authenticated"
            ),
            ping::Event::Revoked { count } => format!(
                "Note: {shown} repeats request IDs: {count} earlier replies without one were forged and are not counted"
            ),
        };
        let always =
            matches!(event, ping::Event::Unverified | ping::Event::Revoked { .. }) && !args.json;
        if lines || always {
            writeln!(io::stdout(), "{line}")
        } else {
            Ok(())
        }
    })?;
    let text = if args.json {
        report.to_json() + "\n"
    } else {
        format!("\n{}", report.describe())
    };
    out.write_all(text.as_bytes()).map_err(output)?;
    Ok(report.tally.received > 0)
}

/// Loads the server and prints the report; fails (exit 1) when no reply came at all.
pub fn bench(args: &BenchArgs) -> Result<bool, Error> {
    let config = bench::Config {
        target: net::resolve(&args.host, args.port)?,
        flows: usize::from(args.flows),
        window: args.window as usize,
        duration: match (args.duration, args.count) {
            (None, None) => Some(Duration::from_secs(10)),
            (d, _) => d,
        },
        count: args.count,
        rate: args.rate,
        size: usize::from(args.size),
        timeout: args.timeout,
    };
    // Output files are opened before the run: a path that cannot be written is said now,
    // not after a long benchmark.
    let create = |path: &std::path::PathBuf| {
        std::fs::File::create(path).map_err(|e| {
            Error::io(
                format!(
                    "cannot write {} (checked before the run, so nothing was sent)",
                    path.display()
                ),
                e,
            )
        })
    };
    let histogram_file = args.histogram.as_ref().map(create).transpose()?;
    let plot_file = args.plot.as_ref().map(create).transpose()?;
    let stop = stop_on_signals();
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
    // The report first: a file that fails to write afterwards never loses it.
    let text = if args.json {
        report.to_json() + "\n"
    } else {
        report.describe()
    };
    io::stdout().write_all(text.as_bytes()).map_err(output)?;
    if let (Some(mut file), Some(path)) = (histogram_file, &args.histogram) {
        report
            .latency
            .write_distribution(&mut file, 1e3)
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    }
    if let (Some(mut file), Some(path)) = (plot_file, &args.plot) {
        let title = format!(
            "udpkit bench {}: latency by percentile",
            net::shown(config.target)
        );
        file.write_all(report.latency.svg(1e3, "µs", &title).as_bytes())
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    }
    Ok(report.tally.received > 0)
}

/// Relays until SIGINT or SIGTERM, then prints the counters.
pub fn relay(args: &RelayArgs) -> Result<(), Error> {
    let relay = relay::Relay::bind(relay::Config {
        listen: net::resolve_host_port(&args.listen)?,
        to: net::resolve_host_port(&args.to)?,
        impair: udpkit::impair::Settings {
            drop: args.drop,
            duplicate: args.duplicate,
            reorder: args.reorder,
            delay: args.delay,
            jitter: args.jitter,
            rate: args.rate,
        },
        direction: args.direction,
        seed: args.seed,
        idle: args.idle,
        queue_bytes: args.queue_limit as usize * (1 << 20),
        rate_limit: args.rate_limit.unwrap_or(RateLimit::Auto),
    })?;
    let to = net::resolve_host_port(&args.to)?;
    let mut out = io::stdout();
    write_ready(
        args.ready_file.as_deref(),
        serde_json::json!({
            "event": "ready",
            "tool": "relay",
            "address": net::shown(relay.local_addr()).to_string(),
            "to": net::shown(to).to_string(),
        }),
    )?;
    writeln!(
        out,
        "Relaying {} -> {}",
        net::shown(relay.local_addr()),
        net::shown(to)
    )
    .map_err(output)?;
    out.flush().map_err(output)?;
    let stop = stop_on_signals();
    let counters = relay.run(&stop)?;
    let line = if args.json {
        serde_json::to_string(&counters).expect("plain numbers serialize")
    } else {
        format!("Summary: {}", counters.describe())
    };
    writeln!(out, "{line}").map_err(output)
}

/// Lists the servers that answer a broadcast; fails (exit 1) when none does.
pub fn discover(args: &DiscoverArgs) -> Result<bool, Error> {
    let broadcast = net::resolve(&args.broadcast, args.port)?;
    let found = udpkit::discover::discover(broadcast, args.wait)?;
    let unverified = found.iter().filter(|f| !f.verified).count();
    let text = if args.json {
        #[derive(serde::Serialize)]
        struct Server {
            address: String,
            rtt_ms: f64,
            verified: bool,
        }
        #[derive(serde::Serialize)]
        struct Json {
            broadcast: String,
            servers: Vec<Server>,
            unverified: usize,
        }
        let json = Json {
            broadcast: broadcast.to_string(),
            servers: found
                .iter()
                .map(|f| Server {
                    address: f.address.to_string(),
                    rtt_ms: f.rtt.as_nanos() as f64 / 1e6,
                    verified: f.verified,
                })
                .collect(),
            unverified,
        };
        serde_json::to_string(&json).expect("plain values serialize") + "\n"
    } else {
        let mut text = String::new();
        for f in &found {
            text.push_str(&format!(
                "{}  time={:.3} ms{}\n",
                f.address,
                f.rtt.as_secs_f64() * 1e3,
                if f.verified {
                    ""
                } else {
                    "  (unverified: no request ID)"
                }
            ));
        }
        let n = found.len();
        text.push_str(&format!(
            "{n} server{} answered {broadcast} within {} s",
            if n == 1 { "" } else { "s" },
            args.wait.as_secs_f64()
        ));
        if unverified > 0 {
            text.push_str(&format!(
                "; {unverified} unverified (the seed's sentence without the request's ID: \
                 anyone could have sent it)"
            ));
        }
        text.push('\n');
        text
    };
    io::stdout().write_all(text.as_bytes()).map_err(output)?;
    Ok(!found.is_empty())
}

/// Finds the path MTU to a server and prints it.
pub fn mtu(args: &MtuArgs) -> Result<(), Error> {
    let target = net::resolve(&args.host, args.port)?;
    let report = udpkit::mtu::mtu(target, args.wait)?;
    let text = if args.json {
        serde_json::to_string(&report).expect("plain values serialize") + "\n"
    } else {
        let kernel = report
            .kernel_mtu
            .map_or("unknown".to_string(), |m| m.to_string());
        let mut text = format!(
            "{}: largest answered payload {} bytes, path MTU {} bytes (kernel's MTU for the route: {kernel}; {} probes, {:.0}% of tries answered)\n",
            net::shown(target),
            report.payload,
            report.path_mtu,
            report.probes,
            report.answered_share * 100.0,
        );
        if report.kernel_mtu.is_some_and(|k| k != report.path_mtu) {
            text.push_str(
                "Note: the kernel's figure differs from what the probes found; the probes' is \
                 what came back answered (the kernel's comes from ICMP, which anyone can forge)\n",
            );
        }
        if !report.authenticated {
            text.push_str(
                "Note: the server does not repeat request IDs: its answers cannot be \
                 authenticated, and a forger who guesses the port could have made a size pass\n",
            );
        }
        if report.forged > 0 || report.icmp_errors > 0 {
            text.push_str(&format!(
                "Ignored {} forged replies and {} ICMP errors\n",
                report.forged, report.icmp_errors
            ));
        }
        text
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

/// Writes the man page, generated from the same CLI definition: the main page, then one
/// section per subcommand.
pub fn man() -> Result<(), Error> {
    use clap::CommandFactory;
    let command = Cli::command();
    let mut out = Vec::new();
    let render = |cmd: clap::Command, out: &mut Vec<u8>| clap_mangen::Man::new(cmd).render(out);
    render(command.clone(), &mut out).map_err(output)?;
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.extend_from_slice(
            format!(
                ".SH \"UDPKIT {}\"\n{about}\n",
                sub.get_name().to_uppercase()
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
