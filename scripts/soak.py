#!/usr/bin/env python3
"""Soak test (not in CI): udpkit bench against udpkit server for a long run, recording the
server's resident memory and the kernel's receive-buffer drops at the start and the end.

usage: scripts/soak.py [--minutes 10] [--flows 4] [--window 16]
Prints one markdown table row set for BENCHMARKS.md. Only loopback traffic; the server
and the load are pinned to cores 1 and 0 and killed at the end.
"""

import argparse
import json
import subprocess
import time

from benchlib import build, rss_kib


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--flows", type=int, default=4)
    ap.add_argument("--window", type=int, default=16)
    args = ap.parse_args()
    udpkit, _ = build()
    seconds = args.minutes * 60
    server = subprocess.Popen(["taskset", "-c", "1", udpkit, "server", "-p", "0", "-q", "--json",
                               "--stats", "10"], stdout=subprocess.PIPE, text=True)
    try:
        port = server.stdout.readline().strip().rsplit(":", 1)[1]
        load = subprocess.Popen(["taskset", "-c", "0", udpkit, "bench", "127.0.0.1", "-p", port,
                                 "--flows", str(args.flows), "--window", str(args.window),
                                 "-d", str(seconds), "--json"], stdout=subprocess.PIPE, text=True)
        time.sleep(15)
        first = json.loads(server.stdout.readline())
        rss_start = rss_kib(server.pid)
        report = json.loads(load.communicate(timeout=seconds + 60)[0])
        rss_end = rss_kib(server.pid)
        server.terminate()
        lines = [json.loads(line) for line in server.stdout.read().splitlines()]
        last = lines[-1]
    finally:
        server.kill()
        server.wait()
    print(f"| start (after {first['seconds']:.0f} s) | {rss_start} KiB | {first['received']:,} | "
          f"{first['kernel_drops']:,} |")
    print(f"| end (after {last['seconds']:.0f} s) | {rss_end} KiB | {last['received']:,} | "
          f"{last['kernel_drops']:,} |")
    print(f"\nbench: {report['requests_per_second']:,.0f} requests/s, {report['sent']:,} sent, "
          f"{report['lost']:,} lost, p99 {report['latency_us']['p99']:.0f} µs, "
          f"p99.9 {report['latency_us']['p999']:.0f} µs, max {report['latency_us']['max']:.0f} µs")


if __name__ == "__main__":
    main()
