#!/usr/bin/env bash
# Every pipeline in pipelines/, pipelines/examples/ and pipelines/bench/ must validate, and the default one must
# run on the shipped sample (README command 1, into a scratch directory).
set -euo pipefail
cd "$(dirname "$0")/.."
# The same targets as the test build, so the features match and nothing is rebuilt.
cargo build --workspace --all-targets --locked
bin="${CARGO_TARGET_DIR:-target}/debug/segflow"
for p in pipelines/*.yaml pipelines/examples/*.yaml pipelines/bench/*.yaml; do
    [ -e "$p" ] || continue
    "$bin" validate "$p"
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bin" run pipelines/customer_segmentation.yaml --var "output=$out"
