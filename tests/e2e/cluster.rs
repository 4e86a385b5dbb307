//! The default pipeline on a Ballista cluster of real `segflow` processes on 127.0.0.1: one
//! `segflow scheduler` and two `segflow executor`s on free ports, each executor with its own
//! work dir. Every published table must equal a local run's (EXCEPT ALL both ways, the
//! quarantine's run id aside), on local files and on an S3 server; an executor killed in the
//! middle of a run must leave either the same tables or none.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use segflow_core::datafusion::prelude::SessionContext;

use crate::{default_pipeline, newest_manifest, run, segflow, text};

/// A scheduler and executors, stopped when dropped.
pub struct Cluster {
    /// `ballista://127.0.0.1:PORT`, for `--engine`.
    pub url: String,
    scheduler: Child,
    executors: Vec<Child>,
    dir: tempfile::TempDir,
}

/// A free loopback port whose next port is free too (an executor takes both).
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two free neighbouring ports on 127.0.0.1");
}

impl Cluster {
    /// Starts a scheduler on a free port and `executors` executors, with `env` (credentials,
    /// endpoints) in every process's environment; returns once every executor has registered.
    pub fn start(executors: usize, env: &[(&str, String)]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().to_path_buf();
        let log = |name: &str| std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
        let mut scheduler = segflow()
            .args([
                "scheduler",
                "--bind",
                "127.0.0.1:0",
                "--executor-timeout",
                "6",
            ])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("SEGFLOW_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log("scheduler"))
            .spawn()
            .expect("start segflow scheduler");
        let mut line = String::new();
        BufReader::new(scheduler.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .trim()
            .strip_prefix("segflow scheduler listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "the scheduler did not say where it listens ({line:?}): {}",
                    std::fs::read_to_string(dir.path().join("scheduler.log")).unwrap_or_default()
                )
            })
            .to_string();
        let mut cluster = Cluster {
            url: format!("ballista://{address}"),
            scheduler,
            executors: Vec::new(),
            dir,
        };
        let mut ports = Vec::new();
        for i in 0..executors {
            let port = free_port_pair();
            let work = cluster.dir.path().join(format!("executor-{i}"));
            let child = segflow()
                .args(["executor", "--scheduler", &address])
                .args(["--bind", &format!("127.0.0.1:{port}")])
                .arg("--work-dir")
                .arg(&work)
                .args(["--concurrent-tasks", "2", "--heartbeat", "1"])
                .args(["--id", &format!("executor-{i}")])
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .env("SEGFLOW_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log(&format!("executor-{i}")))
                .spawn()
                .expect("start segflow executor");
            cluster.executors.push(child);
            ports.push(port);
        }
        // An executor serves its results only once the scheduler has taken its registration.
        let deadline = Instant::now() + Duration::from_secs(60);
        for port in ports {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "executor on port {port} did not start in 60 s:\n{}",
                    cluster.logs()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    /// Kills executor `i` at once (SIGKILL: no goodbye to the scheduler).
    pub fn kill_executor(&mut self, i: usize) {
        let _ = self.executors[i].kill();
        let _ = self.executors[i].wait();
    }

    /// The processes' logs, for a failed assertion's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                out.push_str(&format!("--- {}\n", e.path().display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.executors.iter_mut().chain([&mut self.scheduler]) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Every table the default pipeline publishes, by its path under the output.
pub const PUBLISHED: [&str; 17] = [
    "customer_segments",
    "customer_features",
    "segment_profiles",
    "segment_catalog",
    "cluster_centers",
    "cluster_scores",
    "customer_clv",
    "clv_model",
    "segment_migrations",
    "segment_changes",
    "campaign_performance",
    "quarantine",
    "segment_history",
    "staging/customers",
    "staging/orders",
    "staging/events",
    "staging/survey_responses",
];

/// Asserts that every published table has the same rows in both outputs (EXCEPT ALL both
/// ways, with duplicates counted), the run id and the run's clock aside. `b` may be read
/// through `ctx`'s object stores (an S3 server's).
pub fn assert_same_tables(ctx: &SessionContext, a: &url::Url, b: &url::Url) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for table in PUBLISHED {
            let (ua, ub) = (join(a, table), join(b, table));
            segflow_testkit::delta::register(ctx, "a", &ua).await;
            segflow_testkit::delta::register(ctx, "b", &ub).await;
            let columns: Vec<String> = ctx
                .table("a")
                .await
                .unwrap()
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .filter(|c| c != "run_id")
                .map(|c| match c.as_str() {
                    // An out_of_range message names the range, whose upper end is `now`, the
                    // run's start: the one timestamp in the tables.
                    "message" => format!(
                        "regexp_replace(\"{c}\", '\\.\\.[0-9][0-9T:Z-]*', '..<now>') as \"{c}\""
                    ),
                    _ => format!("\"{c}\""),
                })
                .collect();
            let columns = columns.join(", ");
            let count = |t: &str| format!("select count(*) from {t}");
            let n = segflow_testkit::delta::rows(
                &segflow_testkit::delta::collect(ctx, &count("a")).await,
            );
            let m = segflow_testkit::delta::rows(
                &segflow_testkit::delta::collect(ctx, &count("b")).await,
            );
            assert_eq!(n, m, "{table}: row counts differ");
            for (x, y) in [("a", "b"), ("b", "a")] {
                let sql = format!("select {columns} from {x} except all select {columns} from {y}");
                let extra =
                    segflow_testkit::delta::rows(&segflow_testkit::delta::collect(ctx, &sql).await);
                assert!(
                    extra.is_empty(),
                    "{table}: {} rows of {x} are not in {y}, e.g. {:?}",
                    extra.len(),
                    &extra[..extra.len().min(3)]
                );
            }
        }
    });
}

fn join(base: &url::Url, table: &str) -> url::Url {
    let mut u = base.clone();
    u.set_path(&format!("{}/{table}/", base.path().trim_end_matches('/')));
    u
}

fn local_url(dir: &Path) -> url::Url {
    url::Url::from_directory_path(dir).unwrap()
}

/// The default pipeline over `input` into `output` on the embedded engine.
fn local_run(input: &Path, output: &Path) -> Output {
    run(&default_pipeline(), input, output, &["as_of=2025-06-01"])
}

/// The same on the cluster at `engine`, with four partitions so both executors get tasks.
fn cluster_run(engine: &str, input: &Path, output: &Path) -> Command {
    let mut c = segflow();
    c.arg("run")
        .arg(default_pipeline())
        .arg("--var")
        .arg(format!("input={}", input.display()))
        .arg("--var")
        .arg(format!("output={}", output.display()))
        .args(["--var", "as_of=2025-06-01"])
        .args(["--engine", engine, "--target-partitions", "4"]);
    c
}

/// Generated input for the cluster tests: `customers` customers, 1% of rows corrupted.
fn generated(dir: &Path, customers: u64) -> PathBuf {
    let input = dir.join("in");
    crate::generate_with(&input, customers, 15, Some(0.01));
    input
}

#[test]
fn default_pipeline_on_a_loopback_cluster_publishes_what_a_local_run_does() {
    let cluster = Cluster::start(2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let input = generated(dir.path(), 2000);
    let (local_out, cluster_out) = (dir.path().join("local"), dir.path().join("cluster"));
    let local = local_run(&input, &local_out);
    assert!(local.status.success(), "{}", text(&local));
    let started = Instant::now();
    let out = cluster_run(&cluster.url, &input, &cluster_out)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), cluster.logs());
    eprintln!("cluster run: {:.1} s", started.elapsed().as_secs_f64());

