//! A run split over agents (`bench --segment I/N --start-at T --hlog FILE`) and merged
//! (`udpkit merge`): totals are the agents' sums, percentiles those of one histogram of
//! every agent's latencies, as HdrHistogram's own Python implementation reads the files;
//! and files that are not one run, or not whole, are refused by name.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

/// A Python with the `hdrhistogram` package: `$UDPKIT_HDRH_PYTHON`, or the venv `.ci/run`
/// makes in `target/hdrh-venv`; `None` (said) elsewhere, a failure under CI.
fn hdrh_python(test: &str) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("UDPKIT_HDRH_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/hdrh-venv/bin/python")])
        .collect();
    let found = candidates.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import hdrh"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        let why = format!(
            "skipped {test}: no Python with the hdrhistogram package (python3 -m venv \
             target/hdrh-venv && target/hdrh-venv/bin/pip install hdrhistogram)"
        );
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{why}");
        println!("{why}");
    }
    found
}

/// A file in a fresh temporary folder.
fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "udpkit-merge-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn start_in(seconds: u64) -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(seconds);
    format!("{}", t.as_secs())
}

/// Runs three agents at once, each its share; their JSON reports and log files.
fn three_agents(addr: std::net::SocketAddr, start: &str) -> (Vec<serde_json::Value>, Vec<PathBuf>) {
    let files: Vec<PathBuf> = (1..=3).map(|i| temp(&format!("agent{i}.hlog"))).collect();
    let agents: Vec<Running> = (1..=3)
        .map(|i| {
            let segment = format!("{i}/3");
            let hlog = files[i - 1].to_str().unwrap().to_string();
            Running::start(udpkit_to(
                "bench",
                addr,
                &[
                    "--segment",
                    &segment,
                    "--start-at",
                    start,
                    "--rate",
                    "6000",
                    "-n",
                    "9000",
                    "--hlog",
                    &hlog,
                    "--json",
                ],
            ))
        })
        .collect();
    let mut reports = Vec::new();
    for mut a in agents {
        let line = a.line();
        let (status, err) = a.wait();
        assert!(status.success(), "{err}");
        reports.push(serde_json::from_str(&line).unwrap());
    }
    (reports, files)
}

fn merge_json(files: &[PathBuf]) -> (Option<i32>, serde_json::Value, String) {
    let mut cmd = udpkit();
    cmd.arg("merge").args(files).arg("--json");
    let out = run(cmd);
    let text = stdout(&out);
    let v = serde_json::from_str(text.trim()).unwrap_or(serde_json::Value::Null);
    (out.status.code(), v, stderr(&out))
}

