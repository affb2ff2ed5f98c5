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

#[test]
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

#[test]
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

#[test]
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

#[test]
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
