#!/usr/bin/env bash
# The example switch with durable replies on and off, against a build
# without them (docs/BENCHMARKS.md, "Durable replies"). For each rate, three
# Racks in turn (fresh data dir each), same two issuer simulators:
#   before    — BEFORE binary, the example as is;
#   after     — AFTER binary, the example as is (durable_replies defaults on);
#   after-off — AFTER binary, `durable_replies: false`.
# During each load run, fsync_probe.py measures the disk: a 313-byte write +
# fdatasync, one at a time, in the Rack's data dir.
#
# usage: BEFORE=path AFTER=path [PYTHON=python3] durable_replies.sh SECONDS RATE...
set -u
SECS=$1; shift
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
PY=${PYTHON:-python3}
B=$(mktemp -d)
sed -e 's/127.0.0.1:8583/127.0.0.1:18583/; s/127.0.0.1:9583/127.0.0.1:19583/; s/127.0.0.1:9584/127.0.0.1:19584/' \
  "$ROOT/examples/payment-switch.yaml" > "$B/switch.yaml"
sed -e 's/      timeout: 2s/      timeout: 2s\n      durable_replies: false/' "$B/switch.yaml" > "$B/switch-off.yaml"
"$AFTER" iso8583 issuer --listen 127.0.0.1:19583 > /dev/null 2>&1 &
IA=$!
"$AFTER" iso8583 issuer --listen 127.0.0.1:19584 > /dev/null 2>&1 &
IB=$!
sleep 1
for TPS in "$@"; do
  for MODE in before after after-off; do
    case $MODE in
      before) BIN=$BEFORE; SC=$B/switch.yaml;;
      after) BIN=$AFTER; SC=$B/switch.yaml;;
      after-off) BIN=$AFTER; SC=$B/switch-off.yaml;;
    esac
    rm -rf "$B/data"; mkdir -p "$B/data"
    "$BIN" run "$SC" --data "$B/data" --quiet 2> "$B/rack-$MODE-$TPS.log" &
    RACK=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/18583) 2>/dev/null && break; sleep 0.1; done
    sleep 2
    LOAD=$(cut -d' ' -f1 /proc/loadavg)
    "$PY" "$HERE/fsync_probe.py" "$B/data/probe.bin" > "$B/probe.out" &
    PROBE=$!
    R=$("$AFTER" iso8583 load --target 127.0.0.1:18583 --tps "$TPS" --duration "${SECS}s" \
      --concurrency 50 --pan-prefixes 411111,555555 --json)
    kill -TERM $PROBE; wait $PROBE
    RSS=$(awk '/VmRSS/ {print $2}' /proc/$RACK/status)
    kill -TERM $RACK; wait $RACK
    echo "$(date -u +%H:%M:%S) tps=$TPS mode=$MODE load=$LOAD rss_kb=$RSS fsync[n p50 p99 max]=$(cat "$B/probe.out") $R"
  done
done
kill $IA $IB; wait
rm -rf "$B"
