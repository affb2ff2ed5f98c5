#!/usr/bin/env python3
"""README's samples of output, made by running them, so that they cannot drift.

Each sample in README.md follows a marker line `<!-- sample: NAME -->` and is one fenced
block of `$ command` lines and what they print. This script runs each sample's commands
against servers and relays of its own on loopback (on free ports, shown as the README's:
1060, 8862, 9000), and writes the blocks back (default), or, with --check, compares what
the commands print today with the README's blocks, numbers masked: a line of the README
that no longer has its like in the output (a counter added, a word changed) is drift, and
the script says which and exits 1.

usage: scripts/readme_samples.py [--check] [--udpkit PATH]
Loopback only; every process it starts is ended before it exits.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """Servers and relays of one sample, on free ports, and the ports the README shows."""

    def __init__(self, udpkit):
        self.udpkit = udpkit
        self.procs = []
        self.ports = {}  # README's port -> the real one

    def start(self, args, shown_port, ready_line=True):
        """`udpkit ARGS` in the background on a free port standing for `shown_port`; the
        line it says once ready (or None)."""
        port = free_port()
        self.ports[shown_port] = port
        args = [a.replace(str(shown_port), str(port)) for a in args]
        p = subprocess.Popen([self.udpkit] + args, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
        self.procs.append(p)
        line = p.stdout.readline().rstrip("\n") if ready_line else None
        return p, self.shown(line or "")

    def run(self, args, timeout=30, stderr=False):
        real = [self.real(a) for a in args]
        out = subprocess.run([self.udpkit] + real, capture_output=True, text=True,
                             timeout=timeout)
        text = out.stderr if stderr else out.stdout
        return self.shown(text.rstrip("\n"))

    def real(self, arg):
        for shown, port in self.ports.items():
            arg = arg.replace(f":{shown}", f":{port}")
            if arg == str(shown):
                arg = str(port)
        return arg

    def shown(self, text):
        for shown, port in self.ports.items():
            text = re.sub(rf"(?<!\d){port}(?!\d)", str(shown), text)
        return text

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def sample_ping(lab):
    lab.start(["server", "-q", "-p", "1060"], 1060)
    cmd = ["ping", "127.0.0.1", "-c", "3"]
    return [("udpkit " + " ".join(cmd), lab.run(cmd + ["-p", "1060"]))]


def sample_bench(lab):
    lab.start(["server", "-q", "-p", "1060"], 1060)
    cmd = ["bench", "127.0.0.1", "--flows", "4", "--window", "16", "-d", "5"]
    return [("udpkit " + " ".join(cmd), lab.run(cmd + ["-p", "1060"]))]


def sample_stamp(lab):
    server = ["server", "--protocol", "stamp", "--stateful", "-q", "-p", "8862"]
    lab.start(server, 8862, ready_line=False)
    time.sleep(0.3)
    cmd = ["ping", "127.0.0.1", "-p", "8862", "--protocol", "stamp", "-c", "3", "-i", "0.2",
           "--dscp", "46"]
    return [("udpkit " + " ".join(server) + " &     # 862, STAMP's own port, needs root", ""),
            ("udpkit " + " ".join(cmd), lab.run(cmd))]


def sample_stream(lab):
    lab.start(["server", "-q", "-p", "1060"], 1060)
    cmd = ["stream", "127.0.0.1", "-b", "1G", "-d", "3"]
    return [("udpkit " + " ".join(cmd), lab.run(cmd + ["-p", "1060"]))]


def sample_relay(lab):
    lab.start(["server", "-q", "-p", "1060"], 1060)
    relay_args = ["relay", "--listen", "127.0.0.1:9000", "--to", "127.0.0.1:1060", "--drop",
                  "0.3", "--duplicate", "0.1", "--seed", "1"]
    real = [lab.real(a) for a in relay_args]
    lab.ports[9000] = free_port()
    real = [a.replace(":9000", f":{lab.ports[9000]}") for a in real]
    relay = subprocess.Popen([lab.udpkit] + real, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    lab.procs.append(relay)
    said = lab.shown(relay.stdout.readline().rstrip("\n"))
    cmd = ["ping", "127.0.0.1", "-p", "9000", "-c", "20", "-i", "0.02", "-q"]
    pinged = lab.run(cmd)
    relay.send_signal(signal.SIGINT)
    summary = lab.shown(relay.stdout.read().rstrip("\n"))
    relay.wait()
    return [("udpkit " + " ".join(relay_args) + " &", said), ("udpkit " + " ".join(cmd), pinged),
            ("kill -INT %1", summary)]


def sample_errors(lab):
    # A port in use, a closed port, a silent port, a refused value: the four lines.
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    lab.ports[1060] = holder.getsockname()[1]
    lines = [lab.run(["server", "-p", "1060"], stderr=True)]
    closed = free_port()
    lab.ports[1060] = closed
    lines.append(lab.run(["client", "-p", "1060"], stderr=True))
    lab.ports[1060] = holder.getsockname()[1]
    lines.append(lab.run(["client", "-p", "1060"], stderr=True))
    lines.append(lab.run(["bench", "127.0.0.1", "--rate", "1e-300"], stderr=True))
    holder.close()
    return [(None, "\n".join(lines))]


SAMPLES = {
    "ping": sample_ping,
    "bench": sample_bench,
    "stamp": sample_stamp,
    "stream": sample_stream,
    "relay": sample_relay,
    "errors": sample_errors,
}


# Lines that say how this run went on this machine rather than what the tool says: a
# sender that stalled says so. They are left out of the README and not looked for.
SITUATIONAL = [re.compile(r"slots were skipped")]


def situational(line):
    return any(p.search(line) for p in SITUATIONAL)


# Lines whose figures depend on the machine (latencies, a load's rate and counts): only
# their shape is compared. Elsewhere a figure may differ from README's by up to a factor
# of 3 (or by 3), as a run's counts and rates may, but not more.
VOLATILE = re.compile(r"time=|rtt|latency|PDV|requests/s")


def numbers(line):
    """A line's figures, sizes and rates in base units (999.8 Mbits/sec is 1.00 Gbits/sec)."""
    found = []
    for n, prefix in re.findall(r"(\d+(?:\.\d+)?)(?:\s*([KMG])(?=bits/sec|Bytes))?", line):
        found.append(float(n) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[prefix])
    return found


