//! The command line: what each subcommand takes, in clap's derive form, and how it runs.
//!
//! Promise: every flag is documented in `--help`; bad values are refused by the parser with
//! a one-line reason before anything touches the network.

use std::ffi::OsString;
use std::io::{self, Write};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use udpkit::console::{self, Console};
use udpkit::net::{DEFAULT_HOST, DEFAULT_PORT};
use udpkit::{Backoff, Client, Error, Server, Stop, net, timestamp};

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

fn output(source: io::Error) -> Error {
    Error::Output { source }
}

/// Runs the seed's server until the process is stopped.
pub fn server(args: &ServerArgs) -> Result<(), Error> {
    let server = Server::bind(net::resolve(&args.host, args.port)?)?;
    let mut out = io::stdout().lock();
    writeln!(out, "{}", console::listening(server.local_addr())).map_err(output)?;
    out.flush().map_err(output)?;
    server.run(&Stop::new(), &mut Console::new(out, io::stderr()))
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
