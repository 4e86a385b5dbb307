"""The benchmark peer: the reference work of pipelines/bench/reference.yaml done with DuckDB and
scikit-learn, as a data engineer would write it.

    python ci/bench/duckdb_sklearn.py INPUT_DIR OUTPUT_DIR

1. ingest: each of the four CSV files, read with its contract's types, written as Parquet;
2. rfm: RFM values and scores at as_of (the day after the latest order), as README.md defines
   them (rank-based scores 1 + floor(5 (rank - 1) / n));
3. kmeans: KMeans(6, init="k-means++", n_init=10, random_state=0) on z-scored log1p recency,
   frequency and max(monetary, 0) of customers with orders;
4. write: customer_segments (RFM columns and cluster_id) as Parquet.

Prints one JSON object: seconds per step, total, rows, and the k-means inertia. Then, outside the
total, the second ingest peer: orders.csv to Parquet with `store_rejects = true`, which keeps each
rejected line with its line number, column and original text (the closest DuckDB comes to
segflow's quarantine; it checks types and column counts, not keys), the rejects written as
Parquet too: `orders_store_rejects` seconds and the rejected lines' count.
"""

import json
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from sklearn.cluster import KMeans

TYPES = {
    "customers": {"customer_id": "varchar", "signup_date": "date", "birth_date": "date",
                  "gender": "varchar", "country": "varchar", "region": "varchar",
                  "city": "varchar", "annual_income": "double", "email_opt_in": "boolean"},
    "orders": {"order_id": "varchar", "customer_id": "varchar", "order_ts": "timestamptz",
               "amount": "decimal(12,2)", "currency": "varchar", "category": "varchar",
               "channel": "varchar", "campaign_id": "varchar"},
    "events": {"customer_id": "varchar", "event_ts": "timestamptz", "event_type": "varchar",
               "campaign_id": "varchar"},
    "survey_responses": {"customer_id": "varchar", "answered_at": "date",
                         "interest": "varchar", "score": "integer"},
}


def main(input_dir: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    seconds = {}

    started = time.perf_counter()
    for table, columns in TYPES.items():
        cols = ", ".join(f"'{k}': '{v}'" for k, v in columns.items())
        con.execute(
            f"copy (select * from read_csv('{input_dir}/{table}.csv', header = true, "
            f"columns = {{{cols}}})) to '{out}/{table}.parquet' (format parquet)"
        )
    seconds["ingest"] = time.perf_counter() - started

    started = time.perf_counter()
    con.execute(
        f"""create table rfm as
        with orders as (select * from '{out}/orders.parquet'),
        run as (select max(order_ts::date) + 1 as as_of from orders),
        o as (select customer_id, order_id, amount, order_ts::date as d
              from orders, run where order_ts::date < run.as_of),
        per as (select customer_id, any_value(run.as_of) - max(d) as recency_days,
                       count(distinct order_id) as frequency, sum(amount) as monetary
                from o, run group by customer_id),
        n as (select count(*) as n from per),
        scored as (
            select customer_id, recency_days, frequency, monetary,
                   1 + (5 * (rank() over (order by recency_days desc) - 1)) // n.n as r_score,
                   1 + (5 * (rank() over (order by frequency) - 1)) // n.n as f_score,
                   1 + (5 * (rank() over (order by monetary) - 1)) // n.n as m_score
            from per, n)
        select c.customer_id, s.recency_days, s.frequency, s.monetary,
               s.r_score, s.f_score, s.m_score
        from '{out}/customers.parquet' c left join scored s using (customer_id)"""
    )
    seconds["rfm"] = time.perf_counter() - started

    started = time.perf_counter()
    ids, r, f, m = con.execute(
        "select customer_id, recency_days, frequency, greatest(monetary, 0)::double "
        "from rfm where frequency is not null order by customer_id"
    ).fetchnumpy().values()
    x = np.log1p(np.column_stack([r.astype(float), f.astype(float), m.astype(float)]))
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    km = KMeans(6, init="k-means++", n_init=10, max_iter=300, tol=1e-4, random_state=0).fit(x)
    seconds["kmeans"] = time.perf_counter() - started

    started = time.perf_counter()
    con.register("labels", pa.table({"customer_id": ids, "cluster_id": km.labels_.astype("int32")}))
    con.execute(
        f"copy (select r.*, l.cluster_id from rfm r left join labels l using (customer_id)) "
        f"to '{out}/customer_segments.parquet' (format parquet)"
    )
    seconds["write"] = time.perf_counter() - started
    seconds["total"] = sum(seconds.values())

    started = time.perf_counter()
    cols = ", ".join(f"'{k}': '{v}'" for k, v in TYPES["orders"].items())
    con.execute(
        f"copy (select * from read_csv('{input_dir}/orders.csv', header = true, "
        f"columns = {{{cols}}}, store_rejects = true)) "
        f"to '{out}/orders_checked.parquet' (format parquet)"
    )
    con.execute(f"copy reject_errors to '{out}/orders_rejects.parquet' (format parquet)")
    store_rejects = time.perf_counter() - started
    rejected = con.execute("select count(*) from reject_errors").fetchone()[0]
    print(json.dumps({"seconds": seconds, "clustered": len(x), "inertia": km.inertia_,
                      "orders_store_rejects": store_rejects, "orders_rejected": rejected}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
