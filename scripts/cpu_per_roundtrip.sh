#!/bin/bash
# CPU time per ping-pong round trip, each side, for two udpkit builds: each build's own
# `server -q` on CPU 1 and `ping -i 0 -c N` on CPU 0, under `perf stat -e task-clock`,
# alternating, ROUNDS times. Less noisy than latency on a shared machine: it counts the
# work done, not the time waited. Loopback only.
# usage: scripts/cpu_per_roundtrip.sh OLD_UDPKIT NEW_UDPKIT [ROUNDS] [N]
OLD=${1:?usage: cpu_per_roundtrip.sh OLD NEW [ROUNDS] [N]}; NEW=${2:?usage: cpu_per_roundtrip.sh OLD NEW [ROUNDS] [N]}
ROUNDS=${3:-3}; N=${4:-50000}
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)"; exit 2; }
TMP=$(mktemp -d); trap 'pkill -INT -f "$TMP/srv" 2>/dev/null; rm -rf "$TMP"' EXIT
us() { awk -F, -v n="$N" '$3=="task-clock" {printf "%.1f", $1*1000/n}' "$1"; }
for r in $(seq "$ROUNDS"); do
  for which in OLD NEW; do
    bin=${!which}
    cp "$bin" "$TMP/srv"
    perf stat -x, -e task-clock -o "$TMP/s.txt" taskset -c 1 "$TMP/srv" server -p 0 -q > "$TMP/out" & S=$!
    for _ in $(seq 50); do [ -s "$TMP/out" ] && break; sleep 0.1; done
    P=$(head -1 "$TMP/out" | awk -F: '{print $NF}')
    perf stat -x, -e task-clock -o "$TMP/c.txt" taskset -c 0 "$bin" ping 127.0.0.1 -p "$P" -c "$N" -i 0 -q > /dev/null
    pkill -INT -f "$TMP/srv server"; wait $S 2>/dev/null
    echo "round $r $which: client $(us "$TMP/c.txt") us, server $(us "$TMP/s.txt") us CPU per round trip"
  done
done
