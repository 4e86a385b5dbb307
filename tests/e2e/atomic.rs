//! Publishing is atomic: a failed or killed run leaves the previous outputs as they were; a
//! table is written once, by the stage that makes it, and publishing commits those files.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use crate::{default_pipeline, generate, read_table, run, run_with, segflow, text};

const COLS: &str =
    "customer_id, as_of, recency_days, frequency, monetary, r_score, f_score, m_score, rfm_segment";

#[test]
fn failed_run_leaves_previous_version_and_a_failed_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate(&input, 200, 21);
    let ok = run(&default_pipeline(), &input, &output, &[]);
    assert!(ok.status.success(), "{}", text(&ok));
    let before = read_table(&output, "customer_segments", COLS);

    // Fail the run after the first stages: every score 5 becomes 9, out of range on far more
    // than max_bad_fraction (5%) of the survey rows, which fails the survey ingest stage.
    let surveys = std::fs::read_to_string(input.join("survey_responses.csv")).unwrap();
    let broken = surveys.replace(",5\n", ",9\n");
    assert_ne!(broken, surveys);
    std::fs::write(input.join("survey_responses.csv"), broken).unwrap();
    let failed = run(&default_pipeline(), &input, &output, &["as_of=2025-01-01"]);
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed));
    assert!(
        String::from_utf8_lossy(&failed.stderr)
            .contains("over the limit (max_bad_fraction 0.05): out_of_range"),
        "{}",
        text(&failed)
    );
    // The error names the bound that rejected the rows and the contract file it is in.
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("rows have `score` outside its range (min 1, max 5) in the contract")
            && stderr.contains("contracts/survey_responses.yaml: if such values are real"),
        "{}",
        text(&failed)
    );
    assert_eq!(read_table(&output, "customer_segments", COLS), before);

    let manifests: Vec<_> = std::fs::read_dir(output.join("_runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| crate::of_a_run(p))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    let failed_manifest = manifests
        .iter()
        .map(|p| {
            serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(p).unwrap()).unwrap()
        })
        .find(|m| m["status"] == "failed")
        .expect("a manifest for the failed run");
    assert!(
        failed_manifest["error"]
            .as_str()
            .unwrap()
            .contains("out_of_range")
    );
    let statuses: Vec<_> = failed_manifest["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap().to_string())
        .collect();
    // Ingest of survey answers fails; every stage after it is skipped.
    assert_eq!(
        statuses[..4],
        ["succeeded", "succeeded", "succeeded", "failed"]
    );
    assert!(statuses.len() > 4 && statuses[4..].iter().all(|s| s == "skipped"));
    assert_eq!(failed_manifest["published"].as_array().unwrap().len(), 0);
}

#[test]
fn run_killed_while_publishing_leaves_a_complete_readable_version() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate(&input, 20_000, 8);
    let ok = run(&default_pipeline(), &input, &output, &[]);
    assert!(ok.status.success(), "{}", text(&ok));
    let before = read_table(&output, "customer_segments", COLS);
    assert_eq!(before.0, 0);

    // A second run with another as_of, killed (SIGKILL) as soon as it starts publishing.
    let mut child = segflow()
        .args(["run"])
        .arg(default_pipeline())
        .arg("--var")
        .arg(format!("input={}", input.display()))
        .arg("--var")
        .arg(format!("output={}", output.display()))
        .args(["--var", "as_of=2025-06-01"])
        // Killed, the run cannot give its lease back: the next one waits for it to expire.
        .args(["--lease-ttl", "2s"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let publishing = line.contains("publishing customer_segments");
        seen.push(line);
        if publishing {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    assert!(
        seen.iter()
            .any(|l| l.contains("publishing customer_segments")),
        "never reached publishing:\n{}",
        seen.join("\n")
    );

    let after = read_table(&output, "customer_segments", COLS);
    if after.0 == 0 {
        assert_eq!(after, before, "the previous version changed");
    } else {
        // The kill came after the commit: then the new version must be whole.
        assert_eq!(after.0, 1);
        assert_eq!(after.1.len(), before.1.len());
        assert!(
            after.1.iter().all(|r| r[1] == "2025-06-01"),
            "a mixed version is visible"
        );
    }
    // A later run still works on top of whatever the killed one left behind, once the
    // killed run's lease has expired.
    let again = crate::run_with(&default_pipeline(), &input, &output, &["--wait"]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(read_table(&output, "customer_segments", COLS).1, before.1);
}

/// The Add and Remove paths of version `version` of the Delta table in `table`, and the sum of
/// the Adds' `numRecords` statistics.
fn commit_files(table: &Path, version: u64) -> (BTreeSet<String>, BTreeSet<String>, i64) {
    let log = std::fs::read_to_string(table.join(format!("_delta_log/{version:020}.json")))
        .unwrap_or_else(|e| panic!("version {version} of {}: {e}", table.display()));
    let (mut adds, mut removes, mut records) = (BTreeSet::new(), BTreeSet::new(), 0);
    for line in log.lines() {
        let action: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(add) = action.get("add") {
            adds.insert(add["path"].as_str().unwrap().to_string());
            let stats: serde_json::Value =
                serde_json::from_str(add["stats"].as_str().expect("stats on every add")).unwrap();
            records += stats["numRecords"].as_i64().unwrap();
        }
        if let Some(remove) = action.get("remove") {
            removes.insert(remove["path"].as_str().unwrap().to_string());
        }
    }
    (adds, removes, records)
}

/// The Parquet files in a table's directory (unpartitioned: no subdirectories).
fn data_files(table: &Path) -> BTreeSet<String> {
    std::fs::read_dir(table)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".parquet"))
        .collect()
}

#[test]
fn published_tables_are_the_files_their_stages_wrote_and_a_failed_run_commits_none() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate(&input, 300, 12);
    let contracts = segflow_testkit::repo_root().join("pipelines/contracts");
    let pipeline = dir.path().join("gate.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "name: gate\nvars:\n  input: {{ default: \"\" }}\n  output: {{ default: \"\" }}\n  gate: {{ default: \"true\" }}\nruns: ${{output}}/_runs\nsql_dir: {}\nstages:\n  - id: customers\n    kind: ingest.csv\n    path: \"${{input}}/customers.csv\"\n    contract: {}/customers.yaml\n    output: customers\n    staging: \"${{output}}/staging/customers\"\n    checks:\n      - expression_is_true: \"${{gate}}\"\n",
            segflow_testkit::repo_root().join("sql").display(),
            contracts.display()
        ),
    )
    .unwrap();
    let go = |args: &[&str]| run_with(&pipeline, &input, &output, args);
    let staged = output.join("staging/customers");
    let customers = |output: &Path| read_table(output, "staging/customers", "customer_id, city");

    // The stage writes its rows straight into the staging table, and the run's manifest says
    // so; the commit adds exactly those files, each with its row count.
    let first = go(&[]);
    assert!(first.status.success(), "{}", text(&first));
    let manifest = crate::newest_manifest(&output);
    // Resident memory (Linux): the run's peak is at least any stage's.
    let stage_peak = manifest["stages"][0]["peak_rss_bytes"].as_u64().unwrap();
    let run_peak = manifest["peak_rss_bytes"].as_u64().unwrap();
    assert!(
        stage_peak > 1 << 20 && run_peak >= stage_peak,
        "{stage_peak} {run_peak}"
    );
    let path = manifest["stages"][0]["outputs"]["customers"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(path.ends_with("/staging/customers/"), "{path}");
    let (adds, removes, records) = commit_files(&staged, 0);
    assert!(!adds.is_empty() && removes.is_empty());
    assert_eq!(records, 300);
    assert_eq!(data_files(&staged), adds);
    let before = customers(&output);
    assert_eq!((before.0, before.1.len()), (0, 300));

    // A rebuild whose check fails has written its files, but commits none of them: the
    // table stays at version 0 with its rows, and the new files are read by nobody.
    let failed = go(&["--var", "gate=false", "--full-refresh"]);
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed));
    assert_eq!(customers(&output), before);
    let orphans: BTreeSet<String> = data_files(&staged).difference(&adds).cloned().collect();
    assert!(!orphans.is_empty(), "the failed run wrote no file");
    assert!(!staged.join("_delta_log/00000000000000000001.json").exists());

    // The next good rebuild replaces every file of version 0 with its own, in one commit.
    let again = go(&["--full-refresh"]);
    assert!(again.status.success(), "{}", text(&again));
    let (adds1, removes1, records1) = commit_files(&staged, 1);
    assert_eq!(removes1, adds);
    assert_eq!(records1, 300);
    assert!(adds1.is_disjoint(&adds) && adds1.is_disjoint(&orphans));
    let after = customers(&output);
    assert_eq!((after.0, &after.1), (1, &before.1));
}

/// The Parquet files under a partitioned table's directory, as paths relative to it.
fn partitioned_data_files(table: &Path) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    for dir in std::fs::read_dir(table).unwrap().flatten() {
        let name = dir.file_name().to_string_lossy().to_string();
        if !dir.path().is_dir() || name == "_delta_log" {
            continue;
        }
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let file = f.file_name().to_string_lossy().to_string();
            if file.ends_with(".parquet") {
                files.insert(format!("{name}/{file}"));
            }
        }
    }
    files
}

