"""ci/bench.sh's bookkeeping.

    summarize.py record DIR      one JSON line for the round just run in DIR
    summarize.py report DIR RECORDS SIZE CUSTOMERS LIMIT
                                 the table: medians per step, peak RSS, ratios segflow / peer,
                                 then the issue's targets against what was measured; checks
                                 that segflow's and the peer's RFM agree and that the run under
                                 a memory limit gave the same customer_segments (exit 1 if not)
"""

import json
import re
import statistics
import sys
from pathlib import Path


def rss_gib(path: Path) -> float:
    kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", path.read_text())
    return int(kb.group(1)) / 1024 / 1024


def manifest(out: Path) -> dict:
    return json.loads(sorted((out / "_runs").glob("[0-9]*.json"))[-1].read_text())


def record(d: Path) -> None:
    m = manifest(d / "segflow")
    stages = {s["id"]: s["duration_ms"] / 1000 for s in m["stages"]}
    seg = {
        "ingest": sum(v for k, v in stages.items() if k.startswith("ingest_")),
        "rfm": stages["as_of"] + stages["rfm"],
        "kmeans": stages["clusters"],
    }
    seg["write"] = m["duration_ms"] / 1000 - sum(stages.values()) + stages.get("publish", 0)
    seg["total"] = m["duration_ms"] / 1000
    kmeans = next(s["metrics"]["kmeans"] for s in m["stages"] if s["id"] == "clusters")
    peer = json.loads((d / "peer.log").read_text().strip().splitlines()[-1])
    full = manifest(d / "full") if (d / "full").exists() else None
    # One line per k the full pipeline tried (tests/reference/kmeans_sklearn.py --record).
    per_k = d / "peer_k.jsonl"
    per_k = [json.loads(line) for line in per_k.read_text().splitlines()] \
        if full and per_k.exists() else []
    # The full pipeline's clv and clusters stages, and lifetimes on the same CLV summary
    # (ci/bench/clv_lifetimes.py).
    clv = None
    if full:
        st = {s["id"]: s for s in full["stages"]}
        metrics = st["clv"]["metrics"]
        peer_clv = d / "peer_clv.jsonl"
        clv = {
            "stage": st["clv"]["duration_ms"] / 1000,
            "summary": metrics["clv_summary_seconds"],
            "fit": metrics["clv_fit_seconds"],
            "predict": metrics["clv_predict_seconds"],
            "customers": metrics["clv_customers"],
            "kmeans_stage": st["clusters"]["duration_ms"] / 1000,
            "peer": json.loads(peer_clv.read_text().splitlines()[-1])
            if peer_clv.exists() else None,
        }
    print(json.dumps({
        "segflow": seg,
        "peer": peer["seconds"],
        "full": full and full["duration_ms"] / 1000,
        "rss": {"segflow": rss_gib(d / "segflow.time"), "peer": rss_gib(d / "peer.time"),
                "full": full and rss_gib(d / "full.time")},
        "inertia": {"segflow": kmeans["inertia"], "peer": peer["inertia"]},
        "kmeans_iterations_segflow": kmeans["iterations"],
        "orders_ingest": stages["ingest_orders"],
        "orders_store_rejects": peer["orders_store_rejects"],
        "peer_kmeans_k_range": sum(r["sklearn_s"] for r in per_k) if per_k else None,
        "full_kmeans_k_range": sum(r["segflow_s"] for r in per_k) if per_k else None,
        "k_range": [min(r["k"] for r in per_k), max(r["k"] for r in per_k)] if per_k else None,
        "clv": clv,
    }))


def rfm_agreement(d: Path) -> tuple[int, int]:
    import duckdb
    from deltalake import DeltaTable
    ours = DeltaTable(str(d / "segflow" / "customer_segments")).to_pyarrow_table()  # noqa: F841
    row = duckdb.sql(
        f"""select count(*), count(*) filter (where o.recency_days is not distinct from p.recency_days
                and o.frequency is not distinct from p.frequency
                and o.monetary is not distinct from p.monetary
                and o.r_score is not distinct from p.r_score
                and o.f_score is not distinct from p.f_score
                and o.m_score is not distinct from p.m_score)
            from ours o full join '{d}/peer/customer_segments.parquet' p using (customer_id)"""
    ).fetchall()[0]
    return row[0], row[1]


