#!/usr/bin/env bash
# `segflow serve` from the Python ADBC client against DuckDB on the same Delta version:
# point-lookup latency (p50, p99), a group-by over customer_segments, and point lookups per second
# with 4 concurrent clients (ci/bench/serve_latency.py).
#
#   ci/bench-serve.sh [S|M|L] [SECONDS]     default M (1M customers), 10 s per throughput run
#
# Serves the full default pipeline's output of ci/bench.sh when it is there
# ($CARGO_TARGET_DIR/bench/<size>/full), else generates the data and runs the pipeline once.
# Release build, like ci/bench.sh with BENCH_PROFILE=release.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-M}
seconds=${2:-10}
. ci/bench/full-output.sh
token="bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
log="$dir/serve.log"
SEGFLOW_SERVE_TOKENS="bench:$token" "$bin" serve pipelines/customer_segmentation.yaml \
    --var "output=$output" --listen 127.0.0.1:0 > "$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    addr=$(sed -n 's/.*segflow serve listening on \([^ ]*\).*/\1/p' "$log" | head -1)
    [ -n "$addr" ] && break
    kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "segflow serve did not start:"; cat "$log"; exit 1; }
echo "segflow serve on $addr ($(nproc) cores)" >&2
"$venv/bin/python" ci/bench/serve_latency.py "grpc://$addr" "$token" "$output" "$seconds" \
    | tee "$dir/serve.txt"
echo "query log lines: $(grep -c '^query ' "$log")" >&2
