#!/usr/bin/env bash
# The reliability suite (docs/scheduling.md): proof that no fault leaves a half-published or
# mixed output, and that secrets stay secret. Each check prints its figures.
#
#   ci/reliability.sh            the full counts: 200 kills
#   ci/reliability.sh --short    the form .ci/run runs: 20 kills
#
# - kill loop (tests/reliability/kill_loop.py): runs SIGKILLed at random moments (mid-ingest,
#   mid-stage, mid-publish); after each, every table is exactly the one before or the one the
#   run publishes, _published.json names a complete run, and the next run succeeds.
# - concurrency (tests/reliability/concurrency.py): 5 runs at once on one output, without and
#   with --wait.
# - secrets (tests/reliability/secrets.py): sentinel credentials appear in no output.
# Uses the debug build the tests use, and the Python tools of ci/pyenv.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
kills=200
[ "${1:-}" = "--short" ] && kills=20
target="${CARGO_TARGET_DIR:-target}"
venv=$(ci/pyenv.sh)
cargo build --workspace --all-targets --locked --quiet
bin="$(realpath "$target/debug/segflow")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
py="$venv/bin/python"
"$py" tests/reliability/kill_loop.py "$bin" "$work/kill" "$kills"
"$py" tests/reliability/concurrency.py "$bin" "$work/concurrency" 5
"$py" tests/reliability/secrets.py "$bin" "$venv/bin/moto_server" "$work/secrets"