def limited_agreement(d: Path) -> tuple[int, int]:
    """(rows, rows that differ) of customer_segments: the memory-limited run against the last
    unlimited one; rows are compared whole, nulls equal."""
    import duckdb
    from deltalake import DeltaTable
    a = DeltaTable(str(d / "segflow" / "customer_segments")).to_pyarrow_table()  # noqa: F841
    b = DeltaTable(str(d / "limited" / "customer_segments")).to_pyarrow_table()  # noqa: F841
    row = duckdb.sql(
        """select (select count(*) from a),
                  (select count(*) from (from a except all from b))
                  + (select count(*) from (from b except all from a))"""
    ).fetchall()[0]
    return row[0], row[1]


def report(d: Path, records: Path, size: str, customers: str, limit: str) -> int:
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    med = statistics.median
    print(f"ci/bench.sh {size}: {customers} customers, {len(rows)} alternating rounds, medians")
    print(f"{'step':<10} {'segflow s':>10} {'peer s':>10} {'segflow/peer':>13}")
    for step in ["ingest", "rfm", "kmeans", "write", "total"]:
        a = med(r["segflow"][step] for r in rows)
        b = med(r["peer"][step] for r in rows)
        print(f"{step:<10} {a:10.2f} {b:10.2f} {a / b:13.2f}")
    a, b = med(r["rss"]["segflow"] for r in rows), med(r["rss"]["peer"] for r in rows)
    print(f"{'peak RSS':<10} {a:9.2f}G {b:9.2f}G {a / b:13.2f}")
    if all(r["full"] for r in rows):
        full = med(r["full"] for r in rows)
        print(f"full default pipeline (information): {full:.2f} s, peak RSS "
              f"{med(r['rss']['full'] for r in rows):.2f} GiB")
    else:
        print("full default pipeline: not run (BENCH_FULL=0)")
    i = rows[-1]["inertia"]
    print(f"k-means inertia: segflow {i['segflow']:.4f}, peer {i['peer']:.4f}, "
          f"ratio {i['segflow'] / i['peer']:.5f}")
    total, same = rfm_agreement(d)
    print(f"RFM values and scores: {same} of {total} customers agree")

    ratio = lambda step: med(r["segflow"][step] for r in rows) / med(r["peer"][step] for r in rows)  # noqa: E731
    rss = med(r["rss"]["segflow"] for r in rows) / med(r["rss"]["peer"] for r in rows)
    orders_mb = (d / "in" / "orders.csv").stat().st_size / 1e6
    orders_s = med(r["orders_ingest"] for r in rows)
    limited = manifest(d / "limited")
    l_total, l_differ = limited_agreement(d)
    print()
    print(f"{'target (' + size + ')':<46} {'target':>10}  measured")
    print(f"{'end-to-end reference work, segflow / peer':<46} {'<= 0.70':>10}  {ratio('total'):.2f}")
    print(f"{'peak RSS, segflow / peer':<46} {'<= 1.00':>10}  {rss:.2f}")
    write = med(r["segflow"]["write"] for r in rows)
    print(f"{'publish (write)':<46} {'<= 1.0 s':>10}  {write:.2f} s")
    if all(r["full"] for r in rows):
        peer = med(r["peer"]["total"] for r in rows)
        full = med(r["full"] for r in rows)
        full_rss = med(r["rss"]["full"] for r in rows) / med(r["rss"]["peer"] for r in rows)
        print(f"{'full default pipeline / peer reference work':<46} {'<= 1.50':>10}  "
              f"{full / peer:.2f} ({full:.2f} / {peer:.2f} s)")
        print(f"{'peak RSS, full pipeline / peer':<46} {'<= 1.00':>10}  {full_rss:.2f}")
        if all(r.get("peer_kmeans_k_range") for r in rows):
            # What the peer itself spends on two parts of the full pipeline's work: its ingest,
            # and k-means for every k the default pipeline fits.
            lo, hi = rows[-1]["k_range"]
            km = med(r["peer_kmeans_k_range"] for r in rows)
            ours = med(r["full_kmeans_k_range"] for r in rows)
            ingest = med(r["peer"]["ingest"] for r in rows)
            print(f"{'  the peer: k-means for k = ' + str(lo) + '..' + str(hi):<46} "
                  f"{'(info)':>10}  {km:.2f} s = {km / peer:.2f} of its reference work; "
                  f"segflow's fits {ours:.2f} s = {ours / km:.2f} of it")
            print(f"{'  the peer: its ingest + that k-means':<46} {'(info)':>10}  "
                  f"{ingest + km:.2f} s = {(ingest + km) / peer:.2f} of its reference work")
    if all(r.get("clv") for r in rows):
        c = lambda key: med(r["clv"][key] for r in rows)  # noqa: E731
        print(f"{'CLV stage / k-means stage (full pipeline)':<46} {'<= 1.00':>10}  "
              f"{c('stage') / c('kmeans_stage'):.2f} ({c('stage'):.2f} / {c('kmeans_stage'):.2f} s;"
              f" {rows[-1]['clv']['customers']} customers: summary {c('summary'):.2f} s, fits "
              f"{c('fit'):.2f} s, predictions {c('predict'):.2f} s)")
        peers = [r["clv"]["peer"] for r in rows if r["clv"]["peer"]]
        done = [p for p in peers if p["seconds"]]
        if done:
            lt = med(p["seconds"]["total"] for p in done)
            ours = c("fit") + c("predict")
            fits = med(p["seconds"]["bgnbd_fit"] + p["seconds"]["gamma_gamma_fit"] for p in done)
            print(f"{'  lifetimes on the same summary (fits + predictions)':<46} {'(info)':>10}  "
                  f"{lt:.2f} s (fits {fits:.2f} s); segflow's {ours:.2f} s = {ours / lt:.2f} of it;"
                  f" parameters within {max(p['max_param_rel_diff'] for p in done):.1e} relative"
                  f" ({len(done)} of {len(rows)} rounds finished)")
        elif peers:
            print(f"{'  lifetimes on the same summary':<46} {'(info)':>10}  {peers[-1]['why']}")
    print(f"{'k-means, segflow / scikit-learn':<46} {'<= 0.50':>10}  {ratio('kmeans'):.2f}"
          f" (inertia ratio {i['segflow'] / i['peer']:.5f})")
    print(f"{'ingest of orders CSV -> Parquet':<46} {'>= 150 MB/s':>10}  "
          f"{orders_mb / orders_s:.1f} MB/s ({orders_mb:.0f} MB in {orders_s:.2f} s)")
    rejects_s = med(r["orders_store_rejects"] for r in rows)
    print(f"{'  against DuckDB read_csv(store_rejects)':<46} {'faster':>10}  "
          f"{orders_mb / rejects_s:.1f} MB/s ({rejects_s:.2f} s): segflow / DuckDB "
          f"{orders_s / rejects_s:.2f}")
    print(f"{'reference work with --memory-limit ' + limit:<46} {'completes, same results':>10}  "
          f"{limited['status']} in {limited['duration_ms'] / 1000:.2f} s, peak RSS "
          f"{rss_gib(d / 'limited.time'):.2f} GiB; customer_segments: {l_total} rows, "
          f"{l_differ} differ")
    ok = total == same and total > 0 and l_differ == 0 and l_total > 0
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1] == "record":
        record(Path(sys.argv[2]))
    else:
        sys.exit(report(Path(sys.argv[2]), Path(sys.argv[3]), *sys.argv[4:7]))