#[test]
fn a_partitioned_staging_table_is_written_once_into_its_partition_directories() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate(&input, 200, 21);
    let contracts = segflow_testkit::repo_root().join("pipelines/contracts");
    let pipeline = dir.path().join("months.yaml");
    // The check reads the run table back: the files the stage wrote, and the partition
    // column from their Add actions.
    std::fs::write(
        &pipeline,
        format!(
            r#"name: months
vars:
  input: {{ default: "" }}
  output: {{ default: "" }}
runs: ${{output}}/_runs
sql_dir: {sql}
stages:
  - {{ id: customers, kind: ingest.csv, path: "${{input}}/customers.csv", contract: {c}/customers.yaml, output: customers, staging: "${{output}}/staging/customers" }}
  - id: orders
    kind: ingest.csv
    path: "${{input}}/orders.csv"
    contract: {c}/orders.yaml
    output: orders
    staging: "${{output}}/staging/orders"
    partition_by: {{ order_month: "to_char(order_ts, '%Y-%m')" }}
    checks:
      - expression_is_true: "order_month = to_char(order_ts, '%Y-%m')"
"#,
            sql = segflow_testkit::repo_root().join("sql").display(),
            c = contracts.display()
        ),
    )
    .unwrap();
    let staged = output.join("staging/orders");
    let orders = |output: &Path| {
        read_table(
            output,
            "staging/orders",
            "order_id, order_month, to_char(order_ts, '%Y-%m')",
        )
    };

    let first = run(&pipeline, &input, &output, &[]);
    assert!(first.status.success(), "{}", text(&first));
    let (adds, removes, records) = commit_files(&staged, 0);
    assert!(removes.is_empty());
    assert!(
        adds.iter().all(|a| a.starts_with("order_month=")),
        "{adds:?}"
    );
    assert_eq!(
        partitioned_data_files(&staged),
        adds,
        "no copy, no other file"
    );
    let (version, rows) = orders(&output);
    assert_eq!((version, rows.len() as i64), (0, records));
    assert!(rows.len() > 100, "{}", rows.len());
    assert!(rows.iter().all(|r| r[1] == r[2]), "{:?}", &rows[..3]);
    // The table says how it is partitioned, as delta-rs's writer would.
    let log = std::fs::read_to_string(staged.join("_delta_log/00000000000000000000.json")).unwrap();
    assert!(
        log.contains(r#""partitionColumns":["order_month"]"#),
        "{log}"
    );

    // A full rebuild replaces every file of version 0, in one commit, with the same rows.
    let again = run(&pipeline, &input, &output, &[]);
    assert!(again.status.success(), "{}", text(&again));
    let rebuilt = run_with(&pipeline, &input, &output, &["--full-refresh"]);
    assert!(rebuilt.status.success(), "{}", text(&rebuilt));
    let latest = (0..5)
        .rev()
        .find(|v| staged.join(format!("_delta_log/{v:020}.json")).exists())
        .unwrap();
    let (adds1, removes1, records1) = commit_files(&staged, latest);
    assert_eq!(removes1, adds);
    assert_eq!(records1, records);
    assert!(adds1.is_disjoint(&adds));
    assert_eq!(orders(&output).1, rows);
}
