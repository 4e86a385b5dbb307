//! Warehouse sync against a real PostgreSQL (the image's PostgreSQL 15: initdb and pg_ctl as
//! the postgres user, a random loopback port, a temp dir, stopped when the test ends), and the
//! file exports. Synced tables are compared row for row with their Delta tables at the
//! versions the run pointer names.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use segflow_core::datafusion::arrow::array::{Array, Float64Array};
use segflow_core::datafusion::arrow::datatypes::DataType;
use segflow_core::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use tokio_postgres::{Client, NoTls};

use crate::{default_pipeline, generate, run, segflow, text};

const PASSWORD: &str = "warehouse-pw-7f3a9c";
const DB: &str = "crm";

/// A PostgreSQL server of its own, stopped (immediately) and deleted when dropped.
struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl Postgres {
    fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        let root = is_root();
        if root {
            // initdb refuses to run as root; the server's files belong to `postgres`.
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let out = as_postgres(root, "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "segflow", "-A", "scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb (PostgreSQL 15 is on the image)");
        assert!(out.status.success(), "initdb: {}", text(&out));
        let port = free_port();
        let out = as_postgres(root, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                dir.path().display()
            ))
            .arg("-l")
            .arg(dir.path().join("log"))
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl start: {}", text(&out));
        let pg = Postgres { dir, port };
        pg.block_on(async {
            let c = pg.connect("postgres").await;
            c.batch_execute(&format!("CREATE DATABASE {DB}"))
                .await
                .unwrap();
        });
        pg
    }

    fn url(&self) -> String {
        format!("postgres://segflow@127.0.0.1:{}/{DB}", self.port)
    }

    async fn connect(&self, db: &str) -> Client {
        let (client, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("segflow")
            .password(PASSWORD)
            .dbname(db)
            .connect(NoTls)
            .await
            .expect("connect to the test PostgreSQL");
        tokio::spawn(conn);
        client
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Runtime::new().unwrap().block_on(f)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(is_root(), "pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn as_postgres(root: bool, program: &str) -> Command {
    let bin = ["/usr/lib/postgresql/15/bin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(program))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(program));
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `segflow run` of a sync pipeline over `output`, with `PGPASSWORD` = `password`.
fn sync(pipeline: &Path, output: &Path, url: &str, password: &str) -> std::process::Output {
    sync_command(pipeline, output, url, password)
        .output()
        .expect("run segflow")
}

fn sync_command(pipeline: &Path, output: &Path, url: &str, password: &str) -> Command {
    let mut c = segflow();
    c.arg("run")
        .arg(pipeline)
        .arg("--var")
        .arg(format!("output={}", output.display()))
        .arg("--var")
        .arg(format!("postgres_url={url}"))
        // The killed sync below holds the lease until it expires: the next ones wait.
        .args(["--wait", "--lease-ttl", "3s"])
        .env("PGPASSWORD", password);
    c
}

/// `customers` generated customers (`seed`) in a temp dir, run through the default pipeline
/// for as_of 2026-10-01: the dir, its input and its published output.
fn published(customers: u64, seed: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate(&input, customers, seed);
    let out = run(&default_pipeline(), &input, &output, &["as_of=2026-10-01"]);
    assert!(out.status.success(), "{}", text(&out));
    (dir, input, output)
}

/// `segflow run pipelines/file_exports.yaml` over `output` with `vars`; it must succeed.
fn file_exports(output: &Path, vars: &[&str]) {
    let out = segflow()
        .arg("run")
        .arg(segflow_testkit::repo_root().join("pipelines/file_exports.yaml"))
        .args(["--var", &format!("output={}", output.display())])
        .args(vars.iter().flat_map(|v| ["--var", *v]))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

fn warehouse_sync() -> PathBuf {
    segflow_testkit::repo_root().join("pipelines/warehouse_sync.yaml")
}

/// Rows as text, sorted: doubles by their shortest round-trip text (Rust's `{:?}` of the f64
/// both sides read), everything else as PostgreSQL's and Arrow's text agree on (dates,
/// numerics with their scale, integers, strings, true/false), NULL as `NULL`.
type Rows = Vec<Vec<String>>;

/// A published table at the version the pointer names, as [`Rows`], and its column names.
fn delta_rows(output: &Path, table: &str) -> (Vec<String>, Rows) {
    let pointer: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(output.join("_runs/_published.json")).unwrap(),
    )
    .unwrap();
    let entry = &pointer["tables"][table];
    let url = url::Url::parse(entry["url"].as_str().unwrap()).unwrap();
    let version = entry["version"].as_u64().unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ctx = segflow_core::datafusion::prelude::SessionContext::new();
        let t = segflow_core::publish::open_table_at(&ctx, &url, version)
            .await
            .unwrap();
        let batches = segflow_core::publish::rows(&ctx, &t, &url)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let columns: Vec<String> = batches
            .first()
            .map(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut rows = Vec::new();
        let options = FormatOptions::default().with_null("NULL");
        for b in &batches {
            let formatters: Vec<Box<dyn Fn(usize) -> String>> = b
                .columns()
                .iter()
                .map(|c| -> Box<dyn Fn(usize) -> String> {
                    if c.data_type() == &DataType::Float64 {
                        let a = c.as_any().downcast_ref::<Float64Array>().unwrap().clone();
                        Box::new(move |i| {
                            if a.is_null(i) {
                                "NULL".into()
                            } else {
                                format!("{:?}", a.value(i))
                            }
                        })
                    } else {
                        let c = c.clone();
                        let options = options.clone();
                        Box::new(move |i| {
                            ArrayFormatter::try_new(c.as_ref(), &options)
                                .unwrap()
                                .value(i)
                                .to_string()
                        })
                    }
                })
                .collect();
            for i in 0..b.num_rows() {
                rows.push(formatters.iter().map(|f| f(i)).collect());
            }
        }
        rows.sort();
        (columns, rows)
    })
}

/// The rows of `segflow.<table>` (these columns) as [`Rows`].
async fn pg_rows(client: &Client, table: &str, columns: &[String]) -> Rows {
    let types: Vec<(String, String)> = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
              WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            &[&format!("segflow.{table}")],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let select: Vec<String> = columns
        .iter()
        .map(|c| {
            let t = &types.iter().find(|(n, _)| n == c).expect("column synced").1;
            if t == "double precision" {
                format!("\"{c}\"")
            } else {
                format!("\"{c}\"::text")
            }
        })
        .collect();
    let rows = client
        .query(
            &format!("SELECT {} FROM segflow.\"{table}\"", select.join(", ")),
            &[],
        )
        .await
        .unwrap();
    let mut out: Rows = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let t = &types.iter().find(|(n, _)| n == c).unwrap().1;
                    if t == "double precision" {
                        r.get::<_, Option<f64>>(i)
                            .map_or("NULL".into(), |v| format!("{v:?}"))
                    } else {
                        r.get::<_, Option<String>>(i)
                            .unwrap_or_else(|| "NULL".into())
                    }
                })
                .collect()
        })
        .collect();
    out.sort();
    out
}