    assert_same_tables(
        &SessionContext::new(),
        &local_url(&local_out),
        &local_url(&cluster_out),
    );

    // The manifest says where the plans ran, which jobs ran them, and who wrote the files.
    let m = newest_manifest(&cluster_out);
    assert_eq!(m["engine"], cluster.url.as_str());
    let stages = m["stages"].as_array().unwrap();
    let jobs: usize = stages
        .iter()
        .map(|s| s["engine_jobs"].as_array().unwrap().len())
        .sum();
    assert!(jobs > stages.len(), "every stage runs jobs: {jobs}");
    let workers = |stage: &serde_json::Value| -> Vec<String> {
        stage["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect()
    };
    let all: std::collections::BTreeSet<String> = stages.iter().flat_map(workers).collect();
    assert_eq!(
        all.into_iter().collect::<Vec<_>>(),
        ["client", "executor-0", "executor-1"],
        "both executors wrote files"
    );
    // The client writes only what it computed itself: k-means' fitted rows, the CLV
    // predictions (both models are fitted in the segflow process) and the segment catalog's
    // definitions (from the YAML, beside the rule segments the executors write).
    for s in stages
        .iter()
        .filter(|s| s["id"] != "clusters" && s["id"] != "clv" && s["id"] != "rule_segments")
    {
        assert!(!workers(s).contains(&"client".to_string()), "{}", s["id"]);
    }
    let kmeans = &stages.iter().find(|s| s["id"] == "clusters").unwrap()["metrics"]["kmeans"];
    assert!(kmeans["passes"].as_u64().unwrap() > 0);
    assert_eq!(newest_manifest(&local_out)["engine"], "local");
    // Nothing of the run's work is left.
    let left: Vec<_> = std::fs::read_dir(cluster_out.join("_runs"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir() && crate::of_a_run(&e.path()))
        .collect();
    assert!(left.is_empty(), "run work left behind: {left:?}");
}

#[test]
fn an_executor_killed_mid_run_leaves_the_same_tables_or_none() {
    let mut cluster = Cluster::start(2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let input = generated(dir.path(), 1000);
    let (local_out, cluster_out) = (dir.path().join("local"), dir.path().join("cluster"));
    let local = local_run(&input, &local_out);
    assert!(local.status.success(), "{}", text(&local));

    let mut child = cluster_run(&cluster.url, &input, &cluster_out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill an executor once the run is past its ingests (the features stage has written its
    // table), while the later stages' jobs are still to come.
    let deadline = Instant::now() + Duration::from_secs(300);
    let features_written = || {
        std::fs::read_dir(cluster_out.join("_runs"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|run| run.path().join("work/customer_features").exists())
    };
    while !features_written() {
        assert!(
            Instant::now() < deadline,
            "the run did not reach `features`:\n{}",
            cluster.logs()
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.kill_executor(1);
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        // Ballista ran the lost tasks again elsewhere: the same tables, no duplicate row.
        eprintln!("the run survived the kill: comparing its tables with the local run's");
        assert_same_tables(
            &SessionContext::new(),
            &local_url(&local_out),
            &local_url(&cluster_out),
        );
    } else {
        // The run failed: it says why, and published nothing at all.
        eprintln!("the run failed after the kill: checking that it published nothing");
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("error:"), "{}", text(&out));
        for table in PUBLISHED {
            assert!(
                !cluster_out.join(table).join("_delta_log").exists(),
                "{table} was published by a failed run:\n{}",
                text(&out)
            );
        }
    }
}

#[test]
fn default_pipeline_on_a_cluster_reads_and_writes_s3() {
    let s3 = crate::s3::S3Server::start();
    let env: Vec<(&str, String)> = s3.env().into_iter().collect();
    let cluster = Cluster::start(2, &env);
    let dir = tempfile::tempdir().unwrap();
    let input = generated(dir.path(), 600);
    s3.upload(&input, "crm/in");
    let local_out = dir.path().join("local");
    let local = local_run(&input, &local_out);
    assert!(local.status.success(), "{}", text(&local));

    let bucket = crate::s3::BUCKET;
    let out = segflow()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .arg("run")
        .arg(default_pipeline())
        .args(["--var", &format!("input=s3://{bucket}/crm/in")])
        .args(["--var", &format!("output=s3://{bucket}/segments")])
        .args(["--var", "as_of=2025-06-01"])
        .args(["--engine", &cluster.url, "--target-partitions", "4"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), cluster.logs());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("segflow-test-secret")
            && !cluster.logs().contains("segflow-test-secret"),
        "credentials never reach logs"
    );
    // The tables in the bucket equal the local run's, source file names aside: the staging
    // tables name their input files, which differ (a bucket and a directory).
    let ctx = s3.context();
    let on_s3 = url::Url::parse(&format!("s3://{bucket}/segments/")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for table in [
            "customer_segments",
            "segment_profiles",
            "cluster_centers",
            "campaign_performance",
        ] {
            segflow_testkit::delta::register(&ctx, "a", &join(&local_url(&local_out), table)).await;
            segflow_testkit::delta::register(&ctx, "b", &join(&on_s3, table)).await;
            for (x, y) in [("a", "b"), ("b", "a")] {
                let sql = format!("select * from {x} except all select * from {y}");
                let extra = segflow_testkit::delta::rows(
                    &segflow_testkit::delta::collect(&ctx, &sql).await,
                );
                assert!(extra.is_empty(), "{table}: {extra:?}");
            }
        }
    });
}

#[test]
fn the_same_plans_through_an_in_process_cluster_publish_the_same_tables() {
    use segflow_core::{runner, session, stage};
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("E2E_LOG").unwrap_or_else(|_| "off".into()))
        .with_writer(std::io::stderr)
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let input = generated(dir.path(), 300);
    let (local_out, standalone_out) = (dir.path().join("local"), dir.path().join("standalone"));
    let local = local_run(&input, &local_out);
    assert!(local.status.success(), "{}", text(&local));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let vars = [
            ("input".to_string(), input.display().to_string()),
            ("output".to_string(), standalone_out.display().to_string()),
            ("as_of".to_string(), "2025-06-01".to_string()),
        ];
        let plan =
            segflow_core::Plan::load(&default_pipeline(), &vars, &segflow_cli::registry()).unwrap();
        let options = session::SessionOptions {
            target_partitions: Some(3),
            memory_limit_bytes: None,
        };
        let ctx = segflow_distributed::standalone(&options, 2).await.unwrap();
        let outcome = runner::run(&ctx, &plan, &stage::Quiet, &runner::RunOptions::default()).await;
        if let Some(e) = &outcome.error {
            panic!("standalone run failed: {}", segflow_core::error::chain(e));
        }
        assert!(outcome.manifest.engine.starts_with("ballista://127.0.0.1:"));
    });
    assert_same_tables(
        &SessionContext::new(),
        &local_url(&local_out),
        &local_url(&standalone_out),
    );
}

#[test]
fn storage_options_of_the_pipeline_reach_the_executors() {
    // The executors have no credentials of their own: the pipeline's `storage:` block (its
    // secrets read from the client's environment) travels with each job.
    let s3 = crate::s3::S3Server::start();
    let cluster = Cluster::start(2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let input = generated(dir.path(), 300);
    s3.upload(&input, "crm/in");
    let local_out = dir.path().join("local");
    let local = local_run(&input, &local_out);
    assert!(local.status.success(), "{}", text(&local));

    let root = segflow_testkit::repo_root();
    let bucket = crate::s3::BUCKET;
    let yaml = std::fs::read_to_string(default_pipeline())
        .unwrap()
        // The pipeline's own runs folder, the first match (the sync stage names it too).
        .replacen(
            "runs: ${output}/_runs",
            &format!(
                "runs: ${{output}}/_runs\nsql_dir: {}\nstorage:\n  s3://{bucket}:\n    \
                 endpoint: ${{env:SEGFLOW_TEST_S3_ENDPOINT}}\n    region: us-east-1\n    \
                 access_key_id: ${{env:SEGFLOW_TEST_S3_KEY}}\n    \
                 secret_access_key: ${{env:SEGFLOW_TEST_S3_SECRET}}\n    allow_http: \"true\"",
                root.join("sql").display()
            ),
            1,
        )
        .replace(
            "contract: contracts/",
            &format!("contract: {}/", root.join("pipelines/contracts").display()),
        );
    let pipeline = dir.path().join("with_storage.yaml");
    std::fs::write(&pipeline, yaml).unwrap();
    let env: std::collections::HashMap<&str, String> = s3.env().into_iter().collect();
    let out = segflow()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_ENDPOINT_URL")
        .env("SEGFLOW_TEST_S3_ENDPOINT", &env["AWS_ENDPOINT_URL"])
        .env("SEGFLOW_TEST_S3_KEY", &env["AWS_ACCESS_KEY_ID"])
        .env("SEGFLOW_TEST_S3_SECRET", &env["AWS_SECRET_ACCESS_KEY"])
        .arg("run")
        .arg(&pipeline)
        .args(["--var", &format!("input=s3://{bucket}/crm/in")])
        .args(["--var", &format!("output=s3://{bucket}/segments")])
        .args(["--var", "as_of=2025-06-01"])
        .args(["--engine", &cluster.url, "--target-partitions", "4"])
        .args(["--log", "debug"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), cluster.logs());
    let secret = &env["AWS_SECRET_ACCESS_KEY"];
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(secret.as_str())
            && !cluster.logs().contains(secret.as_str()),
        "the secret never reaches a log, even at debug"
    );
    let ctx = s3.context();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let on_s3 = url::Url::parse(&format!("s3://{bucket}/segments/customer_segments/")).unwrap();
        segflow_testkit::delta::register(
            &ctx,
            "a",
            &join(&local_url(&local_out), "customer_segments"),
        )
        .await;
        segflow_testkit::delta::register(&ctx, "b", &on_s3).await;
        for (x, y) in [("a", "b"), ("b", "a")] {
            let sql = format!("select * from {x} except all select * from {y}");
            let extra =
                segflow_testkit::delta::rows(&segflow_testkit::delta::collect(&ctx, &sql).await);
            assert!(extra.is_empty(), "{extra:?}");
        }
    });
}