def close(a, b):
    return abs(a - b) <= 3 or (min(a, b) > 0 and max(a, b) / min(a, b) <= 3)


def render(steps, indent):
    lines = []
    for cmd, out in steps:
        if cmd is not None:
            lines.append(f"$ {cmd}")
        if out:
            lines.extend(l for l in out.split("\n") if not situational(l))
    return "\n".join(indent + l if l else indent.rstrip() for l in lines)


def mask(line):
    """A line's shape: numbers, units' prefixes and runs of spaces masked."""
    line = re.sub(r"\d+(\.\d+)?", "N", line)
    line = re.sub(r"\b[KMG]?(bits/sec|Bytes)\b", r"X\1", line)
    return re.sub(r"\s+", " ", line).strip()


def blocks(text):
    """(name, start, end, indent) of each sample block: the lines between its fences."""
    lines = text.split("\n")
    found = []
    for i, line in enumerate(lines):
        m = re.match(r"\s*<!-- sample: (\w+) -->", line)
        if not m:
            continue
        open_at = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
        close_at = next(j for j in range(open_at + 1, len(lines)) if lines[j].strip() == "```")
        indent = lines[open_at][: len(lines[open_at]) - len(lines[open_at].lstrip())]
        found.append((m.group(1), open_at + 1, close_at, indent))
    return lines, found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--udpkit", default=None)
    args = ap.parse_args()
    udpkit = args.udpkit
    if udpkit is None:
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
        udpkit = os.path.join(ROOT, "target", "release", "udpkit")
    text = open(README).read()
    lines, found = blocks(text)
    if {name for name, *_ in found} != set(SAMPLES):
        print(f"README's samples {sorted(n for n, *_ in found)} are not the script's "
              f"{sorted(SAMPLES)}", file=sys.stderr)
        return 1
    drift = []
    # Last first, so that earlier positions stay right while blocks are replaced.
    for name, start, end, indent in reversed(found):
        lab = Lab(udpkit)
        try:
            made = render(SAMPLES[name](lab), indent)
        finally:
            lab.close()
        if args.check:
            today = made.split("\n")
            have = [mask(l) for l in today]
            paired = set()
            at = 0
            for line in lines[start:end]:
                if situational(line):
                    continue
                shape = mask(line)
                while at < len(have) and have[at] != shape:
                    at += 1
                if at == len(have):
                    drift.append(f"sample {name}: README's line\n  {line.strip()}\n"
                                 f"has no like in what the command prints today:\n{made}")
                    break
                paired.add(at)
                if not VOLATILE.search(line) and not all(
                    close(a, b) for a, b in zip(numbers(line), numbers(today[at]))
                ):
                    drift.append(f"sample {name}: README's figures in\n  {line.strip()}\n"
                                 f"are far from today's\n  {today[at].strip()}")
                at += 1
            else:
                for i, line in enumerate(today):
                    if i not in paired and line.strip() and not situational(line):
                        drift.append(f"sample {name}: the command prints\n  {line.strip()}\n"
                                     f"which README's sample does not show")
        else:
            lines[start:end] = made.split("\n")
    if args.check:
        for d in drift:
            print(d, file=sys.stderr)
        if not drift:
            print(f"{len(found)} samples match what the commands print")
        return 1 if drift else 0
    open(README, "w").write("\n".join(lines))
    print(f"{len(found)} samples written to README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
