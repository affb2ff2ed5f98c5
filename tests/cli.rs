//! The command line as documentation: help for every subcommand, completions and the man
//! page generated from the same definition, and clear refusals of bad values.

mod common;

use common::*;

const SUBCOMMANDS: [&str; 9] = [
    "server",
    "client",
    "ping",
    "bench",
    "discover",
    "mtu",
    "relay",
    "completions",
    "man",
];

fn every_subcommand_has_help() {
    for sub in SUBCOMMANDS {
        let mut cmd = udpkit();
        cmd.args([sub, "--help"]);
        let out = run(cmd);
        assert!(out.status.success(), "{sub}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("Usage: udpkit "),
            "{sub}: {}",
            stdout(&out)
        );
    }
}

fn completions_cover_every_subcommand_in_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let mut cmd = udpkit();
        cmd.args(["completions", shell]);
        let out = run(cmd);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let text = stdout(&out);
        for sub in SUBCOMMANDS {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
}

fn the_man_page_documents_every_subcommand() {
    let mut cmd = udpkit();
    cmd.arg("man");
    let out = run(cmd);
    assert!(out.status.success());
    let page = stdout(&out);
    assert!(page.contains(".TH udpkit 1"), "{page}");
    for sub in SUBCOMMANDS
        .iter()
        .filter(|s| **s != "man" && **s != "completions")
    {
        assert!(
            page.contains(&format!(".SH \"UDPKIT {}\"", sub.to_uppercase())),
            "no section for {sub}"
        );
    }
}