/// Every synced table equals its Delta table, row for row.
fn assert_synced(pg: &Postgres, output: &Path, tables: &[(&str, &str)]) {
    for (pg_table, delta_table) in tables {
        let (columns, want) = delta_rows(output, delta_table);
        let got = pg.block_on(async {
            let c = pg.connect(DB).await;
            pg_rows(&c, pg_table, &columns).await
        });
        assert_eq!(got.len(), want.len(), "{pg_table}: row count");
        assert!(
            got == want,
            "{pg_table} differs from the Delta table {delta_table}"
        );
    }
}

const DEFAULT_TABLES: &[(&str, &str)] = &[
    ("customer_segments", "customer_segments"),
    ("segment_profiles", "segment_profiles"),
    ("campaign_performance", "campaign_performance"),
    ("segment_catalog", "segment_catalog"),
    ("segment_changes", "segment_changes"),
];

/// What the database holds: every table of the schema with a digest of its rows, and the
/// sync state.
async fn snapshot(client: &Client) -> Vec<(String, String)> {
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'segflow' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for t in tables {
        let digest: Option<String> = client
            .query_one(
                &format!(
                    "SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM segflow.\"{t}\" x"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        out.push((t, digest.unwrap_or_default()));
    }
    out
}

/// `segflow.<table>`'s rows' xmin (the transaction that last wrote them) by key.
async fn writers(client: &Client, sql: &str) -> std::collections::BTreeMap<String, String> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn postgres_sync_is_exact_incremental_atomic_and_readable_during_a_replace() {
    let pg = Postgres::start();
    let (dir, input, output) = published(400, 11);

    // A first sync creates the schema, the tables (with the contract's comments) and the state.
    let out = sync(&warehouse_sync(), &output, &pg.url(), PASSWORD);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(PASSWORD));
    assert_synced(&pg, &output, DEFAULT_TABLES);
    pg.block_on(async {
        let c = pg.connect(DB).await;
        let r = c
            .query_one(
                "SELECT format_type(atttypid, atttypmod), col_description(attrelid, attnum),
                        obj_description(attrelid, 'pg_class')
                   FROM pg_attribute WHERE attrelid = 'segflow.customer_segments'::regclass
                    AND attname = 'monetary'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(r.get::<_, String>(0), "numeric(18,2)");
        assert!(r.get::<_, String>(1).contains("sum of counted amounts"));
        assert!(r.get::<_, String>(2).contains("one row per customer"));
        let types: Vec<String> = c
            .query(
                "SELECT DISTINCT format_type(atttypid, atttypmod) FROM pg_attribute
                  WHERE attrelid = 'segflow.customer_segments'::regclass AND attnum > 0 ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            types,
            [
                "date",
                "double precision",
                "integer",
                "numeric(18,2)",
                "text"
            ]
        );
    });

    // A second as_of, run by the default pipeline with postgres_url set: it syncs after it
    // publishes. segment_changes gets exactly that as_of's rows; the first as_of's rows are
    // not rewritten; customers whose values did not change are not rewritten either.
    let (before_changes, before_segments) = pg.block_on(async {
        let c = pg.connect(DB).await;
        (
            writers(&c, "SELECT customer_id || '/' || segmentation || '/' || to_as_of, xmin::text FROM segflow.segment_changes").await,
            writers(&c, "SELECT customer_id, xmin::text FROM segflow.customer_segments").await,
        )
    });
    let mut second = segflow();
    second
        .arg("run")
        .arg(default_pipeline())
        .args(["--var", &format!("input={}", input.display())])
        .args(["--var", &format!("output={}", output.display())])
        .args(["--var", "as_of=2026-10-15"])
        .args(["--var", &format!("postgres_url={}", pg.url())])
        .env("PGPASSWORD", PASSWORD);
    let out = second.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_synced(&pg, &output, DEFAULT_TABLES);
    let manifest = crate::newest_manifest(&output);
    let sync_stage = manifest["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "sync_postgres")
        .unwrap()
        .clone();
    assert_eq!(sync_stage["status"], "succeeded");
    let changes = &sync_stage["metrics"]["segment_changes"];
    assert_eq!(changes["partitions"], serde_json::json!(["2026-10-15"]));
    let (after_changes, after_segments, state) = pg.block_on(async {
        let c = pg.connect(DB).await;
        (
            writers(&c, "SELECT customer_id || '/' || segmentation || '/' || to_as_of, xmin::text FROM segflow.segment_changes").await,
            writers(&c, "SELECT customer_id, xmin::text FROM segflow.customer_segments").await,
            writers(&c, "SELECT table_name, delta_version::text FROM segflow.segflow_sync_state").await,
        )
    });
    let new_rows: Vec<&String> = after_changes
        .keys()
        .filter(|k| !before_changes.contains_key(*k))
        .collect();
    let (_, delta_changes) = delta_rows(&output, "segment_changes");
    let in_delta = delta_changes
        .iter()
        .filter(|r| r.contains(&"2026-10-15".to_string()))
        .count();
    assert!(in_delta > 0, "the second as_of changes some segments");
    assert_eq!(new_rows.len(), in_delta);
    for (k, xmin) in &before_changes {
        assert_eq!(after_changes.get(k), Some(xmin), "{k} was rewritten");
    }
    let rewritten = after_segments
        .iter()
        .filter(|(k, x)| before_segments.get(*k) != Some(*x))
        .count() as u64;
    let segments = &sync_stage["metrics"]["customer_segments"];
    assert_eq!(
        rewritten,
        segments["updated"].as_u64().unwrap() + segments["inserted"].as_u64().unwrap()
    );
    let pointer: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(output.join("_runs/_published.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        state["segment_changes"],
        pointer["tables"]["segment_changes"]["version"].to_string()
    );

    // A rerun with nothing new published changes nothing: no row is rewritten.
    let before = pg.block_on(async {
        let c = pg.connect(DB).await;
        writers(&c, "SELECT 'segments/' || customer_id, xmin::text FROM segflow.customer_segments UNION ALL SELECT 'state/' || table_name, xmin::text FROM segflow.segflow_sync_state").await
    });
    let out = sync(&warehouse_sync(), &output, &pg.url(), PASSWORD);
    assert!(out.status.success(), "{}", text(&out));
    let after = pg.block_on(async {
        let c = pg.connect(DB).await;
        writers(&c, "SELECT 'segments/' || customer_id, xmin::text FROM segflow.customer_segments UNION ALL SELECT 'state/' || table_name, xmin::text FROM segflow.segflow_sync_state").await
    });
    assert_eq!(before, after);

    // A sync killed between its COPY and its commit leaves the database exactly as it was:
    // a session holding the state row of customer_segments (the first table) makes the sync
    // wait right before its commit, where it is killed.
    let third = run(&default_pipeline(), &input, &output, &["as_of=2026-11-01"]);
    assert!(third.status.success(), "{}", text(&third));
    pg.block_on(async {
        let holder = pg.connect(DB).await;
        let before = snapshot(&holder).await;
        holder
            .batch_execute(
                "BEGIN; SELECT * FROM segflow.segflow_sync_state
                  WHERE table_name = 'customer_segments' FOR UPDATE",
            )
            .await
            .unwrap();
        let mut child = sync_command(&warehouse_sync(), &output, &pg.url(), PASSWORD)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let watcher = pg.connect(DB).await;
        let started = Instant::now();
        loop {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE application_name = 'segflow' AND wait_event_type = 'Lock'
                        AND query LIKE 'INSERT INTO%segflow_sync_state%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting == 1 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the sync never reached its commit"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        holder.batch_execute("ROLLBACK").await.unwrap();
        // The killed sync's session ends when it next reads from its closed socket.
        let started = Instant::now();
        while watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'segflow'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            > 0
        {
            assert!(started.elapsed() < Duration::from_secs(60));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(snapshot(&watcher).await, before);
    });

    // Bad credentials, a server that is not there, a bad URL: clear errors, exit codes a
    // scheduler acts on, never the password.
    let wrong = "not-the-password-42";
    let out = sync(&warehouse_sync(), &output, &pg.url(), wrong);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains(&format!("127.0.0.1:{}/{DB} as segflow", pg.port)),
        "{all}"
    );
    assert!(all.contains("password authentication failed"), "{all}");
    assert!(!all.contains(wrong));
    // A role without the privilege to create the schema: exit 1, the server's reason.
    pg.block_on(async {
        let c = pg.connect(DB).await;
        c.batch_execute(&format!(
            "CREATE ROLE reader LOGIN PASSWORD '{PASSWORD}'; REVOKE CREATE ON DATABASE {DB} FROM PUBLIC"
        ))
        .await
        .unwrap();
    });
    let mut cmd = sync_command(
        &warehouse_sync(),
        &output,
        &format!("postgres://reader@127.0.0.1:{}/{DB}", pg.port),
        PASSWORD,
    );
    let out = cmd
        .args(["--var", "postgres_schema=reader_copy"])
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("permission denied for database"), "{all}");
    assert!(
        all.contains(&format!("127.0.0.1:{}/{DB} as reader", pg.port)),
        "{all}"
    );
    let closed = format!("postgres://segflow@127.0.0.1:{}/{DB}", free_port());
    let out = sync(&warehouse_sync(), &output, &closed, PASSWORD);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("connecting"), "{}", text(&out));
    let out = sync(
        &warehouse_sync(),
        &output,
        &format!("postgres://segflow:{wrong}@[::1/{DB}"),
        PASSWORD,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!text(&out).contains(wrong), "{}", text(&out));
    let out = sync(&warehouse_sync(), &output, "", PASSWORD);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--var postgres_url="), "{}", text(&out));

    // The sync after the kill, with a reader in a loop on a table being replaced: every read
    // succeeds and sees a whole table (one as_of, all its customers).
    let replaced = dir.path().join("replace.yaml");
    std::fs::write(
        &replaced,
        std::fs::read_to_string(warehouse_sync())
            .unwrap()
            .replace(
                "      - { table: customer_segments, mode: upsert, key: [customer_id] }",
                "      - { table: customer_segments, mode: upsert, key: [customer_id] }\n      - { table: customer_segments, as: customer_segments_replaced, mode: replace, key: [customer_id] }",
            )
            .replace(
                "runs: ${output}/_sync_runs",
                &format!(
                    "runs: ${{output}}/_sync_runs\nsql_dir: {}",
                    segflow_testkit::repo_root().join("sql").display()
                ),
            ),
    )
    .unwrap();
    let out = sync(&replaced, &output, &pg.url(), PASSWORD);
    assert!(out.status.success(), "{}", text(&out));
    assert_synced(&pg, &output, DEFAULT_TABLES);
    let fourth = run(&default_pipeline(), &input, &output, &["as_of=2026-11-15"]);
    assert!(fourth.status.success(), "{}", text(&fourth));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = pg.url();
    let port = pg.port;
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    let (c, conn) = tokio_postgres::Config::new()
                        .host("127.0.0.1")
                        .port(port)
                        .user("segflow")
                        .password(PASSWORD)
                        .dbname(DB)
                        .connect(NoTls)
                        .await
                        .unwrap();
                    tokio::spawn(conn);
                    let mut seen = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let r = c
                            .query_one(
                                "SELECT count(*), count(DISTINCT as_of), min(as_of)::text
                               FROM segflow.customer_segments_replaced",
                                &[],
                            )
                            .await
                            .expect("a read during the replace");
                        seen.push((
                            r.get::<_, i64>(0),
                            r.get::<_, i64>(1),
                            r.get::<_, String>(2),
                        ));
                    }
                    seen
                })
        })
    };
    let out = sync(&replaced, &output, &url, PASSWORD);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.join().expect("the reader never failed");
    assert!(out.status.success(), "{}", text(&out));
    assert_synced(
        &pg,
        &output,
        &[
            ("customer_segments_replaced", "customer_segments"),
            ("customer_segments", "customer_segments"),
            ("segment_changes", "segment_changes"),
        ],
    );
    // The reader spanned the swap: it saw the old table, then the new one.
    assert_eq!(seen.first().unwrap().2, "2026-11-01", "{}", seen.len());
    assert_eq!(seen.last().unwrap().2, "2026-11-15", "{}", seen.len());
    for (rows, days, day) in &seen {
        assert_eq!((*rows, *days), (400, 1), "a half-loaded table: {seen:?}");
        assert!(day == "2026-11-01" || day == "2026-11-15", "{day}");
    }
}

