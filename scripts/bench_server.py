#!/usr/bin/env python3
"""Server throughput benchmark: udpkit server against the C yardstick and the seed.

Runs each server pinned to one core (taskset -c 1) and the yardstick load generator
`udpload` pinned to the other (taskset -c 0), 38-byte requests, WINDOW requests in flight,
for SECONDS each, ROUNDS times in rotation; prints the median replies/s per server and
window, the ratios the issue asks for, and the server's resident memory over a long run.

With --baseline PATH, another build's `udpkit server -q` (an earlier commit's, say) runs in
the same rotation, so that a change is measured side by side with what it changed.

usage: scripts/bench_server.py [--seconds 3] [--rounds 3] [--rss-datagrams 5000000]
                               [--baseline PATH]
Only loopback traffic; every process it starts is killed before it exits.
"""

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from benchlib import SHARED, build, free_port, rss_kib, wait_listening

SIZE = 38


def start(cmd, out=subprocess.DEVNULL):
    return subprocess.Popen(["taskset", "-c", "1"] + cmd, stdout=out, stderr=subprocess.DEVNULL)


def load(tools, port, seconds, window):
    out = subprocess.run(
        ["taskset", "-c", "0", os.path.join(tools, "udpload"), "127.0.0.1", str(port),
         str(seconds), str(window), str(SIZE), "len"],
        capture_output=True, text=True, timeout=seconds + 30, check=True)
    result = json.loads(out.stdout)
    if result["bad"]:
        raise SystemExit(f"bad replies: {result}")
    return result["replies_per_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rss-datagrams", type=int, default=5_000_000)
    ap.add_argument("--baseline", default=None, help="another build's udpkit, for comparison")
    ap.add_argument("--only", default=None,
                    help="run only the servers whose names contain one of these, comma-separated")
    args = ap.parse_args()

    udpkit, tools = build()
    seed = os.path.join(SHARED, "seed", "udp_local.py")
    logs = tempfile.mkdtemp(prefix="udpkit-bench-logs-")
    atexit.register(shutil.rmtree, logs, True)

    servers = {
        "refserver (C, batched)": lambda p: [os.path.join(tools, "refserver"), str(p)],
        "udpkit server -q": lambda p: [udpkit, "server", "-p", str(p), "-q"],
        "udpkit server, lines to a file": lambda p: [udpkit, "server", "-p", str(p)],
        "seed udp_local.py, lines to a file": lambda p: ["python3", seed, "server", "-p", str(p)],
    }
    logged = {"udpkit server, lines to a file", "seed udp_local.py, lines to a file"}
    if args.baseline:
        servers["baseline udpkit server -q"] = lambda p: [args.baseline, "server", "-p", str(p), "-q"]
        servers["baseline udpkit server, lines to a file"] = \
            lambda p: [args.baseline, "server", "-p", str(p)]
        logged.add("baseline udpkit server, lines to a file")
    if args.only:
        keep = args.only.split(",")
        servers = {n: c for n, c in servers.items() if any(k in n for k in keep)}
    windows = [1, 8, 64]
    results = {(name, w): [] for name in servers for w in windows}
    for round_ in range(args.rounds):
        for name, cmd in servers.items():
            for w in windows:
                port = free_port()
                log = open(os.path.join(logs, "log.txt"), "w") if name in logged else subprocess.DEVNULL
                proc = start(cmd(port), log)
                try:
                    wait_listening(port, proc)
                    rate = load(tools, port, args.seconds, w)
                finally:
                    proc.kill()
                    proc.wait()
                    if log is not subprocess.DEVNULL:
                        log.close()
                results[(name, w)].append(rate)
                print(f"round {round_ + 1} {name} window {w}: {rate:.0f}/s", file=sys.stderr)

    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\n{SIZE}-byte requests, {args.seconds:g} s per run, median of {args.rounds} rounds "
          f"(replies/s)\n")
    print("| server | " + " | ".join(f"window {w}" for w in windows) + " |")
    print("|---|" + "---|" * len(windows))
    for name in servers:
        print(f"| {name} | " + " | ".join(f"{med[(name, w)]:,.0f}" for w in windows) + " |")
    print()
    ref = "refserver (C, batched)"
    for w in windows if ref in servers and "udpkit server -q" in servers else []:
        paired = [a / b for a, b in zip(results[("udpkit server -q", w)], results[(ref, w)])]
        print(f"- window {w}: udpkit -q / refserver = {med[('udpkit server -q', w)] / med[(ref, w)]:.2f}x "
              f"(ratio of medians); median of the rounds' own ratios {statistics.median(paired):.2f}x")
    if args.baseline:
        for ours, theirs in (("udpkit server -q", "baseline udpkit server -q"),
                             ("udpkit server, lines to a file",
                              "baseline udpkit server, lines to a file")):
            for w in windows if ours in servers and theirs in servers else []:
                paired = [a / b for a, b in zip(results[(ours, w)], results[(theirs, w)])]
                print(f"- window {w}: {ours} / baseline = {med[(ours, w)] / med[(theirs, w)]:.2f}x "
                      f"(ratio of medians); median of the rounds' own ratios "
                      f"{statistics.median(paired):.2f}x")
    seedy = ("udpkit server, lines to a file", "seed udp_local.py, lines to a file")
    for w in windows if all(n in servers for n in seedy) else []:
        ratio = med[("udpkit server, lines to a file", w)] / med[("seed udp_local.py, lines to a file", w)]
        print(f"- window {w}: udpkit (lines to a file) / seed (lines to a file) = {ratio:.1f}x")

    # Resident memory over a long run: udpload at window 64 until rss-datagrams are answered.
    if "udpkit server -q" not in servers:
        return
    port = free_port()
    proc = start([udpkit, "server", "-p", str(port), "-q"])
    try:
        wait_listening(port, proc)
        load(tools, port, 1, 64)
        before = rss_kib(proc.pid)
        rate = med[("udpkit server -q", 64)]
        seconds = max(1.0, args.rss_datagrams / rate)
        total = load(tools, port, seconds, 64) * seconds
        after = rss_kib(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    print(f"- resident memory of udpkit server -q: {before} KiB after warm-up, {after} KiB after "
          f"about {total / 1e6:.1f} million more datagrams")


if __name__ == "__main__":
    main()
