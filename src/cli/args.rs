//! What each subcommand takes, in clap's derive form, and the value parsers behind it.
//!
//! Promise: every flag is documented in `--help`; bad values are refused by the parser with
//! a one-line reason before anything touches the network.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use udpkit::addr::{DEFAULT_HOST, DEFAULT_PORT};
use udpkit::limits;
use udpkit::wire::Protocol;
use udpkit::{RateLimit, relay};

#[derive(Debug, Parser)]
#[command(
    name = "udpkit",
    version,
    about = "Send and receive UDP: the udp_local.py server and client, made robust",
    long_about = "Send and receive UDP: the server and client of udp_local.py (Foundations of \
                  Python Network Programming, chapter 2), with the same lines and the same \
                  bytes on the wire, made robust: the client retransmits with backoff and \
                  accepts only its server's replies; the server survives any datagram.",
    after_help = "Exit status: 0 when the command did what was asked; 1 when it ran and the \
                  answer is no (no reply, no server at that port, nothing found, figures \
                  incomplete); 2 for an error (a bad flag or value, a port in use, a file that \
                  cannot be written)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Answer every datagram with "Your data was N bytes long" (or echo it, or reflect it
    /// as a STAMP Session-Reflector: --protocol)
    Server(ServerArgs),
    /// Send one request (the time, or -m TEXT) and print the server's reply
    Client(ClientArgs),
    /// Measure round-trip time and loss to a server, as ping does
    Ping(PingArgs),
    /// Load a server: requests per second, loss and latency percentiles
    Bench(BenchArgs),
    /// Send a one-way stream at a rate (or, --reverse, have the server send one): how much
    /// gets through, loss, duplicates, reordering, jitter, as iperf3 -u does, over UDP alone
    Stream(StreamArgs),
    /// Find the servers on the local network: one request to a broadcast address
    Discover(DiscoverArgs),
    /// Find the largest datagram that reaches a server unfragmented (path MTU)
    Mtu(MtuArgs),
    /// Print a shell completion script (bash, zsh or fish) to standard output
    Completions(CompletionsArgs),
    /// Print udpkit's man page (roff) to standard output
    Man,
    /// Merge the interval logs of a run split over several `bench` agents (--hlog) into
    /// one exact report
    Merge(MergeArgs),
    /// Forward UDP between clients and a server, with loss, duplication, reordering,
    /// delay and rate limits applied on purpose (netem without root)
    Relay(RelayArgs),
    /// Probe UDP targets all the time and serve their loss, round trips and more as
    /// Prometheus metrics (and, with a [probe] section in --config, blackbox-style /probe)
    Monitor(MonitorArgs),
}

