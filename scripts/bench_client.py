#!/usr/bin/env python3
"""Load-generator and latency benchmark: udpkit bench and ping against the yardsticks.

1. Throughput: the C yardstick `refserver` on core 1; on core 0, in turn, the yardstick
   load generator `udpload` and `udpkit bench --flows 1 --window W`, 38-byte requests,
   SECONDS each, ROUNDS rounds. Goal: udpkit bench >= 1.0x udpload at window 64.
2. Latency: `udpkit server -q` on core 1 with `udpkit ping -i 0` on core 0, against
   `sockperf server` on core 1 with `sockperf ping-pong --full-rtt` on core 0, same message
   size, in turn. Goal: udpkit's median RTT <= 1.1x sockperf's.

usage: scripts/bench_client.py [--seconds 3] [--rounds 5]
Installs sockperf (Debian package) if missing. Only loopback traffic; every process it
starts is killed before it exits.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

from benchlib import build, free_port, pinned_client, pinned_server, wait_listening

SIZE = 38


server = pinned_server
client = pinned_client


def ensure_sockperf():
    if shutil.which("sockperf"):
        return
    subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "sockperf"], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    secs = args.seconds

    ensure_sockperf()
    udpkit, tools = build()

    windows = [1, 64]
    load = {(name, w): [] for name in ("udpload", "udpkit bench") for w in windows}
    rtt = {"udpkit ping -i 0 / udpkit server -q": [], "sockperf ping-pong / sockperf server": []}
    port = free_port()
    ref = server([os.path.join(tools, "refserver"), str(port)])
    try:
        wait_listening(port, ref)
        for r in range(args.rounds):
            for w in windows:
                out = client([os.path.join(tools, "udpload"), "127.0.0.1", str(port), str(secs),
                              str(w), str(SIZE), "len"], secs + 30)
                load[("udpload", w)].append(json.loads(out)["replies_per_s"])
                out = client([udpkit, "bench", "127.0.0.1", "-p", str(port), "--flows", "1",
                              "--window", str(w), "-d", str(secs), "-s", str(SIZE), "--json"], secs + 30)
                j = json.loads(out)
                if j["bad"]:
                    raise SystemExit(f"bad replies: {j}")
                load[("udpkit bench", w)].append(j["requests_per_second"])
                print(f"round {r + 1} window {w}: udpload {load[('udpload', w)][-1]:.0f}/s, "
                      f"udpkit bench {load[('udpkit bench', w)][-1]:.0f}/s", file=sys.stderr)
    finally:
        ref.kill()
        ref.wait()

    for r in range(args.rounds):
        port = free_port()
        srv = server([udpkit, "server", "-p", str(port), "-q"])
        try:
            wait_listening(port, srv)
            out = client([udpkit, "ping", "127.0.0.1", "-p", str(port), "-i", "0", "-s", str(SIZE),
                          "-c", str(int(secs * 15000)), "-q", "--json"], secs * 10 + 30)
            rtt["udpkit ping -i 0 / udpkit server -q"].append(json.loads(out)["rtt_ms"]["p50"] * 1000)
        finally:
            srv.kill()
            srv.wait()
        port = free_port()
        srv = server(["sockperf", "server", "-i", "127.0.0.1", "-p", str(port)])
        try:
            time.sleep(0.5)
            out = client(["sockperf", "ping-pong", "-i", "127.0.0.1", "-p", str(port), "-t",
                          str(int(secs)), "-m", str(SIZE), "--full-rtt"], secs + 30)
            p50 = float(re.search(r"percentile 50\.000 =\s*([0-9.]+)", out).group(1))
            rtt["sockperf ping-pong / sockperf server"].append(p50)
        finally:
            srv.kill()
            srv.wait()
        print(f"round {r + 1} median rtt: udpkit {rtt['udpkit ping -i 0 / udpkit server -q'][-1]:.1f} us, "
              f"sockperf {p50:.1f} us", file=sys.stderr)

    med = {k: statistics.median(v) for k, v in load.items()}
    print(f"\n{SIZE}-byte requests, {secs:g} s per run, median of {args.rounds} rounds\n")
    print("| load generator (against refserver) | " + " | ".join(f"window {w}" for w in windows) + " |")
    print("|---|" + "---|" * len(windows))
    for name in ("udpload", "udpkit bench"):
        print(f"| {name} | " + " | ".join(f"{med[(name, w)]:,.0f} replies/s" for w in windows) + " |")
    print()
    for w in windows:
        paired = [a / b for a, b in zip(load[("udpkit bench", w)], load[("udpload", w)])]
        print(f"- window {w}: udpkit bench / udpload = {med[('udpkit bench', w)] / med[('udpload', w)]:.2f}x "
              f"(ratio of medians); median of the rounds' own ratios {statistics.median(paired):.2f}x "
              f"(rounds: {', '.join(f'{r:.2f}' for r in paired)})")
    print()
    print("| ping-pong | median RTT (µs) |")
    print("|---|---|")
    for name, values in rtt.items():
        print(f"| {name} | {statistics.median(values):.1f} |")
    a = statistics.median(rtt["udpkit ping -i 0 / udpkit server -q"])
    b = statistics.median(rtt["sockperf ping-pong / sockperf server"])
    paired = [u / s for u, s in zip(rtt["udpkit ping -i 0 / udpkit server -q"],
                                    rtt["sockperf ping-pong / sockperf server"])]
    print(f"\n- udpkit / sockperf median RTT = {a / b:.2f}x (ratio of medians); median of the "
          f"rounds' own ratios {statistics.median(paired):.2f}x "
          f"(rounds: {', '.join(f'{r:.2f}' for r in paired)})")


if __name__ == "__main__":
    main()
