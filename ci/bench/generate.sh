#!/usr/bin/env bash
# The benchmarks' data, generated once and kept for the next run:
#
#   ci/bench/generate.sh SEGFLOW_BIN CUSTOMERS SEED DIR     -> DIR/in/*.csv
#
# DIR/generated marks a finished generation, so an interrupted one is started again; it holds a
# hash of the generator's source, so data from an older generator is made again (and the
# outputs kept beside it, made from that data, go with it).
set -euo pipefail
bin=$1 customers=$2 seed=$3 dir=$4
stamp=$(sha256sum "$(dirname "$0")/../../crates/cli/src/generate.rs" | cut -c1-16)
if [ "$(cat "$dir/generated" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$dir"
    "$bin" generate --customers "$customers" --seed "$seed" --out "$dir/in" > /dev/null
    echo "$stamp" > "$dir/generated"
fi
