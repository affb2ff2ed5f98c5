//! The command line, the binary's front end over the library: arguments (`args`), how each
//! subcommand runs (`run`), and every word and JSON object it prints (`text`, `json`, and
//! the server's `console`). Nothing here is part of the library.

mod args;
pub mod console;
mod json;
mod monitor;
mod output;
mod printer;
mod run;
mod text;

pub use args::{Cli, Command};
pub use monitor::monitor;
pub use run::{bench, client, completions, discover, man, merge, mtu, ping, relay, server, stream};

/// Says what is wrong with the command line, in one line on stderr naming the flag, and
/// exits 2; help and version go to stdout and exit 0.
pub fn usage(e: &clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            std::process::ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            std::process::ExitCode::from(2)
        }
        _ => {
            eprintln!("udpkit: {}", one_line(&e.to_string()));
            std::process::ExitCode::from(2)
        }
    }
}

/// Clap's message without its usage and tips: the part before the first blank line, on
/// one line, with a pointer to the help.
fn one_line(text: &str) -> String {
    let head = text.split("\n\n").next().unwrap_or(text);
    let joined = head
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let message = joined.strip_prefix("error: ").unwrap_or(&joined);
    format!("{message} (see --help)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn refusal(args: &[&str]) -> String {
        let e = Cli::try_parse_from(args).unwrap_err();
        one_line(&e.to_string())
    }

    #[test]
    fn a_refused_value_is_one_line_naming_the_flag() {
        let text = refusal(&["udpkit", "stream", "h", "-b", "nan"]);
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("--bitrate"), "{text}");
        let text = refusal(&["udpkit", "ping"]);
        assert!(text.contains("<HOST>"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
}
