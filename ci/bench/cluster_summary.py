"""ci/bench-cluster.sh's bookkeeping.

    cluster_summary.py record DIR               one JSON line for the round just run in DIR
    cluster_summary.py report RECORDS SIZE CUSTOMERS CORES
                                                the table: per stage, the median seconds on
                                                each setup and the cluster's overhead; exit 1
                                                when a cluster run's customer_segments differ
"""

import json
import re
import statistics
import sys
from pathlib import Path

SETUPS = ["local", "1x", "2x"]


def manifest(out: Path) -> dict:
    return json.loads(sorted((out / "_runs").glob("[0-9]*.json"))[-1].read_text())


def rss_gib(path: Path) -> float:
    kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", path.read_text())
    return int(kb.group(1)) / 1024 / 1024


def same_segments(a: Path, b: Path) -> int:
    """Rows of customer_segments in one output but not the other (both ways)."""
    import duckdb
    from deltalake import DeltaTable

    con = duckdb.connect()
    con.register("x", DeltaTable(str(a / "customer_segments")).to_pyarrow_table())
    con.register("y", DeltaTable(str(b / "customer_segments")).to_pyarrow_table())
    q = "select count(*) from (select * from {} except all select * from {})"
    return sum(con.sql(q.format(p, r)).fetchall()[0][0] for p, r in [("x", "y"), ("y", "x")])


def record(d: Path) -> None:
    out = {}
    for s in SETUPS:
        m = manifest(d / s)
        out[s] = {
            "total": m["duration_ms"] / 1000,
            "stages": {st["id"]: st["duration_ms"] / 1000 for st in m["stages"]},
            "jobs": sum(len(st.get("engine_jobs", [])) for st in m["stages"]),
            "passes": next(st["metrics"]["kmeans"]["passes"] for st in m["stages"]
                           if st["id"] == "clusters"),
            "client_rss": rss_gib(d / f"{s}.time"),
        }
    out["differing_rows"] = {s: same_segments(d / "local", d / s) for s in SETUPS[1:]}
    print(json.dumps(out))


def report(records: Path, size: str, customers: str, cores: str) -> int:
    rounds = [json.loads(line) for line in records.read_text().splitlines()]
    med = lambda xs: statistics.median(xs)  # noqa: E731
    print(f"\n## Default pipeline, local vs Ballista on one machine ({size}: {int(customers):,} "
          f"customers, {cores} cores, {len(rounds)} rounds, medians)\n")
    print("| stage | local s | 1 executor s | 2 executors s | 1x / local | 2x / local |")
    print("|---|---|---|---|---|---|")
    stages = list(rounds[0]["local"]["stages"])
    for st in stages + ["total"]:
        v = {s: med([r[s]["total"] if st == "total" else r[s]["stages"][st] for r in rounds])
             for s in SETUPS}
        ratio = lambda s: f"{v[s] / v['local']:.2f}" if v["local"] > 0.05 else "-"  # noqa: E731
        name = f"**{st}**" if st == "total" else st
        print(f"| {name} | {v['local']:.2f} | {v['1x']:.2f} | {v['2x']:.2f} | {ratio('1x')} "
              f"| {ratio('2x')} |")
    for s in SETUPS:
        print(f"\n{s}: {med([r[s]['jobs'] for r in rounds]):.0f} Ballista jobs, "
              f"{med([r[s]['passes'] for r in rounds]):.0f} k-means passes, client peak RSS "
              f"{med([r[s]['client_rss'] for r in rounds]):.2f} GiB", end="")
    print()
    bad = [(s, r["differing_rows"][s]) for r in rounds for s in SETUPS[1:]
           if r["differing_rows"][s]]
    if bad:
        print(f"\nFAIL: cluster runs published other customer_segments than local: {bad}")
        return 1
    print("\ncustomer_segments: identical to the local run's in every cluster run")
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "record":
        record(Path(sys.argv[2]))
    else:
        sys.exit(report(Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]))