/// Where a metrics endpoint listens: HOST:PORT (127.0.0.1 unless told otherwise).
fn metrics_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    let text = if text.parse::<u16>().is_ok() {
        format!("127.0.0.1:{text}")
    } else {
        text.to_string()
    };
    text.parse().map_err(|_| {
        format!("'{text}' is not an address to listen on: give IP:PORT, like 127.0.0.1:9862")
    })
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Targets to probe, HOST:PORT each (more, each with its own settings, in --config)
    #[arg(value_name = "HOST:PORT")]
    pub targets: Vec<String>,
    /// A TOML file of targets (and of what /probe may do); re-read on SIGHUP, keeping the
    /// counters of targets that stay; a file that fails to load changes nothing
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// What the command line's targets speak: seed, echo, stamp or twamp-light
    #[arg(long = "protocol", value_name = "seed|echo|stamp|twamp-light", default_value = "seed", value_parser = protocol)]
    pub protocol: Protocol,
    /// Seconds between one target's probes (at least 0.01)
    #[arg(short = 'i', value_name = "SECS", default_value = "1", value_parser = seconds)]
    pub interval: Duration,
    /// Bytes in each probe (default: the protocol's; 38 for the seed, 72 for STAMP)
    #[arg(short = 's', value_name = "SIZE",
          value_parser = clap::value_parser!(u16).range(0..=65507))]
    pub size: Option<u16>,
    /// Seconds a probe waits for its reply before it counts as lost
    #[arg(short = 'W', value_name = "SECS", default_value = "1", value_parser = seconds)]
    pub timeout: Duration,
    /// Send COUNT probes to each of the command line's targets, then hold their figures
    /// (still served) until stopped (default: probe for ever)
    #[arg(short = 'c', value_name = "COUNT",
          value_parser = clap::value_parser!(u64).range(1..=limits::COUNT_MAX))]
    pub count: Option<u64>,
    #[command(flatten)]
    pub marking: MarkingArgs,
    /// Where to serve /metrics (and /probe): IP:PORT, or a port on 127.0.0.1; bind
    /// 0.0.0.0 or :: only where the network is yours
    #[arg(long = "metrics", value_name = "IP:PORT", default_value = "127.0.0.1:9862", value_parser = metrics_addr)]
    pub metrics: std::net::SocketAddr,
    /// Once serving, write FILE with one JSON object, {"event":"ready","metrics":...}
    /// (written whole, by rename)
    #[arg(long = "ready-file", value_name = "FILE")]
    pub ready_file: Option<std::path::PathBuf>,
    /// Print what happens (started, reloaded, stopped) as JSON objects, one a line
    #[arg(long = "json")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on: 127.0.0.1 (this host only), 0.0.0.0 or :: (all interfaces),
    /// ::1, one of this host's addresses, or a host name
    #[arg(default_value = DEFAULT_HOST)]
    pub host: String,
    /// UDP port to listen on; 0 picks a free one (printed). Default 1060, or 862 (STAMP's)
    /// with --protocol stamp or twamp-light
    #[arg(short = 'p', value_name = "PORT")]
    pub port: Option<u16>,
    /// What to answer: seed (the seed's sentence), echo (the datagram back unchanged, RFC
    /// 862), stamp (a STAMP Session-Reflector, RFC 8762/8972, unauthenticated mode, which
    /// also answers TWAMP-light senders) or twamp-light (RFC 5357 Appendix I)
    #[arg(long = "protocol", value_name = "seed|echo|stamp|twamp-light", default_value = "seed", value_parser = protocol)]
    pub protocol: Protocol,
    /// STAMP's authenticated mode (RFC 8762 §4.2.2, HMAC-SHA-256): the key, in
    /// hexadecimal (32 to 128 digits), in FILE, readable by its owner alone (chmod 600); never
    /// on the command line. Needs --protocol stamp
    #[arg(long = "key-file", value_name = "FILE")]
    pub key_file: Option<std::path::PathBuf>,
    /// STAMP: keep each session's own sequence numbers (a stateful reflector, RFC 8972),
    /// so that senders can tell loss on the way here from loss on the way back
    #[arg(long = "stateful")]
    pub stateful: bool,
    /// No line per datagram (errors and the summary are still printed)
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Serve with N sockets on the same port (SO_REUSEPORT), one thread each; with more
    /// than one, lines from different clients may interleave in any order
    #[arg(long = "threads", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=limits::THREADS_MAX as i64))]
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
    /// Serve the counters as Prometheus metrics on IP:PORT (or a port on 127.0.0.1), at
    /// /metrics
    #[arg(long = "metrics", value_name = "IP:PORT", value_parser = metrics_addr)]
    pub metrics: Option<std::net::SocketAddr>,
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
    /// Send replies to one client one at a time, without UDP segmentation offload (GSO:
    /// replies of one size to one client go out in one system call by default, where the
    /// kernel has it)
    #[arg(long = "no-gso")]
    pub no_gso: bool,
    /// Receive requests one at a time, without UDP receive offload (GRO: the kernel hands
    /// over a client's requests of one size together by default, where it has it)
    #[arg(long = "no-gro")]
    pub no_gro: bool,
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
    pub message: Option<std::ffi::OsString>,
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
    #[command(flatten)]
    pub to: TargetArgs,

    /// Stop after COUNT requests (default: until Ctrl-C)
    #[arg(short = 'c', value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Seconds between requests; 0 sends the next as soon as the reply (or timeout) comes
    #[arg(short = 'i', value_name = "SECS", default_value = "1", value_parser = seconds_or_zero)]
    pub interval: Duration,
    /// Bytes in each request; 33 or more carry a request ID (default 38; with STAMP 72,
    /// at least 44, and 64 or more carry udpkit's nonce)
    #[arg(short = 's', value_name = "SIZE",
          value_parser = clap::value_parser!(u16).range(0..=65507))]
    pub size: Option<u16>,
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
    #[command(flatten)]
    pub to: TargetArgs,

    /// Flows: sockets with a source port each
    #[arg(long = "flows", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=limits::FLOWS_MAX as i64))]
    pub flows: u16,
    /// Threads to spread the flows over, each with its own engine on its own core
    /// (figures merged; each thread has at least one flow)
    #[arg(long = "threads", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=limits::THREADS_MAX as i64))]
    pub threads: u16,
    /// Requests in flight per flow (closed loop; ignored with --rate)
    #[arg(long = "window", value_name = "W", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=limits::WINDOW_MAX as i64))]
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
    /// Bytes in each request; 33 or more carry a request ID (default 38; with STAMP 72,
    /// at least 44, and 64 or more carry udpkit's nonce)
    #[arg(short = 's', value_name = "SIZE",
          value_parser = clap::value_parser!(u16).range(0..=65507))]
    pub size: Option<u16>,
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
    /// Send requests one at a time, without UDP segmentation offload (GSO: a flow's
    /// requests of one size go out in one system call by default, where the kernel has it)
    #[arg(long = "no-gso")]
    pub no_gso: bool,
    /// Receive replies one at a time, without UDP receive offload (GRO: the kernel hands
    /// over replies of one size together by default, where it has it)
    #[arg(long = "no-gro")]
    pub no_gro: bool,
    /// This agent's share of a run split over N agents, I/N (I from 1): 1/N of --rate and
    /// of -n. Without it, taken from a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, with
    /// --segments N) or from Slurm (SLURM_PROCID and SLURM_NTASKS), and said
    #[arg(long = "segment", value_name = "I/N", value_parser = segment)]
    pub segment: Option<(usize, usize)>,
    /// How many agents share the run, where JOB_COMPLETION_INDEX gives the index (also
    /// from UDPKIT_SEGMENTS)
    #[arg(long = "segments", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=limits::SEGMENTS as i64))]
    pub segments: Option<u32>,
    /// Start at TIME, RFC 3339 (2026-11-25T12:00:00Z) or Unix seconds, at most a day
    /// ahead: agents given the same time start together; one that starts late says by how
    /// much and runs anyway
    #[arg(long = "start-at", value_name = "TIME", value_parser = start_time)]
    pub start_at: Option<(std::time::SystemTime, String)>,
    /// Write the latencies as an HdrHistogram interval log to FILE (one histogram a
    /// second, with the counters), for `udpkit merge`
    #[arg(long = "hlog", value_name = "FILE")]
    pub hlog: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The agents' interval logs (bench --hlog)
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<std::path::PathBuf>,
    /// Print the report as one JSON object (the keys of bench --json, with agents and
    /// per_second)
    #[arg(long = "json")]
    pub json: bool,
    /// Draw the merged latency by percentile as an SVG picture in FILE
    #[arg(long = "plot", value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    /// The server's address or host name (`udpkit server`, any --protocol)
    pub host: String,
    /// The server's UDP port
    #[arg(short = 'p', value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Bits a second of UDP payload, with K, M or G (1000s): 100M, 1.5G (iperf3's -b)
    #[arg(short = 'b', long = "bitrate", value_name = "BITS[KMG]", value_parser = bits_per_second, conflicts_with = "pps", default_value = "1M")]
    pub bitrate: f64,
    /// Datagrams a second, instead of -b (0.001 to 100000000; a server sends -R at most
    /// 1000000)
    #[arg(long = "pps", value_name = "N", value_parser = stream_pps)]
    pub pps: Option<f64>,
    /// Bytes of UDP payload in each datagram (34 to 65507)
    #[arg(short = 's', value_name = "SIZE", default_value_t = 1400,
          value_parser = clap::value_parser!(u16).range(34..=65507))]
    pub size: u16,
    /// Seconds to send for, at most 3600 (default 10, unless -n is given)
    #[arg(short = 'd', long = "duration", value_name = "SECS", value_parser = stream_seconds, conflicts_with = "count")]
    pub duration: Option<Duration>,
    /// Datagrams to send in all (at the rate, within an hour)
    #[arg(short = 'n', long = "count", value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// The server sends, to this client's own address and port (works from behind NAT)
    #[arg(short = 'R', long = "reverse")]
    pub reverse: bool,
    /// Seconds between interval reports, at least 0.1
    #[arg(short = 'i', long = "interval", value_name = "SECS", default_value = "1", value_parser = stream_interval)]
    pub interval: Duration,
    /// The TOS byte of every datagram this client sends (DSCP times 4 plus ECN), decimal
    /// or hexadecimal (0xb8)
    #[arg(long = "tos", value_name = "N", conflicts_with = "dscp", value_parser = tos_byte)]
    pub tos: Option<u8>,
    /// The DSCP of every datagram this client sends, 0 to 63
    #[arg(long = "dscp", value_name = "N", value_parser = clap::value_parser!(u8).range(0..=63))]
    pub dscp: Option<u8>,
    /// Send one datagram a system call, without UDP segmentation offload (and receive
    /// without GRO)
    #[arg(long = "no-gso")]
    pub no_gso: bool,
    /// Print the summary as one JSON object (with every interval)
    #[arg(long = "json", conflicts_with = "json_lines")]
    pub json: bool,
    /// Print one JSON object per interval as it ends, then the summary's
    #[arg(long = "json-lines")]
    pub json_lines: bool,
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
    #[arg(long = "pps", value_name = "PPS", value_parser = per_second)]
    pub pps: Option<f64>,
    /// Seed for the random choices, for a reproducible run
    #[arg(long = "seed", value_name = "N")]
    pub seed: Option<u64>,
    /// Impair only datagrams of at least this many bytes: smaller ones (a protocol's
    /// control messages, acknowledgements) pass untouched and uncounted
    #[arg(long = "impair-from", value_name = "BYTES", default_value_t = 0)]
    pub impair_from: usize,
    /// Impair requests (up), replies (down) or both
    #[arg(long = "direction", value_name = "up|down|both", default_value = "both", value_parser = direction)]
    pub direction: relay::Direction,
    /// Close a client's session after this many idle seconds (a session whose client sent
    /// only one datagram: after at most 5 s)
    #[arg(long = "idle", value_name = "SECS", default_value = "60", value_parser = seconds)]
    pub idle: Duration,
    /// Memory for datagrams waiting out --delay, --jitter or --pps, in MiB; what does not
    /// fit is dropped and counted ("queue full")
    #[arg(long = "queue-limit", value_name = "MIB", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub queue_limit: u32,
    /// Datagrams a second sent to each client prefix (IPv4 /24, IPv6 /56), or "off". By
    /// default 100 when listening beyond loopback, off on loopback: a relay that answers
    /// forged sources must not become a reflector (see SECURITY.md)
    #[arg(long = "rate-limit", value_name = "N|off", value_parser = rate_limit)]
    pub rate_limit: Option<RateLimit>,
    /// Once listening (and forwarding to --to), write FILE with one JSON object,
    /// {"event":"ready","address":...}: for scripts and tests that need the port chosen
    /// with --listen HOST:0 (written whole, by rename)
    #[arg(long = "ready-file", value_name = "FILE")]
    pub ready_file: Option<std::path::PathBuf>,
    /// Print the counters on exit as one JSON object
    #[arg(long = "json")]
    pub json: bool,
    /// Serve the counters as Prometheus metrics on IP:PORT (or a port on 127.0.0.1), at
    /// /metrics (updated once a second)
    #[arg(long = "metrics", value_name = "IP:PORT", value_parser = metrics_addr)]
    pub metrics: Option<std::net::SocketAddr>,
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
    /// The server's UDP port (default 1060, or 862 with --protocol stamp or twamp-light)
    #[arg(short = 'p', value_name = "PORT")]
    pub port: Option<u16>,
    /// What the server speaks: seed, echo (RFC 862), stamp (a STAMP reflector) or
    /// twamp-light (a TWAMP-light reflector)
    #[arg(long = "protocol", value_name = "seed|echo|stamp|twamp-light", default_value = "seed", value_parser = protocol)]
    pub protocol: Protocol,
    /// STAMP's authenticated mode (RFC 8762 §4.2.2, HMAC-SHA-256): the key, in
    /// hexadecimal (32 to 128 digits), in FILE, readable by its owner alone (chmod 600); never
    /// on the command line. Needs --protocol stamp
    #[arg(long = "key-file", value_name = "FILE")]
    pub key_file: Option<std::path::PathBuf>,
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

