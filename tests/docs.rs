//! The documentation cannot go stale: every command line that README.md and the guides show
//! parses as udpkit parses it; every synopsis in README names exactly the flags each
//! command takes; the samples of output in README are the shape of what the commands print
//! today (`scripts/readme_samples.py --check`, which runs them).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::*;

/// The documents whose command lines are checked.
const DOCS: &[&str] = &[
    "README.md",
    "docs/GUIDE.md",
    "docs/GUIDE.zh-CN.md",
    "docs/DISTRIBUTED.md",
    "docs/PROTOCOL.md",
    "docs/MONITOR.md",
];

fn read(doc: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc)).unwrap()
}

/// A placeholder (HOST, PORT, FILE...) or an ellipsis: a synopsis, not a command line.
fn is_synopsis(line: &str) -> bool {
    line.contains("...")
        || line.contains('…')
        || line.contains(" [")
        || line
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .any(|w| w.len() >= 2 && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
}

/// The command lines of `text`: lines of its shell code blocks that start with `udpkit`
/// (after a `$ ` prompt; backslash continuations joined), whole (true); and inline code
/// that does, which may name a command without its required arguments (false).
fn command_lines(text: &str) -> Vec<(String, bool)> {
    let mut lines = Vec::new();
    let mut in_block = None;
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(lang) = trimmed.strip_prefix("```") {
            in_block = match in_block {
                None => Some(lang.to_string()),
                Some(_) => None,
            };
            continue;
        }
        match &in_block {
            Some(lang) if ["", "sh", "console", "bash"].contains(&lang.as_str()) => {
                let body = trimmed.strip_prefix("$ ").unwrap_or(trimmed);
                // The guide's `start` helper runs the command after it.
                let body = body.strip_prefix("start ").unwrap_or(body);
                if !pending.is_empty() || body.starts_with("udpkit ") {
                    pending.push_str(body.trim_end_matches('\\'));
                    pending.push(' ');
                    if !body.ends_with('\\') {
                        lines.push((std::mem::take(&mut pending), true));
                    }
                }
            }
            Some(_) => {}
            None => {
                for span in line.split('`').skip(1).step_by(2) {
                    if span.starts_with("udpkit ") {
                        lines.push((span.to_string(), false));
                    }
                }
            }
        }
    }
    lines.retain(|(l, _)| !is_synopsis(l));
    lines
}

/// A command line's words, as the shell would split them (quotes, a comment, the end of
/// the command at `&`, `|`, `;` or a redirection), `$VARIABLES` given plausible values.
fn words(line: &str) -> Vec<String> {
    let start_at = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600)
        .to_string();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut chars = line.chars().peekable();
    let mut started = false;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, '#') if word.is_empty() => break,
            (None, '&' | '|' | ';' | '>') => break,
            (None, c) if c.is_whitespace() => {
                if started || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            (None, '$') => {
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        name.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                word.push_str(match name.as_str() {
                    "T" | "START_AT" => &start_at,
                    _ => "1",
                });
            }
            (None, c) => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn every_command_line_in_the_docs_parses() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for doc in DOCS {
        for (line, whole) in command_lines(&read(doc)) {
            let words = words(&line);
            assert_eq!(words[0], "udpkit", "{doc}: {line}");
            let out = run({
                let mut c = udpkit();
                c.args(&words[1..]).env("UDPKIT_CHECK_ARGS", "1");
                c
            });
            checked += 1;
            // Prose may name a command and some of its flags without its arguments.
            let mention = !whole && stderr(&out).contains("required arguments were not provided");
            if !out.status.success() && !mention {
                failures.push(format!("{doc}: {line}\n    {}", stderr(&out).trim()));
            }
        }
    }
    println!("{checked} command lines checked");
    assert!(checked > 40, "only {checked} command lines found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The flags `udpkit SUB --help` lists (long and short names).
fn help_flags(sub: &str) -> BTreeSet<String> {
    let out = run({
        let mut c = udpkit();
        c.args([sub, "--help"]);
        c
    });
    let mut flags = BTreeSet::new();
    for line in stdout(&out).lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        let names = line.split("  ").next().unwrap_or("");
        for name in names.split([',', ' ']) {
            if name.starts_with('-') && name != "-h" && name != "--help" {
                flags.insert(name.to_string());
            }
        }
    }
    flags
}

fn readmes_synopsis_names_every_flag_and_only_those() {
    let readme = read("README.md");
    let block = readme
        .split("## Commands")
        .nth(1)
        .and_then(|s| s.split("```").nth(1))
        .expect("README's synopsis block");
    // Each command's synopsis: its line and the indented ones after it.
    let mut synopses: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        if let Some(rest) = line.strip_prefix("udpkit ") {
            let sub = rest.split_whitespace().next().unwrap().to_string();
            synopses.push((sub, rest.to_string()));
        } else if let Some((_, text)) = synopses.last_mut() {
            text.push(' ');
            text.push_str(line);
        }
    }
    assert!(synopses.len() >= 9, "{synopses:?}");
    for (sub, text) in synopses {
        let named: BTreeSet<String> = text
            .split(|c: char| c.is_whitespace() || "[]|".contains(c))
            .filter(|w| w.starts_with('-') && w.len() > 1)
            .map(String::from)
            .collect();
        let helped = help_flags(&sub);
        let missing: Vec<_> = helped
            .iter()
            .filter(|f| !named.contains(*f))
            .filter(|f| {
                // A flag's other name (-p for --port) is enough.
                !helped
                    .iter()
                    .any(|other| other != *f && named.contains(other) && same_flag(&sub, f, other))
            })
            .collect();
        let unknown: Vec<_> = named.iter().filter(|f| !helped.contains(*f)).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "udpkit {sub}: README's synopsis lacks {missing:?} and names {unknown:?}, which it does not take"
        );
    }
}

