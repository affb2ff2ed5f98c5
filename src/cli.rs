//! The command line: what each subcommand takes, in clap's derive form, and how it runs.
//!
//! Promise: every flag is documented in `--help`; bad values are refused by the parser with
//! a one-line reason before anything touches the network.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};

use udpkit::console::{self, Console};
use udpkit::net::{DEFAULT_HOST, DEFAULT_PORT};
use udpkit::{Backoff, Client, Config, Error, RateLimit, Server, Stop, net, timestamp};

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

/// A positive number of seconds, at most a day.
fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds (try 0.5)"))?;
    if !(value > 0.0 && value <= 86_400.0) {
        return Err(format!(
            "{text} seconds is out of range: give more than 0 and at most 86400"
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

fn output(source: io::Error) -> Error {
    Error::Output { source }
}

/// Runs the server until SIGINT or SIGTERM, then prints the summary.
pub fn server(args: &ServerArgs) -> Result<(), Error> {
    let server = Server::with_config(Config {
        threads: usize::from(args.threads),
        drop_rate: args.drop_rate,
        seed: args.seed,
        rate_limit: args.rate_limit.unwrap_or(RateLimit::Auto),
        ..Config::new(net::resolve(&args.host, args.port)?)
    })?;
    let mut out = io::stdout();
    writeln!(out, "{}", console::listening(server.local_addr())).map_err(output)?;
    out.flush().map_err(output)?;
    if server.receive_buffer() < net::SERVER_RECEIVE_BUFFER {
        eprintln!(
            "udpkit: note: the kernel granted a {} KiB receive buffer, less than the {} KiB \
             asked; bursts may be dropped (raise net.core.rmem_max)",
            server.receive_buffer() >> 10,
            net::SERVER_RECEIVE_BUFFER >> 10
        );
    }

    let stop = Stop::new();
    for signal in [SIGINT, SIGTERM] {
        // A second signal ends the process at once, should a stop ever hang.
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 1, stop.flag());
        let _ = signal_hook::flag::register(signal, stop.flag());
    }
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
        None => timestamp::time_message().into_bytes(),
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
    let reply = client.request(&message, &backoff, |attempt| {
        if attempt.number == 1 {
            say(console::assigned(client.local_addr()));
        }
        if args.verbose {
            say(console::waiting(attempt.wait));
        }
    });
    let reply = reply?;
    say(console::server_replied(reply.from, &reply.data));
    failed.map_or(Ok(()), |e| Err(output(e)))
}