/// The server a load is aimed at, what it speaks, and how requests are marked.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The server's address or host name
    pub host: String,
    /// The server's UDP port (default 1060, or 862 with --protocol stamp or twamp-light)
    #[arg(short = 'p', value_name = "PORT")]
    pub port: Option<u16>,
    /// What the server speaks: seed (its sentence, with udpkit's request ID), echo (RFC 862:
    /// each request comes back unchanged), stamp (a STAMP Session-Reflector, RFC 8762) or
    /// twamp-light (a TWAMP-light reflector, RFC 5357 Appendix I)
    #[arg(long = "protocol", value_name = "seed|echo|stamp|twamp-light", default_value = "seed", value_parser = protocol)]
    pub protocol: Protocol,
    /// STAMP's authenticated mode (RFC 8762 §4.2.2, HMAC-SHA-256): the key, in
    /// hexadecimal (32 to 128 digits), in FILE, readable by its owner alone (chmod 600); never
    /// on the command line. Needs --protocol stamp
    #[arg(long = "key-file", value_name = "FILE")]
    pub key_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub marking: MarkingArgs,
}

/// How every request's IP header is marked.
#[derive(Debug, Args)]
pub struct MarkingArgs {
    /// The TOS byte (IPv4) or traffic class (IPv6) of every request, 0 to 255 or 0x00 to
    /// 0xff: DSCP times 4 plus ECN. With STAMP the reflector reports what arrived (RFC
    /// 8972's CoS TLV)
    #[arg(long = "tos", value_name = "N", conflicts_with = "dscp", value_parser = tos_byte)]
    pub tos: Option<u8>,
    /// The DSCP of every request, 0 to 63 (the TOS byte's high six bits, ECN 0), e.g. 46
    /// for Expedited Forwarding
    #[arg(long = "dscp", value_name = "N", value_parser = clap::value_parser!(u8).range(0..=63))]
    pub dscp: Option<u8>,
    /// The TTL (IPv4) or hop limit (IPv6) of every request, 1 to 255. With STAMP the
    /// reflector reports what arrived, which shows the hops on the way
    #[arg(long = "ttl", visible_alias = "hop-limit", value_name = "N",
          value_parser = clap::value_parser!(u8).range(1..))]
    pub ttl: Option<u8>,
}

