#!/bin/bash
# A/B of two udpkit builds, side by side in one run, loopback only, pinned (server on CPU 1,
# clients on CPU 0): old vs new udpkit ping -i 0 and bench --window 64 against the same server, alternating.
OLD=${1:?usage: ab_binaries.sh OLD_UDPKIT NEW_UDPKIT}; NEW=${2:?usage: ab_binaries.sh OLD_UDPKIT NEW_UDPKIT}
TMP=$(mktemp); trap 'rm -f "$TMP"' EXIT
taskset -c 1 $NEW server -p 0 -q > "$TMP" & SRV=$!
sleep 0.3; P=$(head -1 "$TMP" | awk -F: '{print $NF}')
for r in 1 2 3 4; do
  for b in OLD NEW; do
    bin=${!b}
    p50=$(taskset -c 0 $bin ping 127.0.0.1 -p $P -c 20000 -i 0 --json | python3 -c "import json,sys; print(json.load(sys.stdin)['rtt_ms']['p50']*1000)")
    rps=$(taskset -c 0 $bin bench 127.0.0.1 -p $P --window 64 -d 2 --json | python3 -c "import json,sys; print(json.load(sys.stdin)['requests_per_second'])")
    echo "round $r $b ping p50 ${p50} us, bench w64 ${rps}/s"
  done
done
kill $SRV
