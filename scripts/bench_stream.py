#!/usr/bin/env python3
"""`udpkit stream` against `iperf3 -u` (issue 14), side by side in one run, pinned (the
receiving server on CPU 1, the sender on CPU 0): for each datagram size and path, the
highest rate each holds with under 0.1% loss, and the sender's CPU time per Gbit/s at
that rate (`perf stat -e task-clock`).

Paths: loopback, and a veth pair between two network namespaces this script creates
(192.0.2.1 and .2, inside the namespaces only; removed at the end; root needed).

The search: SECONDS-long trials from a low rate, doubling until the loss passes 0.1% (or
the sender reaches less than 90% of the rate offered: its own ceiling), then STEPS
bisections between the last rate that held and the first that did not; the figure is the
highest rate achieved with under 0.1% loss.
Each tool's own figures are used: udpkit's `bits_per_second` and `lost_percent`, iperf3's
`end.sum` (its receiver's loss).

With --baseline PATH, another build's udpkit (an earlier commit's, say) is searched the
same way in the same run ("baseline udpkit", "baseline udpkit --no-gso"); --tools picks
which tools run (comma-separated names as printed).

With --fixed BITS (and --rounds N), no search: every tool sends at that rate, N rounds in
rotation, and the medians of what it achieved, lost, and its sender CPU per Gbit are
printed: a steadier figure than the search's, for comparing builds.

usage: scripts/bench_stream.py [--seconds 2] [--steps 4] [--sizes 1400,64] [--paths lo,veth]
                               [--baseline PATH] [--tools udpkit,iperf3,...]
                               [--fixed BITS --rounds N]
Loopback and namespaces only; every process it starts is killed before it exits.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchlib import build, free_port

NS = ("udpkbench-a", "udpkbench-b")

# udpkit as it runs, and without segmentation offload; iperf3 as it runs (its default
# socket buffers), and with 8 MiB ones (-w 8M).
TOOLS = ("udpkit", "udpkit --no-gso", "iperf3", "iperf3 -w 8M")


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def make_veth():
    for ns in NS:
        sh("ip", "netns", "del", ns, check=False)
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", NS[0], "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", NS[1])
    sh("ip", "-n", NS[0], "addr", "add", "192.0.2.1/24", "dev", "va")
    sh("ip", "-n", NS[1], "addr", "add", "192.0.2.2/24", "dev", "vb")
    sh("ip", "-n", NS[0], "link", "set", "va", "up")
    sh("ip", "-n", NS[1], "link", "set", "vb", "up")


def drop_veth():
    for ns in NS:
        sh("ip", "netns", "del", ns, check=False)


def in_ns(ns, cmd):
    return (["ip", "netns", "exec", ns] if ns else []) + cmd


class Path:
    def __init__(self, name):
        self.name = name
        if name == "lo":
            self.client_ns, self.server_ns, self.addr = None, None, "127.0.0.1"
        else:
            self.client_ns, self.server_ns, self.addr = NS[0], NS[1], "192.0.2.2"


def start_server(path, cmd):
    return subprocess.Popen(in_ns(path.server_ns, ["taskset", "-c", "1"] + cmd),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_client(path, cmd, secs):
    """Runs the sender on CPU 0 under perf stat; its JSON and its CPU seconds."""
    with tempfile.NamedTemporaryFile("r", suffix=".perf") as perf:
        full = in_ns(path.client_ns, ["perf", "stat", "-x,", "-e", "task-clock", "-o",
                                      perf.name, "taskset", "-c", "0"] + cmd)
        out = subprocess.run(full, capture_output=True, text=True, timeout=secs + 30)
        cpu_ms = 0.0
        for line in open(perf.name):
            if "task-clock" in line:
                cpu_ms = float(line.split(",")[0])
    return out.stdout, cpu_ms / 1e3


def udpkit_trial(udpkit, path, port, rate, size, secs, extra=()):
    out, cpu = run_client(path, [udpkit, "stream", path.addr, "-p", str(port), "-b",
                                 str(int(rate)), "-s", str(size), "-d", str(secs), "--json",
                                 *extra], secs)
    j = json.loads(out)
    return j["bits_per_second"], j["lost_percent"], cpu


def iperf3_trial(path, port, rate, size, secs, extra=()):
    out, cpu = run_client(path, ["iperf3", "-c", path.addr, "-p", str(port), "-u", "-b",
                                 str(int(rate)), "-l", str(size), "-t", str(secs), "-J",
                                 *extra], secs)
    s = json.loads(out)["end"]["sum"]
    return s["bits_per_second"], s["lost_percent"], cpu


def search(trial, start, cap, steps):
    """The highest offered rate with under 0.1% loss: (achieved bits/s, loss %, cpu s/Gbit)."""
    best = None
    rate, bad = start, None
    while rate <= cap:
        bps, loss, cpu = trial(rate)
        print(f"    {rate / 1e9:8.3f} Gbit/s offered: {bps / 1e9:8.3f} achieved, {loss:.3f}% lost",
              flush=True)
        if loss < 0.1:
            if best is None or bps > best[0]:
                best = (bps, loss, cpu / max(bps / 1e9 * args_secs, 1e-9), rate)
            if bps < 0.9 * rate:
                break  # the sender cannot go faster: its ceiling, without loss
            rate *= 2
        else:
            bad = rate
            break
    if best is None:
        return None
    good = best[3]
    for _ in range(steps if bad else 0):
        mid = (good + bad) / 2
        bps, loss, cpu = trial(mid)
        print(f"    {mid / 1e9:8.3f} Gbit/s offered: {bps / 1e9:8.3f} achieved, {loss:.3f}% lost",
              flush=True)
        if loss < 0.1:
            good = mid
            if bps > best[0]:
                best = (bps, loss, cpu / max(bps / 1e9 * args_secs, 1e-9), mid)
        else:
            bad = mid
    return best


def main():
    global args_secs
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--sizes", default="1400,64")
    ap.add_argument("--paths", default="lo,veth")
    ap.add_argument("--baseline", default=None, help="another build's udpkit, for comparison")
    ap.add_argument("--tools", default=None, help="which tools, comma-separated")
    ap.add_argument("--fixed", type=float, default=None, help="one rate, bits a second")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    args_secs = a.seconds
    udpkit, _ = build()
    tools = list(TOOLS)
    if a.baseline:
        tools += ["baseline udpkit", "baseline udpkit --no-gso"]
    if a.tools:
        tools = [t for t in tools if t in a.tools.split(",")]
    sizes = [int(s) for s in a.sizes.split(",")]
    paths = a.paths.split(",")
    results = []
    try:
        if "veth" in paths:
            make_veth()
        for p in paths:
            path = Path(p)
            for size in sizes:
                start = 50e6 if size >= 1000 else 10e6
                for tool in tools:
                    port = free_port()
                    if "udpkit" in tool:
                        extra = ("--no-gso",) if "no-gso" in tool else ()
                        binary = a.baseline if tool.startswith("baseline") else udpkit
                        server = start_server(path, [binary, "server", "0.0.0.0", "-q", "-p",
                                                     str(port)])
                        trial = lambda r, s=size, pt=port, e=extra, b=binary: udpkit_trial(
                            b, path, pt, r, s, a.seconds, e)
                    else:
                        # -w: both ends' socket buffers, as iperf3's users raise them.
                        extra = ("-w", "8M") if "-w" in tool else ()
                        server = start_server(path, ["iperf3", "-s", "-p", str(port)])
                        trial = lambda r, s=size, pt=port, e=extra: iperf3_trial(
                            path, pt, r, s, a.seconds, e)
                    try:
                        subprocess.run(["sleep", "0.5"])
                        print(f"{p}, {size} bytes, {tool}:", flush=True)
                        if a.fixed:
                            best = [trial(a.fixed) for _ in range(a.rounds)]
                        else:
                            best = search(trial, start, 200e9, a.steps)
                    finally:
                        server.kill()
                        server.wait()
                    results.append((p, size, tool, best))
    finally:
        if "veth" in paths:
            drop_veth()
    if a.fixed:
        import statistics
        print()
        print(f"{a.fixed / 1e9:g} Gbit/s offered, {a.seconds} s trials, medians of {a.rounds}; "
              f"server on CPU 1, sender on CPU 0")
        print()
        print("| path | size | tool | Gbit/s achieved | loss % | sender CPU s per Gbit |")
        print("|---|---|---|---|---|---|")
        cpu = {}
        for p, size, tool, runs in results:
            per = [c / max(b / 1e9 * a.seconds, 1e-9) for b, _, c in runs]
            cpu[(p, size, tool)] = statistics.median(per)
            print(f"| {p} | {size} | {tool} | {statistics.median(r[0] for r in runs) / 1e9:.3f} | "
                  f"{statistics.median(r[1] for r in runs):.3f} | {cpu[(p, size, tool)]:.3f} |")
        print()
        for p, size, tool, _ in results:
            base = cpu.get((p, size, "baseline " + tool))
            if base:
                print(f"- {p}, {size} bytes: {tool} / baseline: CPU per Gbit "
                      f"{cpu[(p, size, tool)] / base:.2f}x")
        return
    print()
    print(f"{a.seconds} s trials, highest rate with under 0.1% loss (achieved), sender CPU "
          f"seconds per Gbit sent; server on CPU 1, sender on CPU 0")
    print()
    print("| path | size | tool | Gbit/s | loss % | sender CPU s per Gbit |")
    print("|---|---|---|---|---|---|")
    for p, size, tool, best in results:
        if best is None:
            print(f"| {p} | {size} | {tool} | none held | | |")
        else:
            print(f"| {p} | {size} | {tool} | {best[0] / 1e9:.3f} | {best[1]:.3f} | "
                  f"{best[2]:.3f} |")
    print()
    for p in paths:
        for size in sizes:
            got = {tool: best for (pp, s, tool, best) in results if pp == p and s == size}
            for ours, theirs in (("udpkit", "iperf3"), ("udpkit", "iperf3 -w 8M"),
                                 ("udpkit --no-gso", "iperf3 -w 8M"),
                                 ("udpkit", "baseline udpkit"),
                                 ("udpkit --no-gso", "baseline udpkit --no-gso")):
                u, i = got.get(ours), got.get(theirs)
                if u and i:
                    print(f"- {p}, {size} bytes: {ours} / {theirs} = {u[0] / i[0]:.2f}x the "
                          f"rate; CPU per Gbit {u[2] / i[2]:.2f}x")


if __name__ == "__main__":
    main()
