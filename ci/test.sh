#!/usr/bin/env bash
# The whole test suite: unit tests, golden SQL (tests/slt) and end-to-end tests (tests/e2e)
# that run the real `segflow` binary on generated data, then the DuckDB reference check of RFM
# (ci/reference.sh), then the reliability suite's short form (ci/reliability.sh). The S3 tests
# start their own moto server on 127.0.0.1 (installed by ci/pyenv.sh) and stop it when done; the
# report test opens the HTML report in Debian's headless Chromium (installed by ci/browser.sh).
# Needs Rust and python3 (with network access to PyPI on the first run); the first build
# compiles DataFusion and takes a long while (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(ci/pyenv.sh)
export SEGFLOW_MOTO_SERVER="$venv/bin/moto_server"
export SEGFLOW_PYTHON="$venv/bin/python"
SEGFLOW_CHROMIUM=$(ci/browser.sh)
export SEGFLOW_CHROMIUM
if command -v cargo-nextest >/dev/null 2>&1; then
    # No crate has doctests (crate docs use text blocks), so nextest covers every test.
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
ci/reference.sh
# The reliability suite in its short form (20 kills; ci/reliability.sh runs the full counts).
ci/reliability.sh --short
