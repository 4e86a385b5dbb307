"""Latency and throughput of `segflow serve` from the Python ADBC Flight SQL client, against
DuckDB reading the same Delta version of customer_segments (its Parquet files, as the pointer
names them) in the same run. Run by ci/bench-serve.sh.

    serve_latency.py URI TOKEN OUTPUT [SECONDS]

Prints one JSON object per measurement and a table. Point lookups are by customer_id with a
bound parameter (a prepared statement, as BI tools send them), over random customers; the same
customers for both engines. DuckDB runs in this process (no network, no serialization), the
server over gRPC on loopback: the comparison is what a notebook user sees from either.
"""

import json
import random
import statistics
import sys
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql
import duckdb
from deltalake import DeltaTable

LOOKUP = "select * from customer_segments where customer_id = {p}"
GROUP_BY = ("select rfm_segment, count(*) as customers, avg(monetary) as mean_monetary, "
            "avg(predicted_clv) as mean_clv from customer_segments group by rfm_segment "
            "order by customers desc")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


class Server:
    def __init__(self, uri, token):
        self.uri, self.token = uri, token

    def connect(self):
        conn = flight_sql.connect(self.uri, db_kwargs={
            "adbc.flight.sql.authorization_header": f"Bearer {self.token}"})
        return conn

    @staticmethod
    def lookup(conn, cid):
        with conn.cursor() as cur:
            cur.execute(LOOKUP.format(p="$1"), parameters=(cid,))
            return cur.fetch_arrow_table().num_rows

    @staticmethod
    def group_by(conn):
        with conn.cursor() as cur:
            cur.execute(GROUP_BY)
            return cur.fetch_arrow_table().num_rows


class DuckDB:
    def __init__(self, files):
        self.db = duckdb.connect()
        quoted = ", ".join(f"'{f}'" for f in files)
        self.db.execute(f"create view customer_segments as select * from read_parquet([{quoted}])")

    def connect(self):
        return self.db.cursor()

    @staticmethod
    def lookup(conn, cid):
        return len(conn.execute(LOOKUP.format(p="?"), [cid]).to_arrow_table())

    @staticmethod
    def group_by(conn):
        return len(conn.execute(GROUP_BY).to_arrow_table())


def measure(name, engine, ids, seconds):
    conn = engine.connect()
    # Warm-up: the first query of either reads the Parquet footers.
    engine.lookup(conn, ids[0])
    engine.group_by(conn)
    lookups = []
    for cid in ids:
        t = time.perf_counter()
        rows = engine.lookup(conn, cid)
        lookups.append((time.perf_counter() - t) * 1000)
        assert rows == 1, (name, cid, rows)
    groups = []
    for _ in range(15):
        t = time.perf_counter()
        engine.group_by(conn)
        groups.append((time.perf_counter() - t) * 1000)
    # Throughput: 4 clients, each its own connection, point lookups for `seconds`.
    counts = [0] * 4
    stop = time.perf_counter() + seconds

    def client(i):
        c = engine.connect()
        rnd = random.Random(i)
        while time.perf_counter() < stop:
            engine.lookup(c, rnd.choice(ids))
            counts[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    qps = sum(counts) / (time.perf_counter() - started)
    result = {
        "engine": name,
        "lookup_p50_ms": round(statistics.median(lookups), 2),
        "lookup_p99_ms": round(pct(lookups, 0.99), 2),
        "group_by_median_ms": round(statistics.median(groups), 2),
        "qps_4_clients": round(qps, 1),
        "lookups": len(lookups),
    }
    print(json.dumps(result), flush=True)
    return result


def main():
    uri, token, output = sys.argv[1:4]
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 10
    with open(f"{output}/_runs/_published.json") as f:
        pointer = json.load(f)
    t = pointer["tables"]["customer_segments"]
    table = DeltaTable(t["url"], version=t["version"])
    files = table.file_uris()
    ids = table.to_pyarrow_table(columns=["customer_id"]).column("customer_id").to_pylist()
    customers = len(ids)
    ids = random.Random(7).sample(ids, 300)
    results = [measure("segflow serve", Server(uri, token), ids, seconds),
               measure("duckdb", DuckDB(files), ids, seconds)]
    print(f"\ncustomer_segments: {customers:,} rows, {len(files)} files, run {t['run_id']}")
    print(f"{'':16} {'lookup p50':>11} {'lookup p99':>11} {'group-by':>10} {'QPS x4':>8}")
    for r in results:
        print(f"{r['engine']:16} {r['lookup_p50_ms']:>9.2f}ms {r['lookup_p99_ms']:>9.2f}ms "
              f"{r['group_by_median_ms']:>8.1f}ms {r['qps_4_clients']:>8.1f}")
    s, d = results
    print(f"{'ratio':16} {s['lookup_p50_ms'] / d['lookup_p50_ms']:>10.2f}x "
          f"{s['lookup_p99_ms'] / d['lookup_p99_ms']:>10.2f}x "
          f"{s['group_by_median_ms'] / d['group_by_median_ms']:>9.2f}x "
          f"{s['qps_4_clients'] / d['qps_4_clients']:>8.2f}x")


if __name__ == "__main__":
    main()
