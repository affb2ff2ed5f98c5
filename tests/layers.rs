//! The design holds: the library's layers use only the layers below them, as the table in
//! ARCHITECTURE.md says (read from there, so the table and the code cannot part), and the
//! platform code stays in `io/`: no `unsafe`, no `libc::` or `nix::`, no test of an errno
//! anywhere else in `src/`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The library's files: everything under src/ but the binary's (main.rs, cli/).
fn library_files() -> Vec<(String, PathBuf)> {
    let src = root().join("src");
    let mut all = Vec::new();
    sources(&src, &mut all);
    all.sort();
    all.into_iter()
        .filter_map(|path| {
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let layer = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            (layer != "main" && layer != "cli").then_some((layer, path))
        })
        .collect()
}

/// ARCHITECTURE.md's table of layers: each layer's rank (0 is the bottom).
fn ranks() -> BTreeMap<String, u32> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let start = text
        .find("<!-- layers -->")
        .expect("ARCHITECTURE.md marks its table");
    let end = text.find("<!-- /layers -->").expect("and its end");
    let mut ranks = BTreeMap::new();
    for line in text[start..end].lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(rank) = cells.get(1).and_then(|c| c.parse::<u32>().ok()) else {
            continue;
        };
        for name in cells[2].split('`').skip(1).step_by(2) {
            let name = name.trim_end_matches('/').trim_end_matches(".rs");
            ranks.insert(name.to_string(), rank);
        }
    }
    assert!(ranks.len() >= 8, "the table names the layers: {ranks:?}");
    ranks
}

/// What the crate root re-exports, and from which layer (`pub use io::stop::Stop;`).
fn reexports() -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let mut names = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let layer = rest.split("::").next().unwrap().to_string();
        let items = match (rest.find('{'), rest.rfind('}')) {
            (Some(a), Some(b)) => rest[a + 1..b].to_string(),
            _ => rest.rsplit("::").next().unwrap().to_string(),
        };
        for item in items.split(',') {
            let item = item.trim().trim_end_matches(';');
            let name = item.rsplit(" as ").next().unwrap().trim();
            if !name.is_empty() {
                names.insert(name.to_string(), layer.clone());
            }
        }
    }
    names
}

/// The first path segment of every `crate::` path in `code` (in `use crate::{a, b::c}`,
/// `a` and `b`), with its line.
fn crate_uses(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let line = line.split("//").next().unwrap();
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let first = item.trim().split("::").next().unwrap().trim();
                    if !first.is_empty() {
                        found.push((n + 1, first.to_string()));
                    }
                }
            } else {
                let first: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push((n + 1, first));
            }
        }
    }
    found
}

fn every_layer_uses_only_the_layers_below_it() {
    let ranks = ranks();
    let roots = reexports();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (layer, path) in library_files() {
        if layer == "lib" {
            continue;
        }
        let Some(&rank) = ranks.get(&layer) else {
            wrong.push(format!(
                "{}: layer `{layer}` is not in ARCHITECTURE.md's table",
                path.display()
            ));
            continue;
        };
        let code = std::fs::read_to_string(&path).unwrap();
        for (line, used) in crate_uses(&code) {
            checked += 1;
            let used_layer = roots.get(&used).cloned().unwrap_or(used.clone());
            if used_layer == layer {
                continue;
            }
            let Some(&used_rank) = ranks.get(&used_layer) else {
                wrong.push(format!(
                    "{}:{line}: uses `crate::{used}`, in no layer",
                    path.display()
                ));
                continue;
            };
            // Below, or both in the bottom layer (error, addr, limits use each other).
            if used_rank < rank || (used_rank == 0 && rank == 0) {
                continue;
            }
            wrong.push(format!(
                "{}:{line}: `{layer}` (layer {rank}) uses `{used_layer}` (layer {used_rank})",
                path.display()
            ));
        }
    }
    assert!(
        checked > 100,
        "only {checked} uses found: is the parser right?"
    );
    assert!(
        wrong.is_empty(),
        "arrows that go up or sideways:\n{}",
        wrong.join("\n")
    );
}

/// Whether `code` holds `needle` not as the tail of a longer name (`nix::`, not `unix::`).
fn has(code: &str, needle: &str) -> bool {
    code.match_indices(needle).any(|(at, _)| {
        !code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

fn platform_code_lives_in_io_only() {
    let mut wrong = Vec::new();
    for (layer, path) in library_files() {
        if layer == "io" {
            continue;
        }
        let code = std::fs::read_to_string(&path).unwrap();
        for (n, line) in code.lines().enumerate() {
            let code_part = line.split("//").next().unwrap();
            for bad in ["unsafe ", "unsafe{", "libc::", "nix::", ".raw_os_error()"] {
                if has(code_part, bad) {
                    wrong.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    // The binary too: it formats, it does not touch the system.
    let mut cli = Vec::new();
    sources(&root().join("src/cli"), &mut cli);
    cli.push(root().join("src/main.rs"));
    for path in cli {
        let code = std::fs::read_to_string(&path).unwrap();
        for (n, line) in code.lines().enumerate() {
            let code_part = line.split("//").next().unwrap();
            if ["unsafe ", "libc::", "nix::"]
                .iter()
                .any(|b| has(code_part, b))
            {
                wrong.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "platform code outside src/io/:\n{}",
        wrong.join("\n")
    );
}

/// A test file cargo would run on its own harness runs nothing here (its tests are in
/// `udpkit_tests!`, not `#[test]`): every one is declared `harness = false`.
fn every_test_file_runs_on_the_harness() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let declared: Vec<String> = manifest
        .split("[[test]]")
        .skip(1)
        .filter(|t| t.contains("harness = false"))
        .filter_map(|t| t.split('"').nth(1).map(str::to_string))
        .collect();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("tests")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if !declared.contains(&name) {
                missing.push(name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "test files without `[[test]] name = ... harness = false` in Cargo.toml: {missing:?}"
    );
}

fn the_checks_see_what_they_look_for() {
    // The parser finds grouped and plain uses alike.
    let uses = crate_uses(
        "use crate::{Error, io::wait::Poller};\nlet x = crate::wire::ID_LEN; // crate::cli\n",
    );
    let names: Vec<&str> = uses.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["Error", "io", "wire"]);
    assert!(has("libc::poll", "libc::") && !has("std::os::unix::fs", "nix::"));
    // And io/ does hold the unsafe code the other check keeps out elsewhere.
    let datagram = std::fs::read_to_string(root().join("src/io/datagram.rs")).unwrap();
    assert!(datagram.contains("unsafe {") && datagram.contains("libc::"));
}

udpkit_tests! {
    every_test_file_runs_on_the_harness,
    every_layer_uses_only_the_layers_below_it,
    platform_code_lives_in_io_only,
    the_checks_see_what_they_look_for,
}
