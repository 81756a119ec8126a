#!/usr/bin/env bash
# Telemetry overhead (docs/BENCHMARKS.md, "Telemetry"): throughput of
# `fluxrig run` on generate → map → discard, alternating in each round:
#   off          no metrics listener, admin endpoint off, nobody tailing;
#   metrics      --metrics-listen scraped every 100 ms, admin endpoint on;
#   metrics+tail the same plus `fluxrig tail enrich.out` taking a masked
#                JSON copy of every message enrich emits;
#   otlp         full OTLP export to a local receiver (examples/otlp_sink.rs):
#                a span for every hop of every message (--trace-sample 1),
#                metrics every second, plus the metrics listener scraped;
#   otlp-1%      the same with --trace-sample 0.01 (failed and slow hops are
#                still all exported).
# ROUNDS rounds of N messages each; wall time of the whole process.
#
# Usage: crates/fluxrig-bench/scripts/telemetry_overhead.sh   (from the repository root)
#   FLUXRIG=path/to/fluxrig (default: build and use the release binary)
#   N=200000 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/../../.."

N=${N:-200000}
ROUNDS=${ROUNDS:-3}
. crates/fluxrig-bench/scripts/otlp_common.sh

cat > "$work/s.yaml" <<YAML
meta: {name: overhead, version: 1.0.0}
gears:
  - {name: source, type: generate, config: {count: $N, interval: 0s}}
  - {name: enrich, type: map, config: {source: '.double = int!(.seq) * 2'}}
  - {name: sink, type: discard}
wires:
  - {from: source.out, to: enrich.in}
  - {from: enrich.out, to: sink.in}
YAML

now() { date +%s.%N; }
rate() { python3 -c "print(f'{$N / ($2 - $1):.0f}')"; }

echo "== machine"
echo "$(nproc) cores, $(uname -r), $(date -u '+%F %T') UTC, binary $FLUXRIG"
uptime

port=$(free_port)

otlp_port=$(free_port)
"$OTLP_SINK" "127.0.0.1:$otlp_port" > "$work/otlp_sink.out" &
sink=$!

# One run with telemetry on: metrics scraped every $1 s; with $2 = tail,
# `fluxrig tail` takes every message enrich emits; with $2 = otlp, spans
# and metrics go to the local OTLP receiver. Prints msg/s.
on() {
  local data=$work/on-$RANDOM$RANDOM t0 t1 rack tail= scrapes=0 otlp=()
  case "$2" in
    otlp) otlp=(--otlp-endpoint "http://127.0.0.1:$otlp_port" --otlp-interval 1s --trace-sample 1) ;;
    otlp1) otlp=(--otlp-endpoint "http://127.0.0.1:$otlp_port" --otlp-interval 1s --trace-sample 0.01) ;;
  esac
  t0=$(now)
  FLUXRIG_LOG=warn "$FLUXRIG" run "$work/s.yaml" --data "$data" --quiet \
    --metrics-listen "127.0.0.1:$port" "${otlp[@]}" &
  rack=$!
  if [ "$2" = tail ]; then
    while [ ! -f "$data/admin.addr" ] && kill -0 $rack 2>/dev/null; do sleep 0.002; done
    "$FLUXRIG" tail enrich.out --data "$data" > "$work/tail.jsonl" 2>/dev/null &
    tail=$!
  fi
  while kill -0 $rack 2>/dev/null; do
    curl -sf "http://127.0.0.1:$port/metrics" > /dev/null && scrapes=$((scrapes + 1)) || true
    sleep "$1"
  done
  wait $rack
  t1=$(now)
  if [ -n "$tail" ]; then kill $tail 2>/dev/null || true; wait $tail 2>/dev/null || true; fi
  echo "$(rate "$t0" "$t1") $scrapes"
}

pct() { python3 -c "print(f'{100 * $1 / $2:.1f}')"; }

echo "== rounds (msg/s; % of off in the same round)"
for i in $(seq "$ROUNDS"); do
  t0=$(now)
  FLUXRIG_LOG=warn "$FLUXRIG" run "$work/s.yaml" --data "$work/off-$i" --quiet --admin-listen off
  t1=$(now)
  off=$(rate "$t0" "$t1")
  read -r m ms < <(on 0.1 -)
  read -r t ts < <(on 0.1 tail)
  read -r o os < <(on 0.1 otlp)
  read -r o1 o1s < <(on 0.1 otlp1)
  echo "round $i: off $off | metrics $m ($(pct "$m" "$off") %, $ms scrapes) | metrics+tail $t ($(pct "$t" "$off") %, $(wc -l < "$work/tail.jsonl") tailed) | otlp $o ($(pct "$o" "$off") %) | otlp-1% $o1 ($(pct "$o1" "$off") %)"
done
kill -TERM $sink; wait $sink || true
echo "== OTLP receiver totals (all otlp runs): $(cat "$work/otlp_sink.out")"
echo "   spans expected: $((ROUNDS * N * 3)) with sampling 1 plus about 1 % of that with 0.01 (3 hops per message; fewer = dropped by the bounded queue, counted in fluxrig_telemetry_dropped_total)"
