#!/usr/bin/env bash
# The reliability suite (docs/scheduling.md): proof that no fault leaves a half-published or
# mixed output, and that secrets stay secret. Each check prints its figures.
#
#   ci/reliability.sh            the full counts: 200 kills, 3 runs through S3 faults,
#                                100,000 cases per property
#   ci/reliability.sh --short    the form ci/test.sh runs: 20 kills, 1 run, 2,000 cases
#
# - kill loop (tests/reliability/kill_loop.py): runs SIGKILLed at random moments (mid-ingest,
#   mid-stage, mid-publish); after each, every table is exactly the one before or the one the
#   run publishes, _published.json names a complete run, and the next run succeeds.
# - S3 faults (tests/reliability/s3_faults.py): the default pipeline on moto through a proxy
#   that answers 10% of requests with 503 and drops the answer to applied writes (Delta
#   commits among them); results exact, no duplicate row, the same contiguous versions.
# - concurrency (tests/reliability/concurrency.py): 5 runs at once on one output, without and
#   with --wait.
# - secrets (tests/reliability/secrets.py): sentinel credentials appear in no output.
# - bad input never panics: the property tests (`prop_` in their names; proptest, cases from
#   PROPTEST_CASES, 256 in the plain test run) of the CSV scan and splitter on arbitrary bytes,
#   NDJSON lines, the YAML loader, ${var} expansion and SQL params.
# Uses the debug build the tests use, and the Python tools of ci/pyenv.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
kills=200 s3_runs=3 cases=100000
[ "${1:-}" = "--short" ] && kills=20 s3_runs=1 cases=2000
target="${CARGO_TARGET_DIR:-target}"
venv=$(ci/pyenv.sh)
cargo build --workspace --all-targets --locked --quiet
bin="$(realpath "$target/debug/segflow")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
py="$venv/bin/python"
"$py" tests/reliability/kill_loop.py "$bin" "$work/kill" "$kills"
"$py" tests/reliability/s3_faults.py "$bin" "$venv/bin/moto_server" "$work/s3" "$s3_runs"
"$py" tests/reliability/concurrency.py "$bin" "$work/concurrency" 5
"$py" tests/reliability/secrets.py "$bin" "$venv/bin/moto_server" "$work/secrets"
export PROPTEST_CASES=$cases
started=$SECONDS
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast -E 'test(/prop_/)' \
        --final-status-level fail
else
    cargo test --workspace --locked --no-fail-fast prop_
fi
echo "properties: $cases cases each, no panic and every invariant held ($((SECONDS - started))s)"
