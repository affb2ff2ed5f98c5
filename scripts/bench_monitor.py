#!/usr/bin/env python3
"""udpkit monitor at scale: N targets (10,000) at one probe a second each, from one process,
spread over 127.0.0.0/8 and four ports of udpkit servers; its CPU, memory and send lag;
then, side by side, Debian's prometheus-blackbox-exporter's ICMP prober over the same
number of loopback addresses, each scraped (probed) once a second, and the cost per probe
of each.

  python3 scripts/bench_monitor.py [--targets 10000] [--seconds 30] [--udpkit PATH]
                                   [--blackbox-targets N] [--no-blackbox]

Runs as root in a network namespace of its own (only its loopback, where a server bound
to 0.0.0.0 answers every 127.0.0.0/8 address), deleted at the end. The monitor is pinned
to CPU 0; the servers, the blackbox exporter's scraper and the scrapes of the monitor to
CPU 1. Goals (issue 24): under 25% of one core, under 64 MiB, no probe sent more than
10 ms late; a cost per probe at most blackbox_exporter's.
"""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import release

NS = f"udpkit-bench-monitor-{os.getpid()}"
PORTS = [20001, 20002, 20003, 20004]
TICK = os.sysconf("SC_CLK_TCK")


def sh(*cmd):
    subprocess.run(cmd, check=True)


def in_ns(cmd):
    return ["ip", "netns", "exec", NS] + cmd


def pinned(cpu, cmd):
    return ["taskset", "-c", str(cpu)] + cmd if shutil.which("taskset") else cmd


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def ns_get(port, path, timeout=60):
    """GET http://127.0.0.1:port/path inside the namespace (through `ip netns exec curl`)."""
    out = subprocess.run(in_ns(pinned(1, ["curl", "-s", "--max-time", str(timeout),
                                          f"http://127.0.0.1:{port}{path}"])),
                         capture_output=True, text=True)
    return out.stdout


