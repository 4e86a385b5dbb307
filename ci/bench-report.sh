#!/usr/bin/env bash
# The HTML report at scale: its size, the time `segflow report` takes to render it from the
# published tables, and the time headless Chromium takes to load and draw it (offline, from
# file://, checked by tests/report/browser.py on the way), each the median of 3.
#
#   ci/bench-report.sh [S|M|L]     (default M: 1,000,000 customers)
#
# Reads the full default pipeline's published output of ci/bench.sh (ci/bench/full-output.sh
# makes one when it is missing); release build.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-M}
. ci/bench/full-output.sh
chromium=$(ci/browser.sh)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
render=() load=()
for i in 1 2 3; do
    start=$(date +%s.%N)
    "$bin" report pipelines/customer_segmentation.yaml --var "output=$output" \
        --out "$work/index.html" > "$work/report.log"
    end=$(date +%s.%N)
    render+=("$(echo "$end - $start" | bc)")
    "$venv/bin/python" tests/report/browser.py --chromium "$chromium" \
        --report "$work/index.html" --runs "$output/_runs" > "$work/browser.json"
    load+=("$("$venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["load_ms"])' "$work/browser.json")")
done
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
bytes=$(stat -c %s "$work/index.html")
cat "$work/browser.json"
printf 'report at %s (%s customers): %s bytes (%.2f MB); segflow report %.2f s (median of 3: %s); Chromium load %.0f ms (median of 3: %s)\n' \
    "$size" "$customers" "$bytes" "$(echo "$bytes / 1048576" | bc -l)" \
    "$(median "${render[@]}")" "${render[*]}" "$(median "${load[@]}")" "${load[*]}"
