#!/usr/bin/env bash
# The benchmarks' data, generated once and kept for the next run:
#
#   ci/bench/generate.sh SEGFLOW_BIN CUSTOMERS SEED DIR     -> DIR/in/*.csv
#
# DIR/generated marks a finished generation, so an interrupted one is started again.
set -euo pipefail
bin=$1 customers=$2 seed=$3 dir=$4
if [ ! -f "$dir/generated" ]; then
    rm -rf "$dir"
    "$bin" generate --customers "$customers" --seed "$seed" --out "$dir/in" > /dev/null
    touch "$dir/generated"
fi
