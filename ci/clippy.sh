#!/usr/bin/env bash
# Lints: every warning fails, tests and examples included.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo clippy --workspace --all-targets --locked -- -D warnings