#[test]
fn file_exports_finish_with_a_success_manifest_that_matches_the_files() {
    let (_dir, _input, output) = published(200, 5);
    for format in ["parquet", "csv", "parquet"] {
        file_exports(&output, &[&format!("format={format}")]);
        for table in [
            "customer_segments",
            "segment_profiles",
            "campaign_performance",
        ] {
            let folder = output.join(format!("exports/{table}/as_of=2026-10-01"));
            // Exactly the listed files (a rerun left nothing behind), each with its bytes and
            // checksum; _SUCCESS is the newest file.
            let success = checked_success(&folder);
            assert_eq!(success["format"], format);
            assert_eq!(success["as_of"], "2026-10-01");
            let (_, rows) = delta_rows(&output, table);
            assert_eq!(
                success["rows"].as_u64().unwrap(),
                rows.len() as u64,
                "{table}"
            );
            let done = std::fs::metadata(folder.join("_SUCCESS"))
                .unwrap()
                .modified()
                .unwrap();
            let mut counted = 0;
            for f in success["files"].as_array().unwrap() {
                let path = folder.join(f["path"].as_str().unwrap());
                assert!(std::fs::metadata(&path).unwrap().modified().unwrap() <= done);
                counted += f["rows"].as_u64().unwrap();
                if format == "csv" {
                    assert_eq!(
                        csv_records(&path).1.len() as u64,
                        f["rows"].as_u64().unwrap()
                    );
                }
            }
            assert_eq!(counted, rows.len() as u64);
            assert!(
                !output
                    .join(format!("exports/{table}/_temporary"))
                    .read_dir()
                    .is_ok_and(|mut d| d.next().is_some())
            );
        }
    }
}

