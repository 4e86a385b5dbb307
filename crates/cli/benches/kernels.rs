//! Micro-benchmarks of the hot kernels, with criterion:
//!
//! ```text
//! cargo bench --profile dev -p segflow-cli --bench kernels            # all
//! cargo bench --profile dev -p segflow-cli --bench kernels -- lloyd   # names that match
//! ```
//!
//! - `ingest/orders_csv_to_parquet`: the `ingest.csv` stage on a generated orders.csv (typing,
//!   row checks, the duplicate-key count, quarantine and the typed run table), in bytes of CSV
//!   per second. The foreign key to customers is left out so that only orders are read.
//! - `rfm/customer_rfm`: `sql/features/customer_rfm.sql` over typed Parquet customers and
//!   orders, in customers per second.
//! - `kmeans/lloyd_iteration`: one Lloyd step of 10 runs at once (n_init 10), k = 6, 3 features,
//!   over every row: the work of one `kmeans_pass` aggregate, without DataFusion around it.
//! - `kmeans/kmeanspp_draw` and `kmeans/kmeanspp_potential`: the two passes of one greedy
//!   k-means++ step (draw 3 candidates per run, then the potential each would leave).
//!
//! Data: `segflow generate --customers $SEGFLOW_BENCH_CUSTOMERS` (default 20,000; about 10
//! orders each), kept under `$CARGO_TARGET_DIR/bench-kernels/` for the next run. `--profile dev`
//! reuses the test build (dependencies at opt-level 1); plain `cargo bench` builds the release
//! profile, which takes 40+ minutes the first time.

use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use segflow_cli::registry;
use segflow_core::datafusion::common::ParamValues;
use segflow_core::datafusion::prelude::{ParquetReadOptions, SessionContext};
use segflow_core::datafusion::scalar::ScalarValue;
use segflow_core::stage::Quiet;
use segflow_core::{Plan, runner, session};
use segflow_segment::kmeans::kernel::{Pass, Scales, TILE_ROWS, Task};

/// The allocator the `segflow` binary uses (see its main.rs), so kernels are timed as they run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn customers() -> u64 {
    std::env::var("SEGFLOW_BENCH_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// The generated CSVs, made once per size.
fn data() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| segflow_testkit::repo_root().join("target"));
    let dir = target.join("bench-kernels").join(customers().to_string());
    if !dir.join("generated").exists() {
        let out = Command::new(env!("CARGO_BIN_EXE_segflow"))
            .args(["generate", "--seed", "42", "--customers"])
            .arg(customers().to_string())
            .arg("--out")
            .arg(dir.join("in"))
            .output()
            .expect("run segflow generate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(dir.join("generated"), "").expect("mark the data generated");
    }
    dir
}

/// Runs a pipeline in-process, as `segflow run` does, and fails on any error.
fn run(rt: &tokio::runtime::Runtime, pipeline: &Path, output: &Path) {
    let vars = [("output".to_string(), output.display().to_string())];
    let plan = Plan::load(pipeline, &vars, &registry()).expect("load the pipeline");
    let ctx = session::new_session(&session::SessionOptions::default()).expect("session");
    let outcome = rt.block_on(runner::run(
        &ctx,
        &plan,
        &Quiet,
        &runner::RunOptions::default(),
    ));
    if let Some(e) = outcome.error {
        panic!("{}", segflow_core::error::chain(&e));
    }
}

/// A pipeline file in the data folder, with the repo's `sql/`.
fn pipeline(dir: &Path, name: &str, stages: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let text = format!(
        "name: {name}\nvars:\n  output: {{ default: \"\" }}\nruns: ${{output}}/_runs\nsql_dir: {}\nstages:\n{stages}",
        segflow_testkit::repo_root().join("sql").display()
    );
    std::fs::write(&path, text).expect("write the pipeline");
    path
}

