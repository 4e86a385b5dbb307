#!/usr/bin/env bash
# The reference checks, on freshly generated data: the default pipeline's customer_segments must
# equal an independent DuckDB computation of RFM for every customer (tests/reference/rfm_duckdb.py),
# for the default as_of and for one in the middle of the history; and its k-means inertia must be
# within 1% of scikit-learn's best of 10 for every k it tried (tests/reference/kmeans_sklearn.py);
# and its customer_clv must equal Python lifetimes' summary and predictions at segflow's fitted
# parameters for every customer, within 1e-6 (tests/reference/clv_lifetimes.py), which also fits
# the CDNOW sample through the same stage and checks the published parameters.
# Python tools come from ci/pyenv.sh. Called by ci/test.sh after the cargo tests built the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
venv=$(ci/pyenv.sh)
cargo build --workspace --all-targets --locked --quiet
bin="$target/debug/segflow"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" generate --customers 20000 --seed 2026 --out "$work/in" > /dev/null 2>&1
for as_of in "" 2024-02-29; do
    "$bin" run pipelines/customer_segmentation.yaml --var "input=$work/in" \
        --var "output=$work/out" --var "as_of=$as_of" > "$work/run.log" 2>&1 \
        || { cat "$work/run.log"; exit 1; }
    "$venv/bin/python" tests/reference/rfm_duckdb.py "$work/in" "$work/out" $as_of
    "$venv/bin/python" tests/reference/kmeans_sklearn.py "$work/out"
    "$venv/bin/python" tests/reference/clv_lifetimes.py check "$work/in" "$work/out" $as_of
done
"$venv/bin/python" tests/reference/clv_lifetimes.py cdnow "$bin" "$work/cdnow"
