#!/usr/bin/env bash
# The Python tools the tests use, in a virtualenv kept beside the cargo build (reused on the next
# run): moto's S3 server (tests/e2e/s3.rs starts one per test on 127.0.0.1), duckdb and deltalake
# for the RFM reference check, scikit-learn for the k-means one, lifetimes (0.11.3, the last
# release) for the CLV one, jsonschema for the manifest's schema (docs/manifest.schema.json), and
# the ADBC Flight SQL driver for `segflow serve` (tests/serve/flight_sql.py), and websocket-client
# for driving Chromium over the DevTools protocol (tests/report/browser.py). Prints the
# virtualenv's path. Needs python3 and, on the first run, network access to PyPI (about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(realpath -m "${CARGO_TARGET_DIR:-target}/pyenv")"
if ! "$venv/bin/python" -c 'import duckdb, deltalake, pyarrow, moto.server, sklearn, jsonschema, lifetimes, adbc_driver_flightsql.dbapi, websocket' 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        'duckdb>=1.1,<3' 'deltalake>=1.1,<2' pyarrow 'moto[server]>=5.1,<6' \
        'scikit-learn>=1.5,<2' 'jsonschema>=4.18,<5' 'lifetimes==0.11.3' \
        'adbc-driver-flightsql>=1.13,<2' 'adbc-driver-manager>=1.13,<2' \
        'websocket-client>=1.8,<2' >&2
fi
echo "$venv"