fn bad_values_are_refused_with_the_reason() {
    for (args, reason) in [
        (&["server", "-p", "70000"][..], "70000 is not in 0..=65535"),
        (
            &["server", "--drop-rate", "2"],
            "is not a share from 0 to 1",
        ),
        (
            &["server", "--rate-limit", "fast"],
            "neither 'off' nor a number of replies a second",
        ),
        (&["client", "--wait", "0"], "out of range"),
        (
            &["ping", "127.0.0.1", "-s", "70000"],
            "70000 is not in 0..=65507",
        ),
        (
            &["relay", "--listen", "127.0.0.1", "--to", "127.0.0.1:1"],
            "give HOST:PORT",
        ),
    ] {
        let mut cmd = udpkit();
        cmd.args(args);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(reason), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}

/// Every flag that takes a number, by subcommand, with arguments that make a run with a
/// valid value end at once (a closed port on loopback, one request, short waits). Servers
/// and relays run until stopped: a valid value is seen running and then stopped.
const NUMERIC: &[(&str, &[&str], &[&str])] = &[
    (
        "server",
        &[
            "-p",
            "--threads",
            "--stats",
            "--drop-rate",
            "--seed",
            "--rate-limit",
            "--metrics",
        ],
        &["-q"],
    ),
    ("client", &["-p", "-W", "--max-wait"], &["127.0.0.1"]),
    (
        "ping",
        &["-p", "--tos", "--dscp", "--ttl", "-c", "-i", "-s", "-W"],
        &["127.0.0.1"],
    ),
    (
        "bench",
        &[
            "-p",
            "--tos",
            "--dscp",
            "--ttl",
            "--flows",
            "--threads",
            "--window",
            "-d",
            "-n",
            "--rate",
            "-s",
            "-W",
            "--segment",
            "--segments",
            "--start-at",
        ],
        &["127.0.0.1"],
    ),
    (
        "stream",
        &[
            "-p", "-b", "--pps", "-s", "-d", "-n", "-i", "--tos", "--dscp",
        ],
        &["127.0.0.1"],
    ),
    ("discover", &["-p", "-W"], &["127.255.255.255"]),
    ("mtu", &["-p", "-W"], &["127.0.0.1"]),
    (
        "relay",
        &[
            "--drop",
            "--duplicate",
            "--reorder",
            "--delay",
            "--jitter",
            "--pps",
            "--seed",
            "--impair-from",
            "--idle",
            "--queue-limit",
            "--rate-limit",
            "--metrics",
        ],
        &["--listen", "127.0.0.1:0", "--to", "127.0.0.1:9"],
    ),
    (
        "monitor",
        &[
            "-i",
            "-s",
            "-W",
            "-c",
            "--tos",
            "--dscp",
            "--ttl",
            "--metrics",
        ],
        &["127.0.0.1:9"],
    ),
];

/// What every numeric flag is tried with: extremes that no flag takes, and some that a few
/// do (0 for a port, 1e-300 for a share, u64::MAX for a seed).
const REFUSED_BY_ALL: &[&str] = &["-1", "NaN", "inf", "-inf", "1e300", "", "abc"];
const SOMETIMES: &[&str] = &[
    "0",
    "1e-300",
    "18446744073709551615",
    "1e19",
    "65536",
    "0.0001",
];

/// The arguments that keep a valid run short, where the flag under test does not set them.
fn quick(sub: &str, flag: &str) -> Vec<&'static str> {
    let mut args: Vec<&'static str> = Vec::new();
    let unless = |f: &str, given: &[&'static str], args: &mut Vec<&'static str>| {
        if flag != f {
            args.extend_from_slice(given);
        }
    };
    match sub {
        "client" | "ping" | "bench" | "stream" | "discover" | "mtu" => {
            unless("-p", &["-p", "9"], &mut args)
        }
        "server" => unless("-p", &["-p", "0"], &mut args),
        // Never the default port: a fixed one.
        "monitor" => unless("--metrics", &["--metrics", "127.0.0.1:0"], &mut args),
        _ => {}
    }
    match sub {
        "client" => {
            unless("-W", &["-W", "0.05"], &mut args);
            unless("--max-wait", &["--max-wait", "0.1"], &mut args);
        }
        "ping" => {
            unless("-c", &["-c", "1"], &mut args);
            unless("-W", &["-W", "0.1"], &mut args);
            unless("-i", &["-i", "0.01"], &mut args);
        }
        "bench" => {
            if !["-n", "-d"].contains(&flag) {
                args.extend_from_slice(&["-n", "1"]);
            }
            unless("-W", &["-W", "0.1"], &mut args);
        }
        "stream" => {
            if !["-n", "-d"].contains(&flag) {
                args.extend_from_slice(&["-n", "1"]);
            }
            if !["-b", "--pps"].contains(&flag) {
                args.extend_from_slice(&["--pps", "1000"]);
            }
        }
        "discover" | "mtu" => unless("-W", &["-W", "0.05"], &mut args),
        _ => {}
    }
    args
}

/// Runs `udpkit SUB BASE.. FLAG VALUE QUICK..` for at most a few seconds; its exit code
/// (None: still running when stopped, which a server or a valid long wait may be) and stderr.
fn try_value(sub: &str, base: &[&str], flag: &str, value: &str) -> (Option<i32>, String) {
    let mut cmd = udpkit();
    cmd.arg(sub)
        .args(base)
        .arg(flag)
        .arg(value)
        .args(quick(sub, flag))
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("SLURM_PROCID");
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let limit = if matches!(sub, "server" | "relay" | "monitor") {
        0.5
    } else {
        4.0
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(limit);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let mut err = String::new();
    use std::io::Read as _;
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    match status {
        None => (None, err),
        Some(status) => {
            use std::os::unix::process::ExitStatusExt;
            assert!(
                status.signal().is_none(),
                "udpkit {sub} {flag} {value:?} died of signal {:?}: {err}",
                status.signal()
            );
            (status.code(), err)
        }
    }
}

/// The other name of `flag` in `udpkit SUB --help` (`-W` and `--wait`), if it has one.
fn other_name(sub: &str, flag: &str) -> Option<String> {
    let out = run({
        let mut c = udpkit();
        c.args([sub, "--help"]);
        c
    });
    stdout(&out).lines().find_map(|line| {
        let names = line.trim_start().split(" <").next()?;
        let (short, long) = names.split_once(", ")?;
        match flag {
            f if f == short => Some(long.to_string()),
            f if f == long => Some(short.to_string()),
            _ => None,
        }
    })
}

fn every_numeric_flag_takes_extremes_without_a_panic_and_refuses_in_one_line() {
    let mut cases = Vec::new();
    for (sub, flags, base) in NUMERIC {
        for flag in *flags {
            for value in REFUSED_BY_ALL.iter().chain(SOMETIMES) {
                cases.push((*sub, *base, *flag, *value));
            }
        }
    }
    let failures = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(sub, base, flag, value)) = cases.get(i) else {
                        break;
                    };
                    let (code, err) = try_value(sub, base, flag, value);
                    let named = err.contains(flag)
                        || other_name(sub, flag).is_some_and(|other| err.contains(&other));
                    let fail = |why: String| {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("udpkit {sub} {flag} {value:?}: {why}: {err}"))
                    };
                    match code {
                        Some(101) => fail("panicked".into()),
                        Some(2) if err.lines().count() != 1 => {
                            fail(format!("{} lines", err.lines().count()))
                        }
                        Some(2) if err.contains("invalid value") && !named => {
                            fail("the refusal does not name the flag".into())
                        }
                        Some(0..=2) | None => {}
                        Some(other) => fail(format!("exit {other}")),
                    }
                    if REFUSED_BY_ALL.contains(&value) && code != Some(2) {
                        fail(format!("not refused (exit {code:?})"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn every_flag_that_takes_a_value_is_in_the_extremes_table() {
    // A new numeric flag must be tried too: the table above lists every flag whose help
    // shows a value, but those that take words (files, addresses, names).
    let words = [
        "<FILE>",
        "<FILE.svg>",
        "<TEXT>",
        "<ADDR:PORT>",
        "<seed|echo|stamp|twamp-light>",
        "<up|down|both>",
    ];
    for (sub, flags, _) in NUMERIC {
        let out = run({
            let mut c = udpkit();
            c.args([sub, &"--help"]);
            c
        });
        for line in stdout(&out).lines() {
            let line = line.trim_start();
            if !line.starts_with('-') {
                continue;
            }
            let Some((names, rest)) = line.split_once(" <") else {
                continue;
            };
            let value = format!("<{}", rest.split_whitespace().next().unwrap_or(""));
            if words.contains(&value.as_str()) {
                continue;
            }
            let name = names.rsplit(", ").next().unwrap();
            let short = names.split(", ").next().unwrap();
            assert!(
                flags.contains(&name) || flags.contains(&short),
                "udpkit {sub} {names} {value} is not in the extremes table"
            );
        }
    }
}

fn orchestrator_variables_are_checked_like_flags() {
    // The cases: JOB_COMPLETION_INDEX=18446744073709551615 wrapped to segment 0;
    // -1 was silently ignored.
    for (name, value) in [
        ("JOB_COMPLETION_INDEX", "18446744073709551615"),
        ("JOB_COMPLETION_INDEX", "-1"),
        ("JOB_COMPLETION_INDEX", "1e300"),
        ("JOB_COMPLETION_INDEX", "7"),
        ("SLURM_PROCID", "NaN"),
        // An index without a count, and a count without an index where one was meant.
        ("SLURM_PROCID", "1"),
    ] {
        let out = run({
            let mut c = udpkit();
            c.args(["bench", "127.0.0.1", "-p", "9", "-n", "30", "-W", "0.1"])
                .env(name, value)
                .env("UDPKIT_SEGMENTS", "4");
            if value != "1" {
                c.env("SLURM_NTASKS", "4");
            }
            c
        });
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}={value}: {err}");
        assert!(err.contains(name), "{name}={value}: {err}");
    }
    let out = run({
        let mut c = udpkit();
        c.args([
            "bench",
            "127.0.0.1",
            "-p",
            "9",
            "-n",
            "3",
            "--segments",
            "4",
        ])
        .env_remove("JOB_COMPLETION_INDEX");
        c
    });
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--segments"), "{}", stderr(&out));
}

udpkit_tests! {
    every_subcommand_has_help,
    completions_cover_every_subcommand_in_each_shell,
    the_man_page_documents_every_subcommand,
    bad_values_are_refused_with_the_reason,
    every_numeric_flag_takes_extremes_without_a_panic_and_refuses_in_one_line,
    every_flag_that_takes_a_value_is_in_the_extremes_table,
    orchestrator_variables_are_checked_like_flags,
}