#[test]
fn three_agents_merge_into_their_sums_and_one_histograms_percentiles() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let (reports, files) = three_agents(addr, &start_in(2));
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r["sent"], 3000, "agent {}: a third of -n: {r}", i + 1);
        assert_eq!(
            r["rate"],
            2000.0,
            "agent {}: a third of the rate: {r}",
            i + 1
        );
    }
    let (code, m, err) = merge_json(&files);
    assert_eq!(code, Some(0), "{err}");
    for key in ["sent", "received", "lost", "duplicates", "bad", "forged"] {
        let sum: u64 = reports.iter().map(|r| r[key].as_u64().unwrap()).sum();
        assert_eq!(m[key].as_u64(), Some(sum), "{key}: {m}");
    }
    assert_eq!(m["complete"], true, "{m}");
    assert_eq!(m["agents"].as_array().unwrap().len(), 3, "{m}");
    let per_second: u64 = m["per_second"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["replies"].as_u64().unwrap())
        .sum();
    assert_eq!(per_second, m["received"].as_u64().unwrap(), "{m}");

    // HdrHistogram's Python implementation reads the same files to the same figures.
    let test = "three_agents_merge_into_their_sums_and_one_histograms_percentiles";
    let Some(python) = hdrh_python(test) else {
        return;
    };
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/hlog_check.py");
    let out = run({
        let mut cmd = Command::new(python);
        cmd.arg(helper).args(&files);
        cmd
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let h: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(h["count"], m["received"], "{h} / {m}");
    let lat = &m["latency_us"];
    for (ours, theirs) in [
        ("min", "min"),
        ("max", "max"),
        ("p50", "p50"),
        ("p90", "p90"),
        ("p99", "p99"),
        ("p999", "p999"),
    ] {
        let theirs_us = h[theirs].as_f64().unwrap() / 1e3;
        let ours_us = lat[ours].as_f64().unwrap();
        assert!(
            (ours_us - theirs_us).abs() < 1e-6,
            "{ours}: {ours_us} vs {theirs_us}: {h} / {m}"
        );
    }
}

#[test]
fn files_of_other_runs_twice_the_same_cut_or_empty_are_refused_by_name() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let (_, files) = three_agents(addr, &start_in(1));
    // Another run's agent 3.
    let other = temp("other.hlog");
    let out = run(udpkit_to(
        "bench",
        addr,
        &[
            "--segment",
            "3/3",
            "--start-at",
            &start_in(0),
            "-n",
            "100",
            "--hlog",
            other.to_str().unwrap(),
        ],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, _, err) = merge_json(&[files[0].clone(), files[1].clone(), other.clone()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("from different runs"), "{err}");
    let (code, _, err) = merge_json(&[files[0].clone(), files[0].clone()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("both segment 1/3"), "{err}");
    // Cut short, corrupted, empty: the file is named.
    let text = std::fs::read(&files[1]).unwrap();
    let cut = temp("cut.hlog");
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let (code, _, err) = merge_json(&[files[0].clone(), cut.clone()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cut.hlog"), "{err}");
    let mut bad = text.clone();
    let at = String::from_utf8_lossy(&text).find("HIST").unwrap() + 30;
    bad[at] ^= 0x01;
    let corrupted = temp("corrupted.hlog");
    std::fs::write(&corrupted, &bad).unwrap();
    let (code, _, err) = merge_json(&[corrupted]);
    assert_eq!(code, Some(2));
    assert!(err.contains("corrupted.hlog"), "{err}");
    let empty = temp("empty.hlog");
    std::fs::write(&empty, b"").unwrap();
    let (code, _, err) = merge_json(&[empty]);
    assert_eq!(code, Some(2));
    assert!(err.contains("empty.hlog: the file is empty"), "{err}");
    // Two of three: merged, said incomplete.
    let (code, m, _) = merge_json(&files[..2]);
    assert_eq!(code, Some(1), "{m}");
    assert_eq!(m["complete"], false, "{m}");
    assert!(m["notes"][0].as_str().unwrap().contains("3/3"), "{m}");
}

#[test]
fn the_segment_comes_from_a_kubernetes_indexed_job_or_slurm_and_is_said() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    for (vars, expect) in [
        (
            &[("JOB_COMPLETION_INDEX", "1"), ("UDPKIT_SEGMENTS", "4")][..],
            "segment 2/4 (from JOB_COMPLETION_INDEX)",
        ),
        (
            &[("SLURM_PROCID", "2"), ("SLURM_NTASKS", "3")][..],
            "segment 3/3 (from SLURM_PROCID and SLURM_NTASKS)",
        ),
    ] {
        let mut cmd = udpkit_to("bench", addr, &["-n", "1200", "--json"]);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = run(cmd);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        let n: u64 = expect[8..9].parse().unwrap();
        let count: u64 = expect[10..11].parse().unwrap();
        let share = 1200 * n / count - 1200 * (n - 1) / count;
        assert_eq!(v["sent"].as_u64(), Some(share), "{v}");
    }
    // An index without a count is refused, saying what to give.
    let mut cmd = udpkit_to("bench", addr, &["-n", "10"]);
    cmd.env("JOB_COMPLETION_INDEX", "0")
        .env_remove("UDPKIT_SEGMENTS");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--segments N"), "{}", stderr(&out));
}

#[test]
fn a_late_agent_says_by_how_much_and_still_runs_its_share() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let hlog = temp("late.hlog");
    let past = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 5;
    let out = run(udpkit_to(
        "bench",
        addr,
        &[
            "--segment",
            "1/2",
            "--start-at",
            &past.to_string(),
            "-n",
            "200",
            "--hlog",
            hlog.to_str().unwrap(),
            "--json",
        ],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("late"), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["sent"], 100, "{v}");
    let (_, m, _) = merge_json(&[hlog]);
    let late = m["agents"][0]["late_start_s"].as_f64().unwrap();
    assert!((4.0..60.0).contains(&late), "{m}");
}
