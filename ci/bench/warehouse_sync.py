"""Warehouse sync benchmark: segflow's PostgreSQL sync of customer_segments against `psql \\copy`
of the same rows as CSV into the same table definition, on one PostgreSQL 15 started here
(initdb + pg_ctl, a random loopback port, a temp dir), 3 rounds alternating; then the time of
an incremental sync after a day's changes (the default pipeline run for the next as_of, then
pipelines/warehouse_sync.yaml).

    warehouse_sync.py SEGFLOW_BIN OUTPUT INPUT WORKDIR

OUTPUT is a published customer_segmentation output (ci/bench-sync.sh makes it). Prints a
markdown table and writes WORKDIR/sync.json.
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta

import duckdb
from deltalake import DeltaTable

bin_, output, input_, work = sys.argv[1:5]
password = "bench-" + os.urandom(6).hex()
env = dict(os.environ, PGPASSWORD=password)
root = os.geteuid() == 0
pgbin = "/usr/lib/postgresql/15/bin"


def as_postgres(args):
    return (["runuser", "-u", "postgres", "--"] if root else []) + args


def sh(args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


# Under /tmp: the postgres user must reach it.
pgdir = tempfile.mkdtemp(prefix="segflow-pg-")
with open(os.path.join(pgdir, "pw"), "w") as f:
    f.write(password)
if root:
    sh(["chown", "-R", "postgres", pgdir])
sh(as_postgres([f"{pgbin}/initdb", "-D", f"{pgdir}/data", "-U", "segflow", "-A", "scram-sha-256",
                f"--pwfile={pgdir}/pw", "--no-sync"]))
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
sh(as_postgres([f"{pgbin}/pg_ctl", "-D", f"{pgdir}/data", "-l", f"{pgdir}/log", "-w", "-o",
                f"-p {port} -k {pgdir} -c listen_addresses=127.0.0.1 -c shared_buffers=1GB "
                "-c max_wal_size=8GB -c checkpoint_timeout=30min", "start"]))
url = f"postgres://segflow@127.0.0.1:{port}/postgres"
psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port),
        "-U", "segflow", "-d", "postgres"]


def stop():
    subprocess.run(as_postgres([f"{pgbin}/pg_ctl", "-D", f"{pgdir}/data", "-m", "fast", "stop"]),
                   capture_output=True)
    shutil.rmtree(pgdir, ignore_errors=True)


try:
    pointer = json.load(open(os.path.join(output, "_runs/_published.json")))
    seg = pointer["tables"]["customer_segments"]
    # The same rows as CSV, written once (not timed), for psql.
    csv_path = os.path.join(work, "customer_segments.csv")
    dt = DeltaTable(seg["url"], version=seg["version"])
    con = duckdb.connect()
    con.register("t", dt.to_pyarrow_dataset())
    con.execute(f"COPY (SELECT * FROM t) TO '{csv_path}' (HEADER, DELIMITER ',')")
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    con.close()

    only = os.path.join(work, "sync_customer_segments.yaml")
    with open("pipelines/warehouse_sync.yaml") as f:
        text = f.read()
    keep = "      - { table: customer_segments, mode: upsert, key: [customer_id] }\n"
    lines = [l for l in text.splitlines(keepends=True)
             if not l.startswith("      - { table:") or l == keep]
    with open(only, "w") as f:
        f.write("".join(lines).replace("${pipeline_dir}", os.path.abspath("pipelines"))
                .replace("runs: ${output}/_sync_runs",
                         f"runs: ${{output}}/_sync_runs\nsql_dir: {os.path.abspath('sql')}"))

    def segflow_sync(pipeline):
        start = time.perf_counter()
        out = subprocess.run([bin_, "run", pipeline, "--var", f"output={output}",
                              "--var", f"postgres_url={url}"], env=env, capture_output=True,
                             text=True)
        wall = time.perf_counter() - start
        if out.returncode != 0:
            sys.exit(f"segflow sync failed:\n{out.stderr}")
        runs = os.path.join(output, "_sync_runs")
        newest = max((p for p in os.listdir(runs) if p.endswith(".json") and not p.startswith("_")),
                     key=lambda p: os.path.getmtime(os.path.join(runs, p)))
        manifest = json.load(open(os.path.join(runs, newest)))
        return wall, manifest["stages"][0]["metrics"]

    rounds = []
    for i in range(3):
        print(f"round {i + 1}/3 ({rows} rows)", file=sys.stderr)
        sh(psql + ["-c", "DROP SCHEMA IF EXISTS segflow CASCADE; DROP SCHEMA IF EXISTS peer CASCADE"], env=env)
        wall, metrics = segflow_sync(only)
        m = metrics["customer_segments"]
        assert m["copied"] == rows and m["inserted"] == rows, m
        # The peer loads the same table definition (columns, types, primary key).
        sh(psql + ["-c", "CREATE SCHEMA peer; CREATE TABLE peer.customer_segments "
                         "(LIKE segflow.customer_segments INCLUDING ALL)"], env=env)
        start = time.perf_counter()
        sh(psql + ["-c", f"\\copy peer.customer_segments FROM '{csv_path}' CSV HEADER"], env=env)
        peer = time.perf_counter() - start
        count = sh(psql + ["-At", "-c", "SELECT count(*) FROM peer.customer_segments"], env=env).stdout
        assert int(count) == rows
        rounds.append({"segflow_wall_s": wall, "segflow_sync_s": m["seconds"], "psql_copy_s": peer})

    # The other three tables' first sync (customer_segments is up to date), so that the timed
    # sync below is an incremental one for every table.
    others_first_wall, _ = segflow_sync("pipelines/warehouse_sync.yaml")
    # A day's changes: the default pipeline for the next as_of (not timed), then the whole
    # sync of pipelines/warehouse_sync.yaml (four tables), timed.
    con = duckdb.connect()
    con.register("t", dt.to_pyarrow_dataset())
    day = con.execute("SELECT max(as_of) FROM t").fetchone()[0]
    con.close()
    next_day = (day + timedelta(days=1)).isoformat()
    print(f"day's changes: as_of {next_day}", file=sys.stderr)
    sh([bin_, "run", "pipelines/customer_segmentation.yaml", "--var", f"input={input_}",
        "--var", f"output={output}", "--var", f"as_of={next_day}"])
    incremental_wall, incremental = segflow_sync("pipelines/warehouse_sync.yaml")
finally:
    stop()

med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
result = {
    "rows": rows,
    "rounds": rounds,
    "median": med,
    "rows_per_s": {k: rows / v for k, v in med.items()},
    "ratio_wall": med["psql_copy_s"] / med["segflow_wall_s"],
    "ratio_sync": med["psql_copy_s"] / med["segflow_sync_s"],
    "others_first_sync_wall_s": others_first_wall,
    "incremental": {"as_of": next_day, "wall_s": incremental_wall, "tables": incremental},
}
json.dump(result, open(os.path.join(work, "sync.json"), "w"), indent=2)
print(f"| customer_segments sync, {rows:,} rows (median of 3) | seconds | rows/s |")
print("|---|---|---|")
print(f"| segflow, whole `segflow run` (process, Delta read, COPY BINARY) | {med['segflow_wall_s']:.2f} | {rows / med['segflow_wall_s']:,.0f} |")
print(f"| segflow, the sync stage | {med['segflow_sync_s']:.2f} | {rows / med['segflow_sync_s']:,.0f} |")
print(f"| psql \\copy of the same rows as CSV | {med['psql_copy_s']:.2f} | {rows / med['psql_copy_s']:,.0f} |")
print(f"\nratio segflow/psql (rows/s): whole run {result['ratio_wall']:.2f}x, sync stage {result['ratio_sync']:.2f}x (target >= 0.8x)")
print(f"incremental sync after a day's changes (as_of {next_day}, 4 tables): {incremental_wall:.2f} s")
for t, m in incremental.items():
    print(f"  {t}: {m['seconds']:.2f} s, copied {m['copied']:,}, inserted {m['inserted']:,}, "
          f"updated {m['updated']:,}, deleted {m['deleted']:,}")
