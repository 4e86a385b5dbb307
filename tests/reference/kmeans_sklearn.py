"""k-means reference: scikit-learn's KMeans on the same features as the default pipeline's
`clusters` stage, for every k that stage tried.

    python tests/reference/kmeans_sklearn.py OUTPUT_DIR [--record FILE]

Reads the published `customer_features` and `cluster_scores` Delta tables and the run manifest
(for segflow's fit times), rebuilds the features from the README's definition (customers with
orders; log1p of recency_days, frequency and max(monetary, 0); each z-scored with the
population standard deviation), and fits KMeans(k, init="k-means++", n_init=10, max_iter=300,
tol=1e-4, random_state=0) for each k. Prints one line per k: both inertias, their ratio,
both fit times and the ratio of times. Exits 1 when segflow's inertia is more than 1% above
scikit-learn's best of 10 for any k. The times are for information: the fits here are small
and the build is a debug build; ci/bench-kmeans.sh repeats the comparison on larger data and
prints medians. With --record, one JSON line per k is appended to FILE for it.
"""

import json
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
from deltalake import DeltaTable
from sklearn.cluster import KMeans

TOLERANCE = 0.01


def main(out: Path, record: Path | None) -> int:
    features = DeltaTable(str(out / "customer_features")).to_pyarrow_table()
    scores = DeltaTable(str(out / "cluster_scores")).to_pyarrow_table()
    columns = duckdb.sql(
        "select ln(1 + recency_days), ln(1 + frequency), "
        "ln(1 + greatest(cast(monetary as double), 0)) "
        "from features where frequency is not null order by customer_id"
    ).fetchnumpy()
    x = np.column_stack([np.asarray(v, dtype=float) for v in columns.values()])
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    ours = {k: inertia for k, inertia in duckdb.sql("select k, inertia from scores").fetchall()}

    # Run manifests are named by run id; `_published.json` beside them is the pointer.
    manifests = sorted((out / "_runs").glob("[0-9]*.json"))
    seconds = {}
    for stage in json.loads(manifests[-1].read_text())["stages"]:
        for s in stage.get("metrics", {}).get("kmeans", {}).get("scores", []):
            seconds[s["k"]] = s["seconds"]

    failed = 0
    print(f"k-means on {len(x)} customers x {x.shape[1]} features, n_init=10")
    print("   k  sklearn_inertia  segflow_inertia   ratio  sklearn_s  segflow_s  time_ratio")
    for k in sorted(ours):
        started = time.perf_counter()
        km = KMeans(k, init="k-means++", n_init=10, max_iter=300, tol=1e-4, random_state=0).fit(x)
        elapsed = time.perf_counter() - started
        ratio = ours[k] / km.inertia_
        ok = ratio <= 1 + TOLERANCE
        failed += not ok
        ts = seconds.get(k, float("nan"))
        if record:
            with record.open("a") as f:
                f.write(json.dumps({"k": k, "rows": len(x), "sklearn_inertia": km.inertia_,
                                    "segflow_inertia": ours[k], "sklearn_s": elapsed,
                                    "segflow_s": ts}) + "\n")
        print(
            f"{k:4d} {km.inertia_:16.4f} {ours[k]:16.4f} {ratio:7.4f} {elapsed:10.3f}"
            f" {ts:10.3f} {ts / elapsed:11.2f}{'' if ok else '  <- more than 1% above'}"
        )
    if failed:
        print(f"{failed} k value(s) with inertia more than {TOLERANCE:.0%} above scikit-learn's")
    return 1 if failed else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    rec = Path(args[args.index("--record") + 1]) if "--record" in args else None
    sys.exit(main(Path(args[0]), rec))
