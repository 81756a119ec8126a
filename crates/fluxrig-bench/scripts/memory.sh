#!/usr/bin/env bash
# Memory and size of the release `fluxrig` binary (docs/BENCHMARKS.md,
# "Rack runtime"):
#   1. the release binary's size (as built, and stripped);
#   2. peak RSS of `fluxrig run examples/quickstart.yaml`;
#   3. RSS every 5 s over a sustained run of generate → map → discard
#      flat out (SUSTAIN seconds, default 300);
#   4. RSS every 5 s with a slow sink: generate → map → stdout piped into a
#      reader taking 64 KiB/s (SLOW seconds, default 60) — back-pressure
#      must hold memory flat, not let queues grow.
#
# Usage: crates/fluxrig-bench/scripts/memory.sh   (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/../../.."

SUSTAIN=${SUSTAIN:-300}
SLOW=${SLOW:-60}
export DUCKDB_LIB_DIR=${DUCKDB_LIB_DIR:-$HOME/.cache/fluxrig/duckdb-1.5.6}
target=${CARGO_TARGET_DIR:-target}

cargo build -q --release -p fluxrig
bin=$target/release/fluxrig
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== machine"
echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r), $(date -u +%F)"
uptime

echo "== binary"
strip -o "$work/fluxrig.stripped" "$bin"
echo "release binary: $(stat -c %s "$bin") bytes; stripped: $(stat -c %s "$work/fluxrig.stripped") bytes"
echo "linked beside it: libduckdb.so $(stat -c %s "$DUCKDB_LIB_DIR/libduckdb.so") bytes (audit query)"

echo "== quickstart peak RSS"
/usr/bin/time -f "%M" -o "$work/qs.time" "$bin" run examples/quickstart.yaml --quiet --data "$work/qs-data" >/dev/null
echo "quickstart: peak RSS $(cat "$work/qs.time") KiB"

# Samples VmRSS (KiB) of $1 every 5 s until it exits; prints one line per sample.
sample() {
    local pid=$1 t=0
    while kill -0 "$pid" 2>/dev/null; do
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        [ -n "$rss" ] && echo "$t $rss"
        sleep 5
        t=$((t + 5))
    done
}

summary() { # name file
    python3 - "$1" "$2" <<'EOF'
import sys
name, path = sys.argv[1], sys.argv[2]
rows = [tuple(map(int, l.split())) for l in open(path) if l.strip()]
warm = [r for t, r in rows if t >= 30] or [r for _, r in rows]
lo, hi = min(warm), max(warm)
mid = sorted(warm)[len(warm) // 2]
print(f"{name}: {len(rows)} samples; after 30 s warm-up RSS min {lo} KiB, median {mid} KiB, "
      f"max {hi} KiB; spread {100 * (hi - lo) / mid:.1f}% of the median")
EOF
}

cat > "$work/sustain.yaml" <<'EOF'
meta: {name: sustain, version: 1.0.0}
gears:
  - {name: source, type: generate, config: {interval: 0s}}
  - {name: enrich, type: map, config: {source: '.double = int!(.seq) * 2'}}
  - {name: sink, type: discard}
wires:
  - {from: source.out, to: enrich.in}
  - {from: enrich.out, to: sink.in}
EOF
echo "== sustained load, ${SUSTAIN} s"
"$bin" --log-format json run "$work/sustain.yaml" --quiet --machine 1 --for "${SUSTAIN}s" \
    --data "$work/sustain-data" >/dev/null 2>"$work/sustain.log" &
pid=$!
sample $pid > "$work/sustain.rss"
wait $pid
summary "sustained generate→map→discard" "$work/sustain.rss"
cat "$work/sustain.rss" | tr '\n' ' '; echo

cat > "$work/slow.yaml" <<'EOF'
meta: {name: slow-sink, version: 1.0.0}
gears:
  - {name: source, type: generate, config: {interval: 0s}}
  - {name: enrich, type: map, config: {source: '.double = int!(.seq) * 2'}}
  - {name: sink, type: stdout, config: {format: jsonl}}
wires:
  - {from: source.out, to: enrich.in}
  - {from: enrich.out, to: sink.in}
EOF
echo "== slow sink (64 KiB/s reader), ${SLOW} s"
"$bin" run "$work/slow.yaml" --quiet --for "${SLOW}s" --drain-timeout 1s --data "$work/slow-data" 2>/dev/null \
    | python3 -c '
import sys, time
n = 0
while True:
    b = sys.stdin.buffer.read1(4096)
    if not b:
        break
    n += len(b)
    time.sleep(4096 / 65536)
print(f"slow reader took {n} bytes", file=sys.stderr)
' &
sleep 1
pid=$(pgrep -n -f "run $work/slow.yaml")
sample "$pid" > "$work/slow.rss"
wait || true
summary "slow sink" "$work/slow.rss"
cat "$work/slow.rss" | tr '\n' ' '; echo
