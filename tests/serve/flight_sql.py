"""Checks `segflow serve` from a Flight SQL client: the ADBC driver (adbc-driver-flightsql), as
BI tools and notebooks use it. Run by tests/e2e/serve.rs, which starts the server on a random
loopback port over a freshly published output and passes its address and a token.

    flight_sql.py check  URI TOKEN OUTPUT         tables, counts, group-by, parameters, auth, read-only
    flight_sql.py loop   URI TOKEN STOP RESULT    queries until STOP exists; consistency per query
    flight_sql.py limits URI TOKEN CA_PEM         over TLS: a query past the memory limit, the timeout

Every check raises (exit 1) with what differed; the Delta tables are read with the `deltalake`
package at the versions `_runs/_published.json` names, independently of segflow.
"""

import fnmatch
import json
import os
import sys
import time

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

AUTH = "adbc.flight.sql.authorization_header"
TLS_ROOTS = "adbc.flight.sql.client_option.tls_root_certs"


def connect(uri, token=None, **options):
    kwargs = dict(options)
    if token is not None:
        kwargs[AUTH] = f"Bearer {token}"
    return flight_sql.connect(uri, db_kwargs=kwargs)


def query(conn, sql, parameters=None):
    with conn.cursor() as cur:
        cur.execute(sql, parameters=parameters)
        return cur.fetch_arrow_table()


def refused(fn, *expected):
    """Runs fn, which must fail with a message containing one of `expected`."""
    try:
        fn()
    except adbc_driver_manager.Error as e:
        text = str(e)
        assert any(x.lower() in text.lower() for x in expected), f"unexpected error: {text}"
        return text
    raise AssertionError(f"not refused (expected {expected})")


def published(output):
    with open(os.path.join(output, "_runs", "_published.json")) as f:
        return json.load(f)


def delta(pointer, table):
    t = pointer["tables"][table]
    return DeltaTable(t["url"], version=t["version"]).to_pyarrow_table()


