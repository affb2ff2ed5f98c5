//! The command line, the binary's front end over the library: arguments (`args`), how each
//! subcommand runs (`run`), and every word and JSON object it prints (`text`, `json`, and
//! the server's `console`). Nothing here is part of the library.

mod args;
pub mod console;
mod json;
mod run;
mod text;

pub use args::{Cli, Command};
pub use run::{bench, client, completions, discover, man, merge, mtu, ping, relay, server, stream};
