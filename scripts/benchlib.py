"""Shared helpers of the benchmark scripts: free ports, waiting for a server, pinning.

Only loopback addresses; callers kill what they start.
"""

import os
import shutil
import atexit
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")


def free_port():
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, payload=b"ping"):
    """Waits until something answers on 127.0.0.1:port (bounded: 10 s)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        for _ in range(100):
            if proc.poll() is not None:
                raise SystemExit(f"server exited early: {proc.args}")
            try:
                s.sendto(payload, ("127.0.0.1", port))
                s.recvfrom(65536)
                return
            except OSError:
                time.sleep(0.05)
    raise SystemExit(f"server did not answer: {proc.args}")


def build():
    """Builds udpkit (release) and the yardsticks; returns (udpkit path, yardstick dir)."""
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    tools = tempfile.mkdtemp(prefix="udpkit-yardstick-")
    atexit.register(shutil.rmtree, tools, True)
    subprocess.run([os.path.join(SHARED, "yardstick", "build.sh"), tools], check=True,
                   stdout=subprocess.DEVNULL)
    return os.path.join(ROOT, "target", "release", "udpkit"), tools


def rss_kib(pid):
    """The resident memory of process `pid` in KiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pinned_server(cmd):
    """Starts a server on CPU 1, its output discarded."""
    return subprocess.Popen(["taskset", "-c", "1"] + cmd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def pinned_client(cmd, timeout):
    """Runs a client on CPU 0 to its end; returns what it printed."""
    out = subprocess.run(["taskset", "-c", "0"] + cmd, capture_output=True, text=True,
                         timeout=timeout, check=True)
    return out.stdout


def release(path=None):
    """`path`, or this checkout's release build of udpkit (built now)."""
    if path:
        return path
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release", "udpkit")


def start_ready(cmd):
    """Starts `cmd` (a udpkit server or relay) with `--ready-file`, output discarded; waits
    (bounded: 10 s) for its ready event; returns the process and its (host, port)."""
    import json
    ready = os.path.join(tempfile.mkdtemp(prefix="udpkit-ready-"), "ready.json")
    proc = subprocess.Popen(cmd + ["--ready-file", ready], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(200):
        if os.path.exists(ready):
            host, port = json.load(open(ready))["address"].rsplit(":", 1)
            os.remove(ready)
            os.rmdir(os.path.dirname(ready))
            return proc, (host, int(port))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise SystemExit(f"not ready: {cmd}")
