#!/usr/bin/env bash
# Payment switch with telemetry off and on (docs/BENCHMARKS.md,
# "Telemetry"): `fluxrig iso8583 load` → examples/payment-switch.yaml (on
# free ports) → two issuer simulators, alternating in each round:
#   off   no OTLP export, admin endpoint off;
#   otlp  full OTLP export to a local receiver (examples/otlp_sink.rs): a
#         span for every hop of every transaction (--trace-sample 1),
#         metrics every second.
# Prints the load tool's JSON summary per run.
#
# Usage: crates/fluxrig-bench/scripts/switch_telemetry.sh   (from the repository root)
#   FLUXRIG=path/to/fluxrig OTLP_SINK=path/to/otlp_sink (default: build release)
#   TPS=4000 DURATION=15s ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/../../.."

TPS=${TPS:-4000}
DURATION=${DURATION:-15s}
ROUNDS=${ROUNDS:-3}
. crates/fluxrig-bench/scripts/otlp_common.sh

acq=$(free_port); ia=$(free_port); ib=$(free_port); otlp=$(free_port)
sed -e "s/127.0.0.1:8583/127.0.0.1:$acq/; s/127.0.0.1:9583/127.0.0.1:$ia/; s/127.0.0.1:9584/127.0.0.1:$ib/" \
  examples/payment-switch.yaml > "$work/switch.yaml"

echo "== machine"
echo "$(nproc) cores, $(uname -r), $(date -u '+%F %T') UTC, binary $FLUXRIG, $TPS TPS for $DURATION"
uptime

"$FLUXRIG" iso8583 issuer --listen "127.0.0.1:$ia" 2>/dev/null &
"$FLUXRIG" iso8583 issuer --listen "127.0.0.1:$ib" 2>/dev/null &
"$OTLP_SINK" "127.0.0.1:$otlp" > "$work/otlp_sink.out" &
sink=$!
sleep 1

one() {
  local data=$work/d-$RANDOM$RANDOM extra=() rack
  if [ "$1" = otlp ]; then
    extra=(--otlp-endpoint "http://127.0.0.1:$otlp" --otlp-interval 1s --trace-sample 1)
  fi
  FLUXRIG_LOG=warn "$FLUXRIG" run "$work/switch.yaml" --data "$data" --quiet --admin-listen off "${extra[@]}" &
  rack=$!
  while ! (exec 3<>"/dev/tcp/127.0.0.1/$acq") 2>/dev/null; do sleep 0.1; done
  "$FLUXRIG" iso8583 load --target "127.0.0.1:$acq" --tps "$TPS" --duration "$DURATION" \
    --concurrency 50 --pan-prefixes 411111,555555 --json
  kill -INT $rack; wait $rack || true
}

for i in $(seq "$ROUNDS"); do
  echo "round $i off:  $(one off)"
  echo "round $i otlp: $(one otlp)"
done
kill -TERM $sink; wait $sink || true
echo "== OTLP receiver totals: $(cat "$work/otlp_sink.out")"
