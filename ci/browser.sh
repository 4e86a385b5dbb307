#!/usr/bin/env bash
# The browser the report test opens the HTML report in (tests/report/browser.py): Debian's
# Chromium, installed with apt when it is not there yet (as root; about a minute and 300 MB
# the first time). Prints its path. SEGFLOW_CHROMIUM names another Chromium or Chrome.
set -euo pipefail
if [ -n "${SEGFLOW_CHROMIUM:-}" ]; then
    echo "$SEGFLOW_CHROMIUM"
    exit 0
fi
if ! command -v chromium >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq --no-install-recommends chromium >&2
fi
command -v chromium
