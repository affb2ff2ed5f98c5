//! The `udpkit` binary: parses the command line, runs the subcommand from the library, and
//! reports a failure as one line on stderr.
//!
//! Exit status, as ripgrep's: 0 when the command did what was asked; 1 when it ran and the
//! answer is no (no reply, no server at that port, nothing found, figures incomplete); 2
//! for an error (a bad flag or value, a port in use, a file that cannot be written).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => return cli::usage(&e),
    };
    // The documentation's tests check that every command line they show parses, without
    // running it.
    if std::env::var_os("UDPKIT_CHECK_ARGS").is_some() {
        return ExitCode::SUCCESS;
    }
    let result = match &args.command {
        cli::Command::Server(a) => cli::server(a).map(|()| true),
        cli::Command::Client(a) => cli::client(a).map(|()| true),
        cli::Command::Ping(a) => cli::ping(a),
        cli::Command::Bench(a) => cli::bench(a),
        cli::Command::Relay(a) => cli::relay(a).map(|()| true),
        cli::Command::Stream(a) => cli::stream(a),
        cli::Command::Merge(a) => cli::merge(a),
        cli::Command::Discover(a) => cli::discover(a),
        cli::Command::Mtu(a) => cli::mtu(a).map(|()| true),
        cli::Command::Completions(a) => cli::completions(a).map(|()| true),
        cli::Command::Man => cli::man().map(|()| true),
        cli::Command::Monitor(a) => cli::monitor(a).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        // The command ran and said so; its answer is no (ping: no reply at all).
        Ok(false) => ExitCode::from(1),
        // `udpkit server | head -1`: the reader has what it wanted.
        Err(e)
            if e.callback_error()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        // The CLI's callbacks write its output.
        Err(udpkit::Error::Callback { source }) => {
            eprintln!(
                "udpkit: cannot write output: {}",
                udpkit::error::plain(&source)
            );
            ExitCode::from(2)
        }
        // Ran, and the answer is no: nobody answered, or nobody listens there.
        Err(e @ (udpkit::Error::NoReply { .. } | udpkit::Error::Refused { .. })) => {
            eprintln!("udpkit: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("udpkit: {e}");
            ExitCode::from(2)
        }
    }
}
