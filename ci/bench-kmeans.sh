#!/usr/bin/env bash
# k-means against scikit-learn on the same data: the default pipeline's `clusters` stage (k from
# 3 to 8, k-means++, n_init=10) and scikit-learn's KMeans with the same settings on the same
# features (tests/reference/kmeans_sklearn.py), run alternately 3 times. Prints per k the
# inertia ratio and the median fit times and their ratio (segflow / scikit-learn).
#
#   ci/bench-kmeans.sh [CUSTOMERS]     default 200000 (about 10 orders each)
#
# Generated data is kept under $CARGO_TARGET_DIR/bench for the next run. segflow runs as the debug
# build the tests use (dependencies optimised, see Cargo.toml); both sides get the same cores.
set -euo pipefail
cd "$(dirname "$0")/.."
customers=${1:-200000}
target="${CARGO_TARGET_DIR:-target}"
venv=$(ci/pyenv.sh)
cargo build -p segflow-cli --locked --quiet
bin="$target/debug/segflow"
data="$target/bench/kmeans-$customers"
ci/bench/generate.sh "$bin" "$customers" 7 "$data"
record="$data/record.jsonl"
rm -f "$record"
for i in 1 2 3; do
    rm -rf "$data/out"
    "$bin" run pipelines/customer_segmentation.yaml --var "input=$data/in" \
        --var "output=$data/out" > "$data/run.log" 2>&1 || { cat "$data/run.log"; exit 1; }
    "$venv/bin/python" tests/reference/kmeans_sklearn.py "$data/out" --record "$record" > /dev/null
done
"$venv/bin/python" - "$record" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ks = sorted({r["k"] for r in rows})
print(f"k-means, {rows[0]['rows']} customers x 3 features, n_init=10, medians of "
      f"{len(rows) // len(ks)} runs")
print("   k  inertia_ratio  sklearn_s  segflow_s  segflow/sklearn")
for k in ks:
    rs = [r for r in rows if r["k"] == k]
    sk = statistics.median(r["sklearn_s"] for r in rs)
    sf = statistics.median(r["segflow_s"] for r in rs)
    ratio = max(r["segflow_inertia"] / r["sklearn_inertia"] for r in rs)
    print(f"{k:4d} {ratio:14.5f} {sk:10.3f} {sf:10.3f} {sf / sk:16.2f}")
PY