def check(uri, token, output):
    pointer = published(output)
    conn = connect(uri, token)

    # GetSqlInfo: the JDBC driver asks for the server's name before it shows anything.
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "segflow", info
    assert info.get("vendor_version"), info

    # GetObjects: every published table, with its columns (and their contract comments).
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    served = {}
    for catalog in objects:
        for schema in catalog["catalog_db_schemas"] or []:
            for t in schema["db_schema_tables"] or []:
                served[t["table_name"]] = t
                assert (catalog["catalog_name"], schema["db_schema_name"]) == ("segflow", "public")
    assert set(served) == set(pointer["tables"]), (sorted(served), sorted(pointer["tables"]))
    for name in served:
        columns = [c["column_name"] for c in served[name]["table_columns"]]
        expected = delta(pointer, name).schema.names
        assert columns == expected, (name, columns, expected)
    # Also when the client names the catalog (GetTables filters by it) and with a pattern.
    only = conn.adbc_get_objects(depth="tables", catalog_filter="segflow",
                                 table_name_filter="customer_%").read_all().to_pylist()
    names = {t["table_name"] for c in only for s in c["catalog_db_schemas"] for t in s["db_schema_tables"]}
    # LIKE semantics: `_` is any one character, so `customers` matches too.
    like = {n for n in pointer["tables"] if fnmatch.fnmatchcase(n, "customer?*")}
    assert names == like and "customer_segments" in names, (names, like)
    # The table's schema as ADBC reports it.
    schema = conn.adbc_get_table_schema("customer_segments", catalog_filter="segflow", db_schema_filter="public")
    assert schema.names == delta(pointer, "customer_segments").schema.names
    # Column descriptions from the output contract, under the Flight SQL key the JDBC driver
    # reads for getColumns' REMARKS.
    remark = (schema.field("rfm_segment").metadata or {}).get(b"ARROW:FLIGHT:SQL:REMARKS", b"").decode()
    assert "champions" in remark, schema.field("rfm_segment").metadata

    # Counts and a group-by equal the Delta table's at the published version.
    segments = delta(pointer, "customer_segments")
    n = query(conn, "select count(*) as n from customer_segments").column("n")[0].as_py()
    assert n == segments.num_rows, (n, segments.num_rows)
    got = query(conn, "select rfm_segment, count(*) as n from customer_segments group by rfm_segment")
    got = {r["rfm_segment"]: r["n"] for r in got.to_pylist()}
    want = segments.group_by("rfm_segment").aggregate([("rfm_segment", "count")]).to_pylist()
    want = {r["rfm_segment"]: r["rfm_segment_count"] for r in want}
    assert got == want, (got, want)
    # Fully qualified names and the information schema work too.
    n2 = query(conn, "select count(*) as n from segflow.public.customer_segments").column("n")[0].as_py()
    assert n2 == n
    tables = query(conn, "select table_name from information_schema.tables where table_schema = 'public'")
    assert set(tables.column("table_name").to_pylist()) == set(pointer["tables"])

    # A prepared statement with a parameter: one customer's row, as in the Delta table.
    cid = segments.column("customer_id")[len(segments) // 2].as_py()
    row = query(conn, "select customer_id, rfm_segment, monetary from customer_segments where customer_id = $1",
                parameters=(cid,))
    assert row.num_rows == 1, row
    want = segments.filter(pc.equal(segments["customer_id"], cid)).select(["customer_id", "rfm_segment", "monetary"])
    assert row.to_pylist() == want.to_pylist(), (row.to_pylist(), want.to_pylist())
    # The same statement again with another value (bound anew, not cached).
    other = segments.column("customer_id")[0].as_py()
    again = query(conn, "select customer_id from customer_segments where customer_id = $1", parameters=(other,))
    assert again.column("customer_id").to_pylist() == [other]
    n_param = query(conn, "select count(*) as n from customer_segments where frequency >= $1", parameters=(2,))
    want_n = pc.sum(pc.greater_equal(segments["frequency"], 2)).as_py()
    assert n_param.column("n")[0].as_py() == want_n

    # A missing token and a wrong one are both refused, before anything is read.
    for bad in [None, "not-the-token-0123456789"]:
        def attempt(bad=bad):
            c = connect(uri, bad)
            try:
                query(c, "select count(*) from customer_segments")
            finally:
                c.close()
        text = refused(attempt, "unauthenticated", "token")
        assert "not-the-token" not in text

    # Read-only: DDL, DML and COPY are refused, and nothing changed.
    copy_to = os.path.join(output, "copied.parquet")
    versions = {t: DeltaTable(v["url"]).version() for t, v in pointer["tables"].items()}
    statements = [
        "DROP TABLE customer_segments",
        "INSERT INTO customer_segments SELECT * FROM customer_segments",
        f"COPY (SELECT * FROM customer_segments) TO '{copy_to}'",
        f"CREATE EXTERNAL TABLE stolen STORED AS CSV LOCATION '{output}/'",
        "CREATE TABLE t AS SELECT 1",
        "SET datafusion.execution.target_partitions = 1",
    ]
    for sql in statements:
        refused(lambda sql=sql: query(conn, sql), "read-only")
        # The update path (DoPut) is refused as well.
        def update(sql=sql):
            with conn.cursor() as cur:
                cur.adbc_statement.set_sql_query(sql)
                cur.adbc_statement.execute_update()
        refused(update, "read-only")
    assert not os.path.exists(copy_to)
    after = {t: DeltaTable(v["url"]).version() for t, v in pointer["tables"].items()}
    assert after == versions, (versions, after)
    assert published(output) == pointer
    n3 = query(conn, "select count(*) as n from customer_segments").column("n")[0].as_py()
    assert n3 == n
    names = query(conn, "select table_name from information_schema.tables where table_schema = 'public'")
    assert set(names.column("table_name").to_pylist()) == set(pointer["tables"])

    # The session's settings are readable, the pipeline's storage options are not among them.
    stores = query(conn, "select value from information_schema.df_settings where name = 'segflow_storage.stores'")
    assert stores.column("value").to_pylist() in ([], [None]), stores

    # A query error says what is wrong and leaves the connection usable.
    refused(lambda: query(conn, "select no_such_column from customer_segments"), "no_such_column")
    refused(lambda: query(conn, "select * from customer_segments where customer_id = $1"), "parameter")
    assert query(conn, "select 1 as one").column("one")[0].as_py() == 1
    conn.close()
    print(f"flight sql: {len(served)} tables, {n} customers, {len(got)} rfm segments: ok")


# One statement reading two tables of a run: the rfm sizes in segment_profiles against the
# group-by of customer_segments. Tables of two different runs would disagree.
CONSISTENT = """
with s as (select rfm_segment as segment, count(*) as n, max(as_of) as as_of
           from customer_segments group by rfm_segment),
     p as (select segment, customers as n from segment_profiles where segmentation = 'rfm')
select max(s.as_of) as as_of, sum(case when s.n = p.n then 0 else 1 end) as mismatched
from s full outer join p on s.segment = p.segment
"""


def loop(uri, token, stop, result):
    conn = connect(uri, token)
    seen, queries, errors, mixed = {}, 0, [], []
    after_stop = 0
    ready = stop + ".ready"
    while after_stop < 3:
        if os.path.exists(stop):
            after_stop += 1
        try:
            row = query(conn, CONSISTENT).to_pylist()[0]
            as_of = str(row["as_of"])
            seen[as_of] = seen.get(as_of, 0) + 1
            if row["mismatched"] != 0:
                mixed.append(row)
        except Exception as e:  # noqa: BLE001 - every failure is a finding here
            errors.append(str(e))
        queries += 1
        if queries == 1:
            open(ready, "w").close()
        time.sleep(0.01)
    conn.close()
    with open(result, "w") as f:
        json.dump({"queries": queries, "seen": seen, "errors": errors[:5], "mixed": mixed[:5]}, f)
    assert not errors, errors[:5]
    assert not mixed, mixed[:5]
    print(f"flight sql loop: {queries} queries, as_of seen {seen}: ok")


def limits(uri, token, ca_pem):
    with open(ca_pem) as f:
        conn = connect(uri, token, **{TLS_ROOTS: f.read()})
    n = query(conn, "select count(*) as n from customer_segments").column("n")[0].as_py()
    assert n > 0
    # Past the per-query memory limit: refused, and the server goes on.
    refused(lambda: query(conn, """
        select array_agg(a.customer_id || b.customer_id || c.customer_id) as ids
        from customer_features a, customer_features b, customer_features c"""),
            "resource", "memory")
    # Past the timeout: stopped.
    started = time.monotonic()
    refused(lambda: query(conn, "select count(*) as n from generate_series(1, 100000000000)"),
            "deadline", "query-timeout")
    took = time.monotonic() - started
    assert took < 30, took
    assert query(conn, "select count(*) as n from customer_segments").column("n")[0].as_py() == n
    conn.close()
    print(f"flight sql limits: memory and timeout refused, TLS ok, timeout after {took:.1f}s")


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"check": check, "loop": loop, "limits": limits}[mode](*args)