def families(text):
    """Sums of each metric name's samples (without labels), and histogram buckets by le."""
    sums, buckets = {}, {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        sums[name] = sums.get(name, 0.0) + float(value)
        if name == "udpkit_monitor_send_lag_seconds_bucket":
            le = name_labels.split('le="', 1)[1].split('"', 1)[0]
            buckets[le] = float(value)
    return sums, buckets


def quantile_bound(before, after, q):
    """The upper bound of the bucket holding quantile q of what was counted between two
    scrapes of a cumulative histogram."""
    les = sorted(after, key=lambda le: float("inf") if le == "+Inf" else float(le))
    total = after["+Inf"] - before.get("+Inf", 0)
    for le in les:
        if after[le] - before.get(le, 0) >= q * total:
            return le
    return "+Inf"


def highest_bucket(before, after):
    """The upper bound of the highest bucket that counted anything between two scrapes."""
    les = sorted(after, key=lambda le: float("inf") if le == "+Inf" else float(le))
    highest, below = None, 0.0
    for le in les:
        n = after[le] - before.get(le, 0)
        if n > below:
            highest = le
        below = n
    return highest


def monitor_run(udpkit, n, seconds, tmp):
    config = os.path.join(tmp, "targets.toml")
    with open(config, "w") as f:
        f.write("[defaults]\ninterval = 1.0\ntimeout = 1.0\n\n")
        for i in range(n):
            f.write(f'[[target]]\naddress = "127.{1 + i // 250}.{1 + i % 250}.1:'
                    f'{PORTS[i % len(PORTS)]}"\n')
    # The rate limit off: every probe comes from 127.0.0.1, one prefix.
    servers = [subprocess.Popen(in_ns(pinned(1, [udpkit, "server", "0.0.0.0", "-p", str(p),
                                                 "-q", "--rate-limit", "off"])),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for p in PORTS]
    ready = os.path.join(tmp, "ready.json")
    mon = None
    try:
        time.sleep(0.5)
        mon = subprocess.Popen(in_ns(pinned(0, [udpkit, "monitor", "--config", config,
                                                "--metrics", "127.0.0.1:0",
                                                "--ready-file", ready])),
                               stdout=subprocess.DEVNULL)
        for _ in range(600):
            if os.path.exists(ready):
                break
            time.sleep(0.05)
        port = int(json.load(open(ready))["metrics"].rsplit(":", 1)[1])
        # The monitor's own pid (ip netns exec and taskset exec it).
        pid = mon.pid
        time.sleep(5)  # every target has started (each at a random point of its first second)
        # The window runs from the start of one scrape to the start of the next, as
        # Prometheus would scrape: one scrape's CPU falls in it (at 30 s, one every 30 s).
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        before, lag_before = families(ns_get(port, "/metrics"))
        time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        after, lag_after = families(ns_get(port, "/metrics"))
        rss, hwm = memory_kib(pid, "VmRSS:"), memory_kib(pid, "VmHWM:")
        sent = after["udpkit_probe_requests_total"] - before["udpkit_probe_requests_total"]
        replies = after["udpkit_probe_replies_total"] - before["udpkit_probe_replies_total"]
        lost = after["udpkit_probe_lost_total"] - before["udpkit_probe_lost_total"]
        # A scrape's own cost, on the monitor's CPU: ten in a row.
        c0 = cpu_seconds(pid)
        for _ in range(10):
            size = len(ns_get(port, "/metrics"))
        scrape = (cpu_seconds(pid) - c0) / 10
        return {
            "targets": n,
            "seconds": t1 - t0,
            "cpu_share": (cpu1 - cpu0) / (t1 - t0),
            "probes_per_second": sent / (t1 - t0),
            "cpu_us_per_probe": (cpu1 - cpu0) / max(sent, 1) * 1e6,
            "replies": replies,
            "lost": lost,
            "rss_mib": rss / 1024,
            "peak_rss_mib": hwm / 1024,
            "lag_p99_le_s": quantile_bound(lag_before, lag_after, 0.99),
            "lag_p999_le_s": quantile_bound(lag_before, lag_after, 0.999),
            "lag_max_le_s": highest_bucket(lag_before, lag_after),
            "lag_max_s": after.get("udpkit_monitor_send_lag_max_seconds"),
            "scrape_bytes": size,
            "scrape_cpu_s": scrape,
        }
    finally:
        for p in servers + ([mon] if mon else []):
            p.kill()
            p.wait()


def blackbox_run(n, seconds, tmp):
    """The ICMP prober of blackbox_exporter over n loopback addresses, each probed once a
    second by a scraper of ours (keep-alive connections, paced), its CPU per probe."""
    exe = shutil.which("prometheus-blackbox-exporter")
    if not exe:
        return None
    config = os.path.join(tmp, "blackbox.yml")
    with open(config, "w") as f:
        f.write("modules:\n  icmp:\n    prober: icmp\n    timeout: 1s\n    icmp:\n"
                "      preferred_ip_protocol: ip4\n")
    port = 29115
    bb = subprocess.Popen(in_ns(pinned(0, [exe, f"--config.file={config}",
                                           f"--web.listen-address=127.0.0.1:{port}",
                                           "--log.level=error"])),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        pid = bb.pid
        # The scraper runs inside the namespace: this script, again, as a child.
        scraper = subprocess.Popen(in_ns(pinned(1, [sys.executable, __file__, "--scrape",
                                                    str(port), str(n), str(seconds + 4)])),
                                   stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        done = json.loads(scraper.communicate(timeout=seconds + 60)[0])
        rate = done["probes"] / done["seconds"]
        return {
            "targets": n,
            "probes_per_second": rate,
            "cpu_share": (cpu1 - cpu0) / (t1 - t0),
            "cpu_us_per_probe": (cpu1 - cpu0) / max(rate * (t1 - t0), 1) * 1e6,
            "success": done["success"],
            "rss_mib": memory_kib(pid, "VmRSS:") / 1024,
        }
    finally:
        bb.kill()
        bb.wait()


def scrape(port, n, seconds):
    """Inside the namespace: probes n addresses once a second each through blackbox's
    /probe, from 32 threads with keep-alive connections; prints what it did as JSON."""
    end = time.monotonic() + seconds
    counts = {"probes": 0, "success": 0}
    lock = threading.Lock()
    threads = 32

    def worker(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine = list(range(k, n, threads))
        start = time.monotonic()
        i = 0
        while time.monotonic() < end:
            # Target j of this thread is due at start + (its round) + j / len(mine).
            due = start + i / len(mine)
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            t = mine[i % len(mine)]
            ip = f"127.{1 + t // 250}.{1 + t % 250}.1"
            try:
                conn.request("GET", f"/probe?module=icmp&target={ip}")
                body = conn.getresponse().read().decode()
                ok = "probe_success 1" in body
            except (OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                ok = False
            with lock:
                counts["probes"] += 1
                counts["success"] += ok
            i += 1

    started = time.monotonic()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    counts["seconds"] = time.monotonic() - started
    print(json.dumps(counts))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--scrape":
        scrape(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--blackbox-targets", type=int)
    parser.add_argument("--no-blackbox", action="store_true")
    parser.add_argument("--udpkit")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark builds a network namespace of its own")
    udpkit = release(args.udpkit)
    sh("ip", "netns", "add", NS)
    tmp = tempfile.mkdtemp(prefix="udpkit-bench-monitor-")
    try:
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        m = monitor_run(udpkit, args.targets, args.seconds, tmp)
        print(f"udpkit monitor, {m['targets']} targets at 1/s: "
              f"{m['probes_per_second']:.0f} probes/s, CPU {100 * m['cpu_share']:.1f}% of a core "
              f"({m['cpu_us_per_probe']:.1f} µs a probe), RSS {m['rss_mib']:.1f} MiB "
              f"(peak {m['peak_rss_mib']:.1f}), send lag p99 <= {m['lag_p99_le_s']} s, "
              f"p99.9 <= {m['lag_p999_le_s']} s, max <= {m['lag_max_le_s']} s "
              f"(since start {m['lag_max_s']:.4f} s); "
              f"{m['replies']:.0f} replies, {m['lost']:.0f} lost; a scrape "
              f"{m['scrape_bytes'] / 1e6:.1f} MB, {1e3 * m['scrape_cpu_s']:.0f} ms of CPU",
              flush=True)
        if not args.no_blackbox:
            n = args.blackbox_targets or args.targets
            b = blackbox_run(n, args.seconds, tmp)
            if b is None:
                print("prometheus-blackbox-exporter: not installed (apt install "
                      "prometheus-blackbox-exporter)")
            else:
                print(f"blackbox_exporter icmp, {b['targets']} targets each scraped at 1/s: "
                      f"{b['probes_per_second']:.0f} probes/s done, CPU "
                      f"{100 * b['cpu_share']:.1f}% of a core "
                      f"({b['cpu_us_per_probe']:.1f} µs a probe), RSS {b['rss_mib']:.1f} MiB, "
                      f"{b['success']} successful")
                print(f"cost per probe, udpkit / blackbox: "
                      f"{m['cpu_us_per_probe'] / b['cpu_us_per_probe']:.2f}x")
    finally:
        subprocess.run(["ip", "netns", "del", NS])
        shutil.rmtree(tmp, True)


if __name__ == "__main__":
    main()