impl MarkingArgs {
    /// The TOS byte asked for, by --tos or --dscp.
    pub fn tos(&self) -> Option<u8> {
        self.tos.or(self.dscp.map(|d| d << 2))
    }
}

/// A TOS byte as ping and iperf3 users type it: decimal (184) or hexadecimal (0xb8).
fn tos_byte(text: &str) -> Result<u8, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => text.parse::<u8>(),
    };
    parsed.map_err(|_| format!("{text:?} is not a TOS byte: give 0 to 255, or 0x00 to 0xff"))
}

/// seed, echo, stamp or twamp-light.
fn protocol(text: &str) -> Result<Protocol, String> {
    text.parse()
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
        Ok(ms) if (0.0..=limits::DELAY_MS_MAX).contains(&ms) => {
            Ok(Duration::from_secs_f64(ms / 1000.0))
        }
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

/// `I/N`, 1 <= I <= N.
fn segment(text: &str) -> Result<(usize, usize), String> {
    let parsed = text.split_once('/').and_then(|(i, n)| {
        Some((
            i.trim().parse::<usize>().ok()?,
            n.trim().parse::<usize>().ok()?,
        ))
    });
    match parsed {
        Some((i, n)) if i >= 1 && i <= n && n <= limits::SEGMENTS => Ok((i, n)),
        _ => Err(format!(
            "'{text}' is not a share I/N with 1 <= I <= N <= {} (try 2/3)",
            limits::SEGMENTS
        )),
    }
}

/// A wall-clock time: RFC 3339 or Unix seconds, at most `limits::START_AHEAD_MAX` from now;
/// with how it was written, to name the run.
fn start_time(text: &str) -> Result<(std::time::SystemTime, String), String> {
    let t = text.trim();
    let at = if let Ok(secs) = t.parse::<f64>() {
        Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| std::time::UNIX_EPOCH.checked_add(d))
            .ok_or_else(|| {
                format!("'{text}' is not a time: give Unix seconds from 0, or RFC 3339")
            })?
    } else {
        let ts: jiff::Timestamp = t.parse().map_err(|e| {
            format!("'{text}' is neither RFC 3339 (2026-11-25T12:00:00Z) nor Unix seconds ({e})")
        })?;
        let since = Duration::new(
            u64::try_from(ts.as_second()).map_err(|_| format!("'{text}' is before 1970"))?,
            ts.subsec_nanosecond().max(0) as u32,
        );
        std::time::UNIX_EPOCH
            .checked_add(since)
            .ok_or_else(|| format!("'{text}' is not a time this host can hold"))?
    };
    let now = std::time::SystemTime::now();
    if let Ok(past) = now.duration_since(at)
        && past > limits::START_AHEAD_MAX
    {
        return Err(format!(
            "'{text}' is {:.0} hours ago: give a time at most a day away (a late start runs \
             anyway, but not that late)",
            past.as_secs_f64() / 3600.0
        ));
    }
    let ahead = at.duration_since(now).unwrap_or_default();
    if ahead > limits::START_AHEAD_MAX {
        return Err(format!(
            "'{text}' is {:.0} hours away: give a time at most a day ahead",
            ahead.as_secs_f64() / 3600.0
        ));
    }
    Ok((at, t.to_string()))
}

