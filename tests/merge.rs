//! A run split over agents (`bench --segment I/N --start-at T --hlog FILE`) and merged
//! (`udpkit merge`): totals are the agents' sums, percentiles those of one histogram of
//! every agent's latencies, as HdrHistogram's own Python implementation reads the files;
//! and files that are not one run, or not whole, are refused by name.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

/// A file in `dir` (a temporary folder the test holds: removed when it ends).
fn temp(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

fn start_in(seconds: u64) -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(seconds);
    format!("{}", t.as_secs())
}

/// Runs three agents at once, each its share; their JSON reports and log files.
fn three_agents(
    addr: std::net::SocketAddr,
    start: &str,
    dir: &tempfile::TempDir,
) -> (Vec<serde_json::Value>, Vec<PathBuf>) {
    let files: Vec<PathBuf> = (1..=3)
        .map(|i| temp(dir, &format!("agent{i}.hlog")))
        .collect();
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

fn three_agents_merge_into_their_sums_and_one_histograms_percentiles() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let dir = tempfile::tempdir().unwrap();
    let (reports, files) = three_agents(addr, &start_in(2), &dir);
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
    let python = harness::hdrh_python().expect("Need::Hdrh");
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

fn files_of_other_runs_twice_the_same_cut_or_empty_are_refused_by_name() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let dir = tempfile::tempdir().unwrap();
    let (_, files) = three_agents(addr, &start_in(1), &dir);
    // Another run's agent 3.
    let other = temp(&dir, "other.hlog");
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
    let cut = temp(&dir, "cut.hlog");
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let (code, _, err) = merge_json(&[files[0].clone(), cut.clone()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cut.hlog"), "{err}");
    let mut bad = text.clone();
    let at = String::from_utf8_lossy(&text).find("HIST").unwrap() + 30;
    bad[at] ^= 0x01;
    let corrupted = temp(&dir, "corrupted.hlog");
    std::fs::write(&corrupted, &bad).unwrap();
    let (code, _, err) = merge_json(&[corrupted]);
    assert_eq!(code, Some(2));
    assert!(err.contains("corrupted.hlog"), "{err}");
    let empty = temp(&dir, "empty.hlog");
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

fn a_late_agent_says_by_how_much_and_still_runs_its_share() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let dir = tempfile::tempdir().unwrap();
    let hlog = temp(&dir, "late.hlog");
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

fn an_outage_shows_as_seconds_with_no_replies() {
    // The server stopped (SIGSTOP) for 2.2 s of a 5 s run: the merged seconds must show it,
    // not skip from second 1 to second 3 (the adversary's case).
    let (server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let dir = tempfile::tempdir().unwrap();
    let hlog = temp(&dir, "gap.hlog");
    let pid = server.pid() as i32;
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        std::thread::sleep(Duration::from_millis(2200));
        unsafe { libc::kill(pid, libc::SIGCONT) };
    });
    let out = run(udpkit_to(
        "bench",
        addr,
        &[
            "--rate",
            "500",
            "-d",
            "5",
            "-W",
            "0.2",
            "--hlog",
            hlog.to_str().unwrap(),
        ],
    ));
    stopper.join().unwrap();
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{}",
        stderr(&out)
    );
    let (_, m, err) = merge_json(&[hlog]);
    let seconds = m["per_second"]
        .as_array()
        .unwrap_or_else(|| panic!("{err}"));
    let numbers: Vec<u64> = seconds
        .iter()
        .map(|s| s["second"].as_u64().unwrap())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "seconds skipped: {numbers:?}"
    );
    assert!(
        seconds
            .iter()
            .any(|s| s["replies"] == 0 && s["p99_us"].is_null()),
        "{m}"
    );
}

udpkit_tests! {
    an_outage_shows_as_seconds_with_no_replies,
    three_agents_merge_into_their_sums_and_one_histograms_percentiles [Need::Hdrh],
    files_of_other_runs_twice_the_same_cut_or_empty_are_refused_by_name,
    the_segment_comes_from_a_kubernetes_indexed_job_or_slurm_and_is_said,
    a_late_agent_says_by_how_much_and_still_runs_its_share,
}