/// The `_SUCCESS` of a folder, after checking that the folder holds exactly its files (and
/// `_skipped.csv` when it lists skipped rows), each with its bytes and SHA-256.
fn checked_success(folder: &Path) -> serde_json::Value {
    use sha2::Digest as _;
    let success: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("_SUCCESS")).unwrap()).unwrap();
    let mut listed: Vec<String> = success["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    for f in success["files"].as_array().unwrap() {
        let bytes = std::fs::read(folder.join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(bytes.len() as u64, f["bytes"].as_u64().unwrap());
        let sum: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sum, f["sha256"].as_str().unwrap());
    }
    if let Some(f) = success["skipped"]["file"].as_str() {
        listed.push(f.to_string());
    }
    listed.sort();
    let mut on_disk: Vec<String> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "_SUCCESS")
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, listed);
    success
}

/// The records of a CRM file: header, rows.
fn csv_records(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().iter().map(str::to_string).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
        .collect();
    (header, rows)
}

#[test]
fn crm_files_hold_the_changed_customers_in_each_crms_format_within_its_limits() {
    let (dir, input, output) = published(300, 9);
    let emails: std::collections::BTreeMap<String, String> = {
        let (h, rows) = csv_records(&input.join("customers.csv"));
        let at = h.iter().position(|c| c == "email").unwrap();
        rows.into_iter()
            .map(|r| (r[0].clone(), r[at].clone()))
            .collect()
    };
    // The first HubSpot export has every customer with an email; the others are listed as
    // skipped, with the reason.
    file_exports(&output, &[]);
    let folder = output.join("exports/crm/hubspot/as_of=2026-10-01");
    let success = checked_success(&folder);
    let (header, rows) = csv_records(&folder.join("segflow-hubspot-2026-10-01-0001.csv"));
    assert_eq!(
        header[..3],
        ["Email", "segflow_customer_id", "segflow_rfm_segment"]
    );
    let without = emails.values().filter(|e| e.is_empty()).count();
    assert!(without > 0, "the generator leaves some emails empty");
    assert_eq!(rows.len(), 300 - without);
    assert_eq!(success["rows"], rows.len());
    assert_eq!(success["skipped"]["rows"], without);
    for r in &rows {
        assert_eq!(emails[&r[1]], r[0]);
    }
    // A second as_of: exactly the customers in its segment_changes (those with an email).
    let out = run(&default_pipeline(), &input, &output, &["as_of=2026-10-15"]);
    assert!(out.status.success(), "{}", text(&out));
    file_exports(&output, &[]);
    let folder = output.join("exports/crm/hubspot/as_of=2026-10-15");
    checked_success(&folder);
    let changed: std::collections::BTreeSet<String> = crate::query_tables(
        &output,
        &["segment_changes"],
        "select distinct customer_id from segment_changes where to_as_of = date '2026-10-15'",
    )
    .into_iter()
    .map(|r| r[0].clone())
    .filter(|c| !emails[c].is_empty())
    .collect();
    assert!(!changed.is_empty());
    let exported: std::collections::BTreeSet<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv") && !p.ends_with("_skipped.csv"))
        .flat_map(|p| csv_records(&p).1)
        .map(|r| r[1].clone())
        .collect();
    assert_eq!(exported, changed);
    // Nothing new: the folder stays as it was.
    let before = std::fs::read(folder.join("_SUCCESS")).unwrap();
    file_exports(&output, &[]);
    assert_eq!(std::fs::read(folder.join("_SUCCESS")).unwrap(), before);

    // Salesforce and Zoho, every customer, in files split at small limits.
    let pipeline = dir.path().join("crm.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "name: crm\nvars:\n  output: {{ default: \"\" }}\nruns: ${{output}}/_crm_runs\nsql_dir: {}\nstages:\n\
             - {{ id: sf, kind: export.crm, format: salesforce, mode: full, runs: \"${{output}}/_runs\", path: \"${{output}}/small\", max_rows: 40, max_bytes: 4000 }}\n\
             - {{ id: zoho, kind: export.crm, format: zoho, mode: full, runs: \"${{output}}/_runs\", path: \"${{output}}/small\", max_rows: 25 }}\n",
            segflow_testkit::repo_root().join("sql").display()
        ),
    )
    .unwrap();
    let out = segflow()
        .arg("run")
        .arg(&pipeline)
        .args(["--var", &format!("output={}", output.display())])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for (crm, max_rows, max_bytes) in [("salesforce", 40, 4000), ("zoho", 25, 25 << 20)] {
        let folder = output.join(format!("small/{crm}/as_of=2026-10-15"));
        let success = checked_success(&folder);
        let files = success["files"].as_array().unwrap();
        assert!(files.len() > 1, "{crm}: split into several files");
        let mut total = 0;
        for f in files {
            let path = folder.join(f["path"].as_str().unwrap());
            let (header, rows) = csv_records(&path);
            assert!(rows.len() <= max_rows && f["bytes"].as_u64().unwrap() <= max_bytes);
            assert_eq!(rows.len() as u64, f["rows"].as_u64().unwrap());
            total += rows.len();
            if crm == "salesforce" {
                assert_eq!(header[0], "Segflow_Customer_Id__c");
                assert!(header.contains(&"Segflow_RFM_Segment__c".to_string()));
                // Customers without orders have no cluster: #N/A clears the field.
                let at = header
                    .iter()
                    .position(|h| h == "Segflow_Cluster_Label__c")
                    .unwrap();
                assert!(rows.iter().all(|r| !r[at].is_empty()));
            } else {
                assert_eq!(header[..2], ["Email", "Last Name"]);
                assert!(rows.iter().all(|r| !r[0].is_empty() && !r[1].is_empty()));
            }
        }
        let skipped = success["skipped"]["rows"].as_u64().unwrap() as usize;
        assert_eq!(total + skipped, 300, "{crm}");
        if crm == "salesforce" {
            assert_eq!(skipped, 0);
            let any_na = files.iter().any(|f| {
                std::fs::read_to_string(folder.join(f["path"].as_str().unwrap()))
                    .unwrap()
                    .contains("#N/A")
            });
            assert!(any_na);
        }
    }
}
