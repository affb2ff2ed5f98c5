#!/usr/bin/env python3
"""`udpkit merge` on long logs (issue 20): the time and peak resident memory to merge one
agent's day (86,400 one-second intervals) and 16 agents' days.

The logs are real ones made long: a short `bench --hlog` run against a server on loopback
(at --rate requests a second), whose first interval is repeated for every second of a day,
each agent's file a segment of its own. Memory is the merge's own peak (ru_maxrss of the
process, read as it is reaped).

usage: scripts/bench_merge.py [--rate 1000] [--agents 16] [--seconds 86400] [--udpkit PATH]
Loopback only; every process it starts is ended before it exits; the logs are removed.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from benchlib import release, start_ready


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--agents", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=86_400)
    ap.add_argument("--udpkit", default=None)
    args = ap.parse_args()
    udpkit = release(args.udpkit)
    work = tempfile.mkdtemp(prefix="udpkit-merge-bench-")
    try:
        server, (host, port) = start_ready([udpkit, "server", "-p", "0", "-q"])
        try:
            src = os.path.join(work, "src.hlog")
            subprocess.run([udpkit, "bench", host, "-p", str(port), "--rate", str(args.rate),
                            "-n", str(args.rate * 2), "--hlog", src],
                           check=True, stdout=subprocess.DEVNULL)
        finally:
            server.kill()
            server.wait()
        lines = open(src).read().splitlines()
        head = [l for l in lines if l.startswith("#") and not l.startswith("#udpkit-totals")]
        tag, _, _, mx, enc = next(l for l in lines if l.startswith("Tag=")).split(",", 4)
        files = []
        for agent in range(1, args.agents + 1):
            path = os.path.join(work, f"agent{agent}.hlog")
            header = [l.replace('"segment":[1,1]', f'"segment":[{agent},{args.agents}]')
                      for l in head]
            t = f"segment-{agent}-of-{args.agents}"
            with open(path, "w") as f:
                f.write("\n".join(header) + "\n")
                for s in range(args.seconds):
                    f.write(f"Tag={t},{s}.000,1.000,{mx},{enc}\n")
                # A synthetic file: its replies are not counted here, so its totals give
                # merge's check (received <= latencies <= received + forged) the room.
                f.write('#udpkit-totals {"sent":0,"received":0,"lost":0,"duplicates":0,'
                        f'"late":0,"forged":{2**53 // (args.agents + 1)},"bad":0,"unverified":0,'
                        f'"seconds":{args.seconds}.0}}\n')
            files.append(path)
        size = os.path.getsize(files[0])
        print(f"one agent's log: {args.seconds} intervals, {size / 1e6:.1f} MB "
              f"(a {args.rate}/s run's histogram a second)")
        for n in (1, args.agents):
            script = ("import resource, subprocess, sys, time\n"
                      "t = time.time()\n"
                      "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
                      "print(time.time() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode)\n")
            out = subprocess.run([sys.executable, "-c", script, udpkit, "merge"] + files[:n],
                                 capture_output=True, text=True, check=True)
            secs, peak, code = out.stdout.split()
            print(f"- udpkit merge of {n} agent{'s' if n > 1 else ''} "
                  f"({n * size / 1e6:.0f} MB): {float(secs):.1f} s, peak {int(peak) / 1024:.1f} MiB, "
                  f"exit {code}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