/// Whether `a` and `b` are two names of one flag of `udpkit SUB`.
fn same_flag(sub: &str, a: &str, b: &str) -> bool {
    let out = run({
        let mut c = udpkit();
        c.args([sub, "--help"]);
        c
    });
    stdout(&out).lines().any(|line| {
        let names = line.trim_start().split("  ").next().unwrap_or("");
        let names: Vec<&str> = names.split([',', ' ']).collect();
        names.contains(&a) && names.contains(&b)
    })
}

fn readmes_samples_are_what_the_commands_print_today() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/readme_samples.py");
    let out = run_for(
        {
            let mut c = Command::new("python3");
            c.arg(script)
                .arg("--check")
                .arg("--udpkit")
                .arg(udpkit().get_program());
            c
        },
        std::time::Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

/// The shell blocks of `doc` marked `<!-- runs -->`, in order.
fn runnable_blocks(doc: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "<!-- runs -->" {
            continue;
        }
        assert_eq!(
            lines.next().map(str::trim),
            Some("```sh"),
            "a block after <!-- runs -->"
        );
        let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        blocks.push(block.join("\n"));
    }
    blocks
}

/// Every block of the guides marked `<!-- runs -->` runs as written, one guide after the
/// other in a host of its own (its loopback only, its port 1060 free), with `set -e`: each
/// command succeeds, and nothing it started is left running when it ends.
fn the_guides_recipes_run_as_written() {
    let program = std::path::PathBuf::from(udpkit().get_program());
    let bin = program.parent().expect("udpkit's folder").to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for doc in ["docs/GUIDE.md", "docs/GUIDE.zh-CN.md"] {
        let blocks = runnable_blocks(&read(doc));
        assert!(blocks.len() >= 5, "{doc}: {} runnable blocks", blocks.len());
        let script = format!("set -e\n{}\n", blocks.join("\n"));
        let ns = format!("udpkdoc{}x{}", std::process::id(), doc.len());
        let made = Command::new("ip").args(["netns", "add", &ns]).status();
        assert!(made.is_ok_and(|s| s.success()), "ip netns add {ns}");
        common::cleanup::namespace_made(&ns);
        let up = Command::new("ip")
            .args(["-n", &ns, "link", "set", "lo", "up"])
            .status();
        let out = up.is_ok_and(|s| s.success()).then(|| {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns, "sh", "-c", &script])
                .env("PATH", &path);
            run_for(c, std::time::Duration::from_secs(90))
        });
        let left = Command::new("ip")
            .args(["netns", "pids", &ns])
            .output()
            .map(|o| stdout(&o).trim().to_string())
            .unwrap_or_default();
        common::cleanup::remove_namespace(&ns);
        common::cleanup::namespace_gone(&ns);
        let out = out.expect("a host with its loopback up");
        assert!(
            out.status.success(),
            "{doc}'s recipes failed ({:?}):\n{script}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        assert!(
            left.is_empty(),
            "{doc}'s recipes left processes running: {left}"
        );
    }
}

udpkit_tests! {
    every_command_line_in_the_docs_parses,
    readmes_synopsis_names_every_flag_and_only_those,
    readmes_samples_are_what_the_commands_print_today [Need::Tool("python3")],
    the_guides_recipes_run_as_written [Need::Root, Need::Tool("ip")],
}