/// Bits a second: a number with an optional K, M or G (powers of 1000).
fn bits_per_second(text: &str) -> Result<f64, String> {
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, ' '),
    };
    let scale = match unit {
        ' ' => 1.0,
        'K' => 1e3,
        'M' => 1e6,
        'G' => 1e9,
        _ => return Err(format!("'{text}': the unit is K, M or G (as in 100M)")),
    };
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n * scale <= limits::BITS_MAX => Ok(n * scale),
        _ => Err(format!(
            "'{text}' is not a rate in bits a second above zero and at most 1000G (try 100M or 1.5G)"
        )),
    }
}

/// A stream's datagrams a second, within `limits::STREAM_PPS_MIN..=STREAM_PPS_MAX`.
fn stream_pps(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(n) if (limits::STREAM_PPS_MIN..=limits::STREAM_PPS_MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{text}' is not a rate from {} to {} datagrams a second",
            limits::STREAM_PPS_MIN,
            limits::STREAM_PPS_MAX
        )),
    }
}

/// A stream's report interval: `limits::STREAM_INTERVAL_MIN` to a day.
fn stream_interval(text: &str) -> Result<Duration, String> {
    let d = seconds(text)?;
    if d < limits::STREAM_INTERVAL_MIN {
        return Err(format!(
            "{text} seconds is shorter than reports come: give at least {}",
            limits::STREAM_INTERVAL_MIN.as_secs_f64()
        ));
    }
    Ok(d)
}

/// A stream's duration: a millisecond to `limits::STREAM_DURATION_MAX`.
fn stream_seconds(text: &str) -> Result<Duration, String> {
    let d = seconds(text)?;
    if d > limits::STREAM_DURATION_MAX {
        return Err(format!(
            "{text} seconds is longer than a stream runs: give at most {}",
            limits::STREAM_DURATION_MAX.as_secs()
        ));
    }
    Ok(d)
}

/// A rate: from 0.001 to a billion a second.
fn per_second(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(n) if (limits::RATE_MIN..=limits::RATE_MAX).contains(&n) => Ok(n),
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
    limits::seconds(value).ok_or_else(|| {
        format!(
            "{text} seconds is out of range: give from {} to {}",
            limits::SECONDS_MIN,
            limits::SECONDS_MAX
        )
    })
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
        Ok(n) if (limits::RATE_MIN..=limits::RATE_MAX).contains(&n) => Ok(RateLimit::PerSecond(n)),
        _ => Err(format!(
            "'{text}' is neither 'off' nor a number of replies a second from {} to {}",
            limits::RATE_MIN,
            limits::RATE_MAX
        )),
    }
}
