#!/usr/bin/env python3
"""udpkit against the limit (issue 22): the C yardstick's hand-written GSO+GRO pair and its
batched pair without offload, side by side in one run, pinned (servers on CPU 1, load on
CPU 0), 38-byte requests of the seed's protocol, SECONDS a run, ROUNDS rounds.

With offload, at each WINDOW in flight:
  `gsoload` -> `gsoserver`                       the limit
  `udpkit bench` -> `udpkit server` (GSO+GRO)   goal: >= 0.95x the limit
  `gsoload` -> `udpkit server`: the server's share (`udpkit bench` -> `gsoserver` cannot
  be run: gsoserver repeats no request IDs, so bench's distinct lengths meet replies that
  name one length)
Without offload, at NO_OFFLOAD_WINDOW in flight, against the batched `refserver`:
  `udpload` -> `refserver`                       the yardstick
  `udpkit bench --no-gso --no-gro` -> `refserver` goal: >= 1.0x

Each figure is replies a second, and the CPU time both processes spent per reply (user +
system, from the kernel's accounting of the finished processes: steadier than throughput
on a shared machine). With --baseline PATH, another udpkit build runs the same udpkit rows
in the same rounds ("baseline ..."), for before/after.

usage: scripts/bench_limit.py [--seconds 3] [--rounds 5] [--windows 64,256]
                              [--baseline PATH] [--udpkit PATH]
Loopback only; every process it starts is killed before it exits.
"""

import argparse
import json
import os
import resource
import statistics
import sys

from benchlib import build, free_port, pinned_client, pinned_server, wait_listening

SIZE = 38
NO_OFFLOAD_WINDOW = 64


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_pair(server_cmd, port, load):
    """Starts the server, runs `load()` (returns replies/s and replies); returns
    (replies/s, CPU µs per reply of server and load together)."""
    before = children_cpu()
    srv = pinned_server(server_cmd)
    try:
        wait_listening(port, srv)
        rate, replies = load()
    finally:
        srv.kill()
        srv.wait()
    cpu = children_cpu() - before
    return rate, 1e6 * cpu / max(replies, 1)


def c_load(tools, prog, port, secs, window):
    args = [os.path.join(tools, prog), "127.0.0.1", str(port), str(secs), str(window), str(SIZE)]
    if prog == "gsoload":
        args = [os.path.join(tools, prog), str(port), str(secs), str(window), str(SIZE)]
    else:
        args.append("len")
    j = json.loads(pinned_client(args, secs + 30))
    if j.get("bad"):
        raise SystemExit(f"{prog}: bad replies: {j}")
    return j["replies_per_s"], j["replies"]


def bench(udpkit, port, secs, window, extra=()):
    out = pinned_client([udpkit, "bench", "127.0.0.1", "-p", str(port), "--window", str(window),
                         "-d", str(secs), "-s", str(SIZE), "--json", *extra], secs + 30)
    j = json.loads(out)
    if j["bad"] or j["duplicates"] or j["forged"]:
        raise SystemExit(f"bad replies: {j}")
    return j["requests_per_second"], j["received"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--windows", default="64,256")
    ap.add_argument("--baseline", help="another udpkit binary, run beside this one")
    ap.add_argument("--udpkit", help="the udpkit binary (default: this checkout's release)")
    args = ap.parse_args()
    secs = args.seconds
    windows = [int(w) for w in args.windows.split(",")]
    built, tools = build()
    kits = {"udpkit": args.udpkit or built}
    if args.baseline:
        kits["baseline udpkit"] = args.baseline

    rows = []  # (name, window, server command maker, load maker)

    def gsoserver(port):
        return [os.path.join(tools, "gsoserver"), str(port)]

    def refserver(port):
        return [os.path.join(tools, "refserver"), str(port)]

    for w in windows:
        rows.append(("gsoload -> gsoserver", w, gsoserver,
                     lambda port, w=w: c_load(tools, "gsoload", port, secs, w)))
        for kit, path in kits.items():
            rows.append((f"{kit} bench -> {kit} server", w,
                         lambda port, path=path: [path, "server", "-p", str(port), "-q"],
                         lambda port, w=w, path=path: bench(path, port, secs, w)))
            rows.append((f"gsoload -> {kit} server", w,
                         lambda port, path=path: [path, "server", "-p", str(port), "-q"],
                         lambda port, w=w: c_load(tools, "gsoload", port, secs, w)))
    w = NO_OFFLOAD_WINDOW
    rows.append(("udpload -> refserver", w, refserver,
                 lambda port: c_load(tools, "udpload", port, secs, w)))
    for kit, path in kits.items():
        rows.append((f"{kit} bench --no-gso --no-gro -> refserver", w, refserver,
                     lambda port, path=path: bench(path, port, secs, w, ("--no-gso", "--no-gro"))))

    results = {(name, w): [] for name, w, _, _ in rows}
    for r in range(args.rounds):
        for name, w, server_cmd, load in rows:
            port = free_port()
            results[(name, w)].append(run_pair(server_cmd(port), port, lambda: load(port)))
        print(f"round {r + 1}: " + ", ".join(
            f"{name} @{w} {results[(name, w)][-1][0]:.0f}/s" for name, w, _, _ in rows),
            file=sys.stderr, flush=True)

    def med(name, w, i):
        return statistics.median(x[i] for x in results[(name, w)])

    print(f"\n{SIZE}-byte requests, {secs:g} s a run, medians of {args.rounds} rounds; loopback, "
          "servers on CPU 1, load on CPU 0\n")
    print("| load -> server | in flight | replies/s | CPU µs a reply (both) |")
    print("|---|---|---|---|")
    for name, w, _, _ in rows:
        print(f"| {name} | {w} | {med(name, w, 0):,.0f} | {med(name, w, 1):.3f} |")
    print()

    def ratio(name, base, w):
        paired = [a[0] / b[0] for a, b in zip(results[(name, w)], results[(base, w)])]
        cpu = [b[1] / a[1] for a, b in zip(results[(name, w)], results[(base, w)])]
        print(f"- {w} in flight: {name} / {base} = {med(name, w, 0) / med(base, w, 0):.2f}x "
              f"replies/s (rounds {', '.join(f'{x:.2f}' for x in paired)}); "
              f"CPU a reply {statistics.median(cpu):.2f}x as efficient")

    for kit in kits:
        for w in windows:
            ratio(f"{kit} bench -> {kit} server", "gsoload -> gsoserver", w)
        ratio(f"{kit} bench --no-gso --no-gro -> refserver", "udpload -> refserver",
              NO_OFFLOAD_WINDOW)


if __name__ == "__main__":
    main()
