#!/usr/bin/env bash
# Dependency direction: core <- ingest | features | segment | export <- cli, and
# core <- ingest | segment <- distributed <- cli (the Ballista codecs know the plan pieces of the
# stage crates whose plans carry their own nodes and functions), and core <- serve <- cli (the
# Flight SQL server reads published tables through core alone).
# Stage crates may depend on core only (and testkit as a dev-dependency); core on no segflow
# crate; testkit on core only. Any other edge between segflow crates fails.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --no-deps --locked | python3 -c '
import json, sys
meta = json.load(sys.stdin)
allowed = {
    "segflow-core": set(),
    "segflow-ingest": {"segflow-core"},
    "segflow-features": {"segflow-core"},
    "segflow-segment": {"segflow-core"},
    "segflow-export": {"segflow-core"},
    "segflow-testkit": {"segflow-core"},
    "segflow-distributed": {"segflow-core", "segflow-ingest", "segflow-segment"},
    "segflow-serve": {"segflow-core"},
    "segflow-cli": {"segflow-core", "segflow-ingest", "segflow-features", "segflow-segment", "segflow-export", "segflow-distributed", "segflow-serve", "segflow-testkit"},
}
bad = []
for pkg in meta["packages"]:
    name = pkg["name"]
    if name not in allowed:
        bad.append(f"{name}: unknown workspace crate; add it to ci/check-deps.sh with its allowed edges")
        continue
    for dep in pkg["dependencies"]:
        d = dep["name"]
        if d.startswith("segflow-") and d not in allowed[name]:
            if dep.get("kind") == "dev" and d == "segflow-testkit":
                continue
            bad.append(f"{name} -> {d} points the wrong way")
if bad:
    print("dependency direction violated:\n  " + "\n  ".join(bad))
    sys.exit(1)
print("dependency direction ok: core <- stages <- (distributed) <- cli; core <- serve <- cli")
'
