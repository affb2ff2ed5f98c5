//! The integration tests' harness (libtest-mimic): each test declares what it needs beyond
//! a Rust toolchain (root, the seed's script, a peer program, an IPv6 loopback, the
//! hdrhistogram Python package), and the harness checks before running it.
//!
//! Promise: a test whose needs are not met is reported by the runner itself as `ignored`,
//! with what it needs in its name's tag (`test [needs root] forged_icmp ... ignored`), so
//! every skip shows in the summary; under CI (`CI=true`), where `.ci/run` provides
//! everything, it fails instead, saying what was missing. A test never skips itself.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use libtest_mimic::{Arguments, Trial};

/// What a test needs beyond the toolchain.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// Root: raw sockets, network namespaces.
    Root,
    /// The seed's `udp_local.py` (`../shared/seed/`, or `$UDPKIT_SEED_SCRIPT`).
    Seed,
    /// A program on the `PATH`, in cargo's bin folder, or where `$UDPKIT_<NAME>` says.
    Tool(&'static str),
    /// A Python with the `hdrhistogram` package (`target/hdrh-venv`, or
    /// `$UDPKIT_HDRH_PYTHON`).
    Hdrh,
    /// An IPv6 loopback (`::1`).
    Ipv6,
}

impl Need {
    /// Whether it is met here; why not, where not.
    fn check(self) -> Result<(), String> {
        match self {
            Need::Root => {
                // SAFETY: geteuid has no preconditions.
                (unsafe { libc::geteuid() } == 0)
                    .then_some(())
                    .ok_or_else(|| "root".to_string())
            }
            Need::Seed => seed_script()
                .map(|_| ())
                .ok_or_else(|| "the seed's udp_local.py".to_string()),
            Need::Tool(name) => tool(name).map(|_| ()).ok_or_else(|| name.to_string()),
            Need::Hdrh => hdrh_python()
                .map(|_| ())
                .ok_or_else(|| "python's hdrhistogram".to_string()),
            Need::Ipv6 => std::net::UdpSocket::bind("[::1]:0")
                .map(|_| ())
                .map_err(|_| "an IPv6 loopback".to_string()),
        }
    }
}

/// One test: its name, its body, what it needs.
pub struct Case {
    pub name: &'static str,
    pub run: fn(),
    pub needs: &'static [Need],
}

/// Runs `cases` as the standard harness would (filters, `--list`, `--test-threads`, ...).
pub fn run(cases: Vec<Case>) -> ExitCode {
    super::cleanup::on_signals();
    let args = Arguments::from_args();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let trials = cases
        .into_iter()
        .map(|case| {
            let missing: Vec<String> = case.needs.iter().filter_map(|n| n.check().err()).collect();
            if missing.is_empty() {
                let run = case.run;
                return Trial::test(case.name, move || {
                    run();
                    Ok(())
                });
            }
            let why = format!("needs {}", missing.join(", "));
            if ci {
                // CI provides everything: a missing need is a failure, said.
                Trial::test(case.name, move || {
                    Err(format!("{why}, which CI must provide").into())
                })
            } else {
                let said = why.clone();
                Trial::test(case.name, move || Err(format!("cannot run: {said}").into()))
                    .with_ignored_flag(true)
                    .with_kind(why)
            }
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// The seed's `udp_local.py`: `$UDPKIT_SEED_SCRIPT`, or `../shared/seed/` beside the
/// checkout.
pub fn seed_script() -> Option<PathBuf> {
    std::env::var_os("UDPKIT_SEED_SCRIPT")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/seed/udp_local.py")])
        .find(|p| p.is_file())
}

/// A peer program: `$UDPKIT_<NAME>` (upper case, `-` as `_`), the `PATH`, or cargo's bin
/// folder.
pub fn tool(name: &str) -> Option<PathBuf> {
    let env = format!("UDPKIT_{}", name.to_uppercase().replace('-', "_"));
    let mut candidates: Vec<PathBuf> = std::env::var_os(env)
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    if let Some(cargo) = std::env::var_os("CARGO_HOME") {
        candidates.push(PathBuf::from(cargo).join("bin").join(name));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin").join(name));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// A Python with the `hdrhistogram` package: `$UDPKIT_HDRH_PYTHON`, or the venv `.ci/run`
/// makes in `target/hdrh-venv`.
pub fn hdrh_python() -> Option<PathBuf> {
    std::env::var_os("UDPKIT_HDRH_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/hdrh-venv/bin/python")])
        .find(|p| {
            Command::new(p)
                .args(["-c", "import hdrh"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// The test binary's `main`: each test function, with what it needs in brackets.
///
/// ```ignore
/// udpkit_tests! {
///     a_plain_test,
///     a_test_with_raw_sockets [Need::Root],
/// }
/// ```
#[macro_export]
macro_rules! udpkit_tests {
    ($($name:ident $([$($need:expr),* $(,)?])?),* $(,)?) => {
        fn main() -> std::process::ExitCode {
            common::harness::run(vec![$(
                common::harness::Case {
                    name: stringify!($name),
                    run: $name,
                    needs: &[$($($need),*)?],
                },
            )*])
        }
    };
}
