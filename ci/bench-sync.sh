#!/usr/bin/env bash
# Warehouse sync: segflow's PostgreSQL sync of customer_segments against `psql \copy` of the
# same rows as CSV into the same table, 3 rounds on one local PostgreSQL 15, then the time of
# an incremental sync after a day's changes (ci/bench/warehouse_sync.py).
#
#   ci/bench-sync.sh [S|M|L]     default M (1M customers)
#
# Syncs the full default pipeline's output of ci/bench.sh when it is there
# ($CARGO_TARGET_DIR/bench/<size>/full), else generates the data and runs the pipeline once;
# the incremental step publishes the next day's run into that output. Release build, like
# ci/bench.sh with BENCH_PROFILE=release.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-M}
. ci/bench/full-output.sh
work="$dir/sync"
rm -rf "$work"
mkdir -p "$work"
"$venv/bin/python" ci/bench/warehouse_sync.py "$(realpath "$bin")" "$(realpath "$output")" \
    "$(realpath "$dir/in")" "$(realpath "$work")" | tee "$dir/sync.txt"
