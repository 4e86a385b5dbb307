#!/usr/bin/env bash
# The screenshots of the sample pipeline's HTML report under docs/ (README, docs/report.md):
# runs the default pipeline on the shipped sample into a scratch folder, twice (as_of
# 2026-09-01, then the default), so the movement charts have a previous snapshot, and
# photographs the report in headless Chromium with tests/report/browser.py, which checks it on
# the way. Uses the debug build; Chromium from ci/browser.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
venv=$(ci/pyenv.sh)
chromium=$(ci/browser.sh)
cargo build --workspace --all-targets --locked --quiet
bin="$target/debug/segflow"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for as_of in 2026-09-01 ""; do
    "$bin" run pipelines/customer_segmentation.yaml --var "output=$work/out" --var "as_of=$as_of" \
        > "$work/run.log" 2>&1 || { cat "$work/run.log"; exit 1; }
done
"$venv/bin/python" tests/report/browser.py --chromium "$chromium" \
    --report "$work/out/report/index.html" --runs "$work/out/_runs" \
    --width 1280 --height 1000 --screenshot docs/report-screenshot.png \
    --element-shot '#chart-rfm-grid' docs/report-rfm-grid.png \
    --element-shot '#chart-migrations-rfm' docs/report-migrations.png \
    --element-shot '#chart-campaigns' docs/report-campaigns.png
ls -l docs/report-*.png
