# Shared by telemetry_overhead.sh and switch_telemetry.sh (sourced from the
# repository root): the release binaries unless FLUXRIG / OTLP_SINK name
# them, a scratch directory `$work` removed on exit with every background
# job, and `free_port`.
export DUCKDB_LIB_DIR=${DUCKDB_LIB_DIR:-$HOME/.cache/fluxrig/duckdb-1.5.6}
if [ -z "${FLUXRIG:-}" ]; then
  cargo build -q --release -p fluxrig
  FLUXRIG=${CARGO_TARGET_DIR:-target}/release/fluxrig
fi
if [ -z "${OTLP_SINK:-}" ]; then
  cargo build -q --release -p fluxrig-bench --example otlp_sink
  OTLP_SINK=${CARGO_TARGET_DIR:-target}/release/examples/otlp_sink
fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# A TCP port on 127.0.0.1 that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
