#!/usr/bin/env bash
# The example switch under `fluxrig iso8583 load`, against the same load
# straight at one issuer simulator, in one run (docs/BENCHMARKS.md, "The
# example switch: capacity and latency"). For each rate and each case:
#   direct        — the load tool straight at issuer A (no switch);
#   LABEL/POLICY  — the Rack binary LABEL (from BINS) running
#                   examples/payment-switch.yaml with --wal-sync POLICY,
#                   on a fresh data dir.
# During each switch run fsync_probe.py measures the disk (313-byte write +
# fdatasync, one at a time, in the Rack's data dir). Printed per run: the
# load tool's JSON, the probe's count/p50/p99/max, the Rack's RSS (idle,
# half-way, 3 s after), CPU seconds (user + system) during the load, the
# conductor's last counts (forwarded, replied, timeouts, reversals...) and
# the dead letters counted when the Rack stopped. With SETTLE=N the Rack
# then idles N more seconds and its RSS is read again (what a peak leaves
# once the vault's entries and the remembered answers have expired).
# DIRECT=0 leaves out the direct runs (soak runs whose baseline was taken).
#
# usage: BINS="new=path [old=path]" [POLICIES="always interval:5ms"] \
#        [SCENARIO=file] [SETTLE=seconds] [DIRECT=0] [PYTHON=python3] \
#        switch_capacity.sh SECONDS RATE...
# SCENARIO (default examples/payment-switch.yaml) must use the example's
# ports (8583, 9583, 9584); they are moved to 18583, 19583, 19584.
set -u
SECS=$1; shift
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
PY=${PYTHON:-python3}
POLICIES=${POLICIES:-always}
read -r -a PAIRS <<< "$BINS"
FIRST=${PAIRS[0]#*=}
TICK=$(getconf CLK_TCK)
B=$(mktemp -d)
sed -e 's/127.0.0.1:8583/127.0.0.1:18583/; s/127.0.0.1:9583/127.0.0.1:19583/; s/127.0.0.1:9584/127.0.0.1:19584/' \
  "${SCENARIO:-$ROOT/examples/payment-switch.yaml}" > "$B/switch.yaml"
"$FIRST" iso8583 issuer --listen 127.0.0.1:19583 > /dev/null 2>&1 &
IA=$!
"$FIRST" iso8583 issuer --listen 127.0.0.1:19584 > /dev/null 2>&1 &
IB=$!
sleep 1
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
load() {
  "$FIRST" iso8583 load --target "$1" --tps "$2" --duration "${SECS}s" \
    --concurrency 50 --pan-prefixes 411111,555555 --json
}
for TPS in "$@"; do
  if [ "${DIRECT:-1}" != 0 ]; then
    echo "$(date -u +%H:%M:%S) tps=$TPS case=direct load=$(cut -d' ' -f1 /proc/loadavg) $(load 127.0.0.1:19583 "$TPS")"
  fi
  for PAIR in "${PAIRS[@]}"; do
    LABEL=${PAIR%%=*}; BIN=${PAIR#*=}
    for POLICY in $POLICIES; do
      rm -rf "$B/data"; mkdir -p "$B/data"
      "$BIN" run "$B/switch.yaml" --data "$B/data" --quiet --wal-sync "$POLICY" 2> "$B/rack.log" &
      RACK=$!
      for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/18583) 2>/dev/null && break; sleep 0.1; done
      sleep 2
      LOADAVG=$(cut -d' ' -f1 /proc/loadavg)
      IDLE=$(rss $RACK)
      "$PY" "$HERE/fsync_probe.py" "$B/data/probe.bin" > "$B/probe.out" &
      PROBE=$!
      ( sleep $((SECS / 2)); rss $RACK > "$B/mid" ) &
      C0=$(cpu $RACK)
      R=$(load 127.0.0.1:18583 "$TPS")
      C1=$(cpu $RACK)
      kill -TERM $PROBE; wait $PROBE
      sleep 3
      AFTER=$(rss $RACK)
      SETTLED=
      if [ -n "${SETTLE:-}" ]; then
        sleep "$SETTLE"
        SETTLED=" rss_kb_after_${SETTLE}s=$(rss $RACK)"
      fi
      kill -TERM $RACK; wait $RACK
      # The conductor's last counts and the dead letters at the stop.
      COUNTS=$(grep -o 'conductor forwarded=.* failovers=[0-9]*' "$B/rack.log" | tail -1 | sed 's/^conductor //')
      DEAD=$(grep -o 'rack stopped dead_letters=[0-9]*' "$B/rack.log" | tail -1 | sed 's/^rack stopped //')
      echo "$(date -u +%H:%M:%S) tps=$TPS case=$LABEL/$POLICY load=$LOADAVG rss_kb[idle,mid,after]=[$IDLE,$(cat "$B/mid"),$AFTER]$SETTLED rack_cpu_s=$(awk -v c=$((C1 - C0)) -v t="$TICK" 'BEGIN {printf "%.2f", c / t}') fsync[n,p50,p99,max]=[$(cat "$B/probe.out")] $R conductor[$COUNTS] ${DEAD:-dead_letters=0}"
    done
  done
done
kill $IA $IB; wait
rm -rf "$B"
