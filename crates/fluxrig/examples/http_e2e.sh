#!/usr/bin/env bash
# http_in -> file_out end to end, --wal-sync always vs none, 512 requests in flight.
# Usage: http_e2e.sh FLUXRIG HTTP_LOAD [SECONDS] [ROUNDS]
# (release builds: target/release/fluxrig, target/release/examples/http_load;
# results: docs/BENCHMARKS.md, "Rack end to end")
set -euo pipefail
FLUXRIG=$1; LOAD=$2; SECS=${3:-10}; ROUNDS=${4:-2}
PORT=18431
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  for policy in always none; do
    d="$work/$policy-$round"; mkdir -p "$d"
    cat > "$d/s.yaml" <<YAML
meta: {name: e2e, version: 1}
gears:
  - {name: ingress, type: http_in, config: {listen: '127.0.0.1:$PORT', path: /in, accept_timeout: 10s}}
  - {name: sink, type: file_out, config: {path: out.jsonl}}
wires:
  - {from: ingress.out, to: sink.in}
YAML
    (cd "$d" && exec env FLUXRIG_LOG=info "$FLUXRIG" run s.yaml --quiet --data state --wal-sync "$policy" 2> rack.log) &
    pid=$!
    for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
    "$LOAD" "http://127.0.0.1:$PORT/in" 512 1 > /dev/null   # warm-up
    result=$("$LOAD" "http://127.0.0.1:$PORT/in" 512 "$SECS")
    kill -TERM $pid; wait $pid
    lines=$(wc -l < "$d/out.jsonl")
    walstats=$(grep 'write-ahead log closed' "$d/rack.log" | grep -oE 'records=[0-9]+ batches=[0-9]+ syncs=[0-9]+' || true)
    echo "round=$round policy=$policy $result lines=$lines $walstats"
  done
done