fn ingest(c: &mut Criterion) {
    let dir = data();
    let contracts = segflow_testkit::repo_root().join("pipelines/contracts");
    // The orders contract without its foreign key, so the stage reads orders alone.
    let contract: String = std::fs::read_to_string(contracts.join("orders.yaml"))
        .expect("orders contract")
        .lines()
        .filter(|l| !l.starts_with("references:") && !l.contains("table: customers"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join("orders_alone.yaml"), contract).expect("write the contract");
    let orders = dir.join("in/orders.csv");
    let p = pipeline(
        &dir,
        "ingest_orders",
        &format!(
            "  - {{ id: orders, kind: ingest.csv, path: \"{}\", contract: orders_alone.yaml, output: orders }}\n",
            orders.display()
        ),
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let bytes = std::fs::metadata(&orders).expect("orders.csv").len();
    let mut g = c.benchmark_group("ingest");
    g.sample_size(10).throughput(Throughput::Bytes(bytes));
    g.bench_function("orders_csv_to_parquet", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            |out| run(&rt, &p, out.path()),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn rfm(c: &mut Criterion) {
    let dir = data();
    let typed = dir.join("typed");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    if !typed.join("orders/_delta_log").exists() {
        let contracts = segflow_testkit::repo_root().join("pipelines/contracts");
        let input = dir.join("in");
        let p = pipeline(
            &dir,
            "typed",
            &format!(
                "  - {{ id: customers, kind: ingest.csv, path: \"{i}/customers.csv\", contract: {c}/customers.yaml, output: customers, staging: \"${{output}}/customers\" }}\n  - {{ id: orders, kind: ingest.csv, path: \"{i}/orders.csv\", contract: {c}/orders.yaml, output: orders, staging: \"${{output}}/orders\" }}\n",
                i = input.display(),
                c = contracts.display()
            ),
        );
        run(&rt, &p, &typed);
    }
    let sql =
        std::fs::read_to_string(segflow_testkit::repo_root().join("sql/features/customer_rfm.sql"))
            .expect("customer_rfm.sql");
    let ctx = session::new_session(&session::SessionOptions::default()).expect("session");
    rt.block_on(async {
        // A first load is one Delta version: its Parquet files are the table.
        for t in ["customers", "orders"] {
            let path = typed.join(t);
            ctx.register_parquet(
                t,
                path.to_str().expect("utf-8 path"),
                ParquetReadOptions::default(),
            )
            .await
            .expect("register");
        }
    });
    let mut g = c.benchmark_group("rfm");
    g.sample_size(10)
        .throughput(Throughput::Elements(customers()));
    g.bench_function("customer_rfm", |b| {
        b.iter(|| rt.block_on(count(&ctx, &sql)))
    });
    g.finish();
}

async fn count(ctx: &SessionContext, sql: &str) -> usize {
    let as_of = ScalarValue::Utf8(Some("2026-11-01".to_string()));
    let params = ParamValues::from(vec![("as_of", as_of)]);
    let batches = ctx
        .sql(sql)
        .await
        .expect("plan")
        .with_param_values(params)
        .expect("as_of")
        .collect()
        .await
        .expect("run");
    batches.iter().map(|b| b.num_rows()).sum()
}

/// `n` rows of 3 standardized-looking features, deterministic.
fn points(n: usize) -> Vec<f64> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 * 6.0 - 3.0
        })
        .collect()
}

fn kmeans(c: &mut Criterion) {
    const ROWS: usize = 200_000;
    const RUNS: usize = 10;
    const K: usize = 6;
    let xs = points(ROWS);
    let rows: Vec<u64> = (0..ROWS as u64).collect();
    let scales = Scales::for_bounds(&[3.0, 3.0, 3.0]);
    // Each run's centers: K rows spread through the data.
    let centers = |k: usize| -> Vec<Vec<f64>> {
        (0..RUNS)
            .map(|r| {
                (0..k)
                    .flat_map(|j| xs[(r * 7919 + j * 30_011) % ROWS * 3..][..3].to_vec())
                    .collect()
            })
            .collect()
    };
    let passes = [
        (
            "lloyd_iteration",
            Task::Step {
                k: K,
                centers: centers(K),
            },
        ),
        (
            "kmeanspp_gather",
            Task::Gather {
                centers: centers(3),
                tiles: (0..RUNS as u64).map(|r| vec![r, r + 17, r + 31]).collect(),
                tile_rows: TILE_ROWS,
            },
        ),
        (
            "kmeanspp_potential",
            Task::Potential {
                centers: centers(3),
                candidates: centers(3),
                tile_rows: TILE_ROWS,
                tiles: ROWS.div_ceil(TILE_ROWS as usize),
            },
        ),
    ];
    let mut g = c.benchmark_group("kmeans");
    g.throughput(Throughput::Elements(ROWS as u64));
    for (name, task) in passes {
        let pass = Pass {
            scales: scales.clone(),
            task,
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut state = pass.empty_state();
                // In blocks of a DataFusion batch, as the aggregate sees them.
                for (r, x) in rows.chunks(8192).zip(xs.chunks(8192 * 3)) {
                    pass.update(&mut state, r, x);
                }
                state
            })
        });
    }
    g.finish();
}

criterion_group!(benches, ingest, rfm, kmeans);
criterion_main!(benches);
