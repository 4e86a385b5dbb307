#!/usr/bin/env bash
# Formatting: fails on any file rustfmt would change.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
