//! End-to-end tests: the real `segflow` binary on generated data, outputs read back as a BI
//! reader would. Golden SQL tests (`tests/slt`) run from here too, to keep one test binary.

mod atomic;
mod backfill;
mod cli;
mod cluster;
mod clusters;
mod clv;
mod contract;
mod errors;
mod formats;
mod history;
mod incremental;
mod ingest;
mod report;
mod rfm;
mod s3;
mod segments;
mod serve;
mod slt;
mod warehouse;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn segflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_segflow"));
    c.current_dir(segflow_testkit::repo_root());
    c.env_remove("SEGFLOW_LOG");
    c.env_remove("SEGFLOW_LOG_FORMAT");
    c
}

/// The Python of the test tools (DuckDB, deltalake, jsonschema): `SEGFLOW_PYTHON`, set by
/// `ci/test.sh`, else the one `ci/pyenv.sh` installs under target/.
pub fn python() -> PathBuf {
    let in_target = segflow_testkit::repo_root().join("target/pyenv/bin/python");
    std::env::var_os("SEGFLOW_PYTHON")
        .map(PathBuf::from)
        .or_else(|| in_target.exists().then_some(in_target))
        .expect("the Python test tools: run ci/test.sh, or set SEGFLOW_PYTHON")
}

pub fn default_pipeline() -> PathBuf {
    segflow_testkit::repo_root().join("pipelines/customer_segmentation.yaml")
}

/// Runs `segflow generate` into `dir`.
pub fn generate(dir: &Path, customers: u64, seed: u64) {
    generate_with(dir, customers, seed, None)
}

/// Runs `segflow generate` into `dir`, with a fraction `dirty` of the rows corrupted (listed
/// in `corrupted_rows.csv`).
pub fn generate_with(dir: &Path, customers: u64, seed: u64, dirty: Option<f64>) {
    let dirty: Vec<String> = dirty
        .map(|d| vec!["--dirty".to_string(), d.to_string()])
        .unwrap_or_default();
    let out = segflow()
        .args([
            "generate",
            "--customers",
            &customers.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .args(&dirty)
        .arg("--out")
        .arg(dir)
        .output()
        .expect("run segflow generate");
    assert!(
        out.status.success(),
        "generate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `dir/<name>.yaml`: a pipeline with `input` and `output` vars, runs under the output,
/// the repo's `sql/`, and these stages (YAML list items), in which `{contracts}` stands for
/// the repo's contracts folder.
pub fn write_pipeline(dir: &Path, name: &str, stages: &str) -> PathBuf {
    let root = segflow_testkit::repo_root();
    let path = dir.join(format!("{name}.yaml"));
    let text = format!(
        "name: {name}\nvars:\n  input: {{ default: \"\" }}\n  output: {{ default: \"\" }}\nruns: ${{output}}/_runs\nsql_dir: {}\nstages:\n{}",
        root.join("sql").display(),
        stages.replace(
            "{contracts}",
            &root.join("pipelines/contracts").display().to_string()
        )
    );
    std::fs::write(&path, text).expect("write the pipeline");
    path
}

/// Runs a pipeline with `input`/`output` vars and any extra `--var`s.
pub fn run(pipeline: &Path, input: &Path, output: &Path, extra: &[&str]) -> Output {
    let vars: Vec<&str> = extra.iter().flat_map(|v| ["--var", *v]).collect();
    run_with(pipeline, input, output, &vars)
}

/// `segflow run` of `pipeline` over `input` into `output`, with more arguments
/// (`--full-refresh`, `--target-partitions 1`).
pub fn run_with(pipeline: &Path, input: &Path, output: &Path, args: &[&str]) -> Output {
    segflow()
        .arg("run")
        .arg(pipeline)
        .arg("--var")
        .arg(format!("input={}", input.display()))
        .arg("--var")
        .arg(format!("output={}", output.display()))
        .args(args)
        .output()
        .expect("run segflow")
}

/// The manifest of the newest run under `output/_runs`.
pub fn newest_manifest(output: &Path) -> serde_json::Value {
    let newest = std::fs::read_dir(output.join("_runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        // `_published.json` is the publish pointer, not a run.
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('_'))
        // Run ids start with the second the run started; runs in one second tie.
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    serde_json::from_str(&std::fs::read_to_string(newest).unwrap()).unwrap()
}

/// Whether a path under a runs folder is a run's own (its manifest or work folder), not the
/// output's lease (`_lease/`) or publish pointer (`_published.json`).
pub fn of_a_run(p: &Path) -> bool {
    !p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('_'))
}

/// Metric `key` of stage `stage` in the newest run's manifest.
pub fn manifest_metric(output: &Path, stage: &str, key: &str) -> serde_json::Value {
    newest_manifest(output)["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == stage)
        .unwrap()["metrics"][key]
        .clone()
}

pub fn text(out: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn table_url(output: &Path, table: &str) -> url::Url {
    url::Url::from_directory_path(output.join(table)).expect("absolute path")
}

/// Current version and rows of a published table, ordered by its first column.
pub fn read_table(output: &Path, table: &str, columns: &str) -> (u64, Vec<Vec<String>>) {
    let url = table_url(output, table);
    let sql = format!("select {columns} from t order by 1");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (version, batches) = rt.block_on(segflow_testkit::delta::query(&url, &sql));
    (version, segflow_testkit::delta::rows(&batches))
}

/// Rows of `sql` over the published tables named in `tables`, each registered under its last
/// path segment (`staging/orders` as `orders`).
pub fn query_tables(output: &Path, tables: &[&str], sql: &str) -> Vec<Vec<String>> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let ctx = segflow_core::datafusion::prelude::SessionContext::new();
        for t in tables {
            let name = t.rsplit('/').next().unwrap_or(t);
            segflow_testkit::delta::register(&ctx, name, &table_url(output, t)).await;
        }
        segflow_testkit::delta::rows(&segflow_testkit::delta::collect(&ctx, sql).await)
    })
}
