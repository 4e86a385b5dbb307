//! The scheduler's contract (docs/scheduling.md): exit codes by error class, the JSON log,
//! manifests for every run (interrupted ones too), `segflow runs`, and quiet closed pipes.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{default_pipeline, generate, newest_manifest, run_with, segflow, text};

/// Checks a manifest against docs/manifest.schema.json with Python's `jsonschema` (installed
/// by ci/pyenv.sh).
fn assert_valid_manifest(manifest: &Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifest.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let schema = segflow_testkit::repo_root().join("docs/manifest.schema.json");
    let out = std::process::Command::new(crate::python())
        .args([
            "-c",
            "import json, sys, jsonschema\n\
             schema = json.load(open(sys.argv[1]))\n\
             jsonschema.Draft202012Validator.check_schema(schema)\n\
             jsonschema.Draft202012Validator(schema).validate(json.load(open(sys.argv[2])))",
        ])
        .arg(&schema)
        .arg(&file)
        .output()
        .expect("run python");
    assert!(out.status.success(), "{}\n{manifest:#}", text(&out));
}

/// A text field of every stage in a manifest, in run order.
fn stage_field<'a>(manifest: &'a Value, field: &str) -> Vec<&'a str> {
    manifest["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[field].as_str().unwrap())
        .collect()
}

/// Every stderr line of a JSON-mode command, parsed; a line that is not a JSON object with the
/// schema's keys fails the test.
fn json_lines(stderr: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            for key in ["v", "ts", "level", "run_id", "stage", "event", "fields"] {
                assert!(v.get(key).is_some(), "`{key}` missing: {line}");
            }
            assert_eq!(v["v"], 1, "{line}");
            v
        })
        .collect()
}

#[test]
fn json_log_tells_a_run_from_start_to_finish_and_runs_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate(&input, 200, 7);
    let out = run_with(
        &default_pipeline(),
        &input,
        &output,
        &["--log-format", "json", "--log", "info"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let lines = json_lines(&out.stderr);
    let manifest = newest_manifest(&output);
    assert_valid_manifest(&manifest);
    let run_id = manifest["run_id"].as_str().unwrap();
    // segflow's own events, library logs (`log`) aside.
    let events: Vec<&str> = lines
        .iter()
        .map(|l| l["event"].as_str().unwrap())
        .filter(|e| *e != "log")
        .collect();
    assert_eq!(events.first(), Some(&"run_started"), "{events:?}");
    assert_eq!(events.last(), Some(&"run_finished"), "{events:?}");
    let finished = lines.last().unwrap();
    assert_eq!(finished["fields"]["status"], "succeeded");
    assert_eq!(finished["fields"]["exit_code"], 0);
    // Every stage finished once, inside this run; library events inside a stage carry it.
    let stages: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "stage_finished")
        .map(|l| l["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, stage_field(&manifest, "id"));
    for l in &lines {
        assert_eq!(l["run_id"], run_id, "{l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "log" && l["stage"] == "rfm" && l["level"] == "info"),
        "no library event inside a stage"
    );
    assert!(lines.iter().any(|l| l["event"] == "published"));

    // `segflow runs` lists the run from its manifest, as text and as JSON.
    let listed = segflow()
        .args(["runs", output.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", text(&listed));
    let runs: Vec<Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(runs.len(), 1, "{}", text(&listed));
    assert_eq!(runs[0]["run_id"], run_id);
    assert_eq!(runs[0]["status"], "succeeded");
    let table = segflow()
        .args(["runs", output.to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(run_id) && table.contains("succeeded"),
        "{table}"
    );
}

#[test]
fn bad_data_exits_3_and_says_so_in_the_log_and_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate(&input, 100, 3);
    // Every survey score 5 becomes 9: out of range on far more than max_bad_fraction.
    let surveys = std::fs::read_to_string(input.join("survey_responses.csv")).unwrap();
    std::fs::write(
        input.join("survey_responses.csv"),
        surveys.replace(",5\n", ",9\n"),
    )
    .unwrap();
    let out = run_with(
        &default_pipeline(),
        &input,
        &output,
        &["--log-format", "json"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let lines = json_lines(&out.stderr);
    let finished = lines.last().unwrap();
    assert_eq!(finished["event"], "run_finished", "{finished}");
    assert_eq!(finished["level"], "error");
    assert_eq!(finished["fields"]["error_class"], "data");
    assert_eq!(finished["fields"]["exit_code"], 3);
    let manifest = newest_manifest(&output);
    assert_valid_manifest(&manifest);
    assert_eq!(manifest["status"], "failed");
    assert_eq!(manifest["error_class"], "data");
    let failed: Vec<&Value> = manifest["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["error_class"], "data");
}

#[test]
fn a_bad_datafusion_variable_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = segflow()
        .env("DATAFUSION_EXECUTION_BATCH_SIZE", "lots")
        .arg("run")
        .arg(default_pipeline())
        .args(["--var", &format!("output={}", dir.path().display())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("DATAFUSION_"), "{e}");
    assert!(!e.contains("bug in segflow"), "{e}");
}

#[test]
fn sigterm_stops_the_run_writes_its_manifest_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate(&input, 2000, 5);
    // Once the first stage has finished, ask the run to stop.
    let (mut child, mut stderr) = start_run(&input, &output, &[]);
    let pid = child.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    let lines = json_lines(rest.as_bytes());
    assert!(lines.iter().any(|l| l["event"] == "interrupted"), "{rest}");
    let manifest = newest_manifest(&output);
    assert_valid_manifest(&manifest);
    assert_eq!(manifest["status"], "interrupted", "{manifest}");
    assert_eq!(manifest["error_class"], "interrupted");
    let statuses = stage_field(&manifest, "status");
    assert_eq!(
        statuses.iter().filter(|s| **s == "interrupted").count(),
        1,
        "{statuses:?}"
    );
    // Nothing was published; the run's folder stays for a resume, which reuses the stage
    // that finished, publishes, and deletes the folder.
    assert!(!output.join("customer_segments").exists());
    let run_id = manifest["run_id"].as_str().unwrap();
    assert!(output.join("_runs").join(run_id).join("run.json").exists());
    let resumed = run_with(&default_pipeline(), &input, &output, &["--resume", run_id]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    let manifest = manifest_of(&output, run_id);
    assert_valid_manifest(&manifest);
    assert_eq!(manifest["attempt"], 2);
    assert_eq!(manifest["previous_attempts"][0]["status"], "interrupted");
    // The stage that had finished when the signal came (and any the run finished while it
    // stopped).
    let reused = stages_where(&manifest, "reused");
    assert_eq!(reused.first(), Some(&"ingest_customers"), "{reused:?}");
    assert!(output.join("customer_segments").exists());
    assert!(!output.join("_runs").join(run_id).exists());
}

#[test]
fn a_closed_pipe_ends_plan_quietly() {
    let mut child = segflow()
        .arg("plan")
        .arg(default_pipeline())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before segflow writes (as `| head -0` would).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!e.contains("panicked"), "{e}");
}

/// Starts the default pipeline in JSON-log mode and returns once its first stage finished.
fn start_run(
    input: &std::path::Path,
    output: &std::path::Path,
    extra: &[&str],
) -> (std::process::Child, BufReader<std::process::ChildStderr>) {
    let mut child = segflow()
        .arg("run")
        .arg(default_pipeline())
        .args(["--var", &format!("input={}", input.display())])
        .args(["--var", &format!("output={}", output.display())])
        .args(["--log-format", "json"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let started = Instant::now();
    let mut line = String::new();
    while !line.contains("\"stage_finished\"") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the run ended early"
        );
        assert!(started.elapsed() < Duration::from_secs(120));
    }
    (child, stderr)
}

#[test]
fn one_run_at_a_time_and_a_pointer_to_the_last_published_run() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate(&input, 2000, 11);
    // Run A holds the output: run B exits 4 at once and names A.
    let (mut a, mut a_err) = start_run(&input, &output, &[]);
    let b = run_with(&default_pipeline(), &input, &output, &[]);
    assert_eq!(b.status.code(), Some(4), "{}", text(&b));
    let b_err = String::from_utf8_lossy(&b.stderr);
    assert!(b_err.contains("is in use by run 20"), "{b_err}");
    assert!(b_err.contains("--wait"), "{b_err}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut a_err, &mut rest).unwrap();
    assert!(a.wait().unwrap().success(), "{rest}");

    // A's pointer names A's run and the versions its manifest lists.
    let a_manifest = newest_manifest(&output);
    let pointer: Value = serde_json::from_str(
        &std::fs::read_to_string(output.join("_runs/_published.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pointer["run_id"], a_manifest["run_id"]);
    for p in a_manifest["published"].as_array().unwrap() {
        let t = &pointer["tables"][p["table"].as_str().unwrap()];
        assert_eq!(t["version"], p["version"], "{pointer:#}");
        assert_eq!(t["run_id"], a_manifest["run_id"]);
    }

    // Run C is killed without a chance to give the lease back: run D waits for the lease to
    // expire (--wait), then runs, and the pointer moves to D.
    let (mut c, _c_err) = start_run(&input, &output, &["--lease-ttl", "3s"]);
    c.kill().unwrap();
    c.wait().unwrap();
    let refused = run_with(&default_pipeline(), &input, &output, &[]);
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused));
    let d = run_with(&default_pipeline(), &input, &output, &["--wait"]);
    assert!(d.status.success(), "{}", text(&d));
    let d_manifest = newest_manifest(&output);
    let pointer: Value = serde_json::from_str(
        &std::fs::read_to_string(output.join("_runs/_published.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pointer["run_id"], d_manifest["run_id"]);
    assert_ne!(pointer["run_id"], a_manifest["run_id"]);
}

#[test]
fn vacuum_removes_what_runs_left_and_keeps_the_published_run() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate(&input, 200, 13);
    for as_of in ["2025-03-01", "2025-06-01"] {
        let out = crate::run(
            &default_pipeline(),
            &input,
            &output,
            &[&format!("as_of={as_of}")],
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    let cols = "customer_id, rfm_segment";
    let before = crate::read_table(&output, "customer_segments", cols);
    // What a killed run leaves: a data file never committed, and its work folder.
    let segments = output.join("customer_segments");
    let a_file = std::fs::read_dir(&segments)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "parquet"))
        .unwrap();
    let stray = segments.join("part-00000-0000000000000000.parquet");
    std::fs::copy(&a_file, &stray).unwrap();
    let old_work = output.join("_runs/20200101T000000Z-deadbeef/work/t");
    std::fs::create_dir_all(&old_work).unwrap();
    std::fs::write(old_work.join("part-0.parquet"), b"x").unwrap();
    let vacuum = |extra: &[&str]| {
        segflow()
            .args(["vacuum", output.to_str().unwrap(), "--older-than", "0s"])
            .args(extra)
            .output()
            .unwrap()
    };
    // A dry run lists, and deletes nothing.
    let dry = vacuum(&[]);
    assert!(dry.status.success(), "{}", text(&dry));
    let listed = String::from_utf8_lossy(&dry.stdout).to_string();
    assert!(listed.contains("dry run"), "{listed}");
    assert!(listed.contains("20200101T000000Z-deadbeef"), "{listed}");
    assert!(stray.exists() && old_work.exists());
    // Deleting: the stray file, the replaced version's files and the old work folder go; the
    // published run reads as before, and the manifests stay.
    let done = vacuum(&["--yes"]);
    assert!(done.status.success(), "{}", text(&done));
    assert!(!stray.exists(), "{}", text(&done));
    assert!(!output.join("_runs/20200101T000000Z-deadbeef").exists());
    assert_eq!(
        crate::read_table(&output, "customer_segments", cols).1,
        before.1
    );
    let manifests = std::fs::read_dir(output.join("_runs"))
        .unwrap()
        .flatten()
        .filter(|e| crate::of_a_run(&e.path()) && e.path().extension().is_some_and(|x| x == "json"))
        .count();
    assert_eq!(manifests, 2);
    // The next run works on the vacuumed output.
    let again = crate::run(&default_pipeline(), &input, &output, &["as_of=2025-06-01"]);
    assert!(again.status.success(), "{}", text(&again));
}

/// The manifest of run `run_id` under `output`.
fn manifest_of(output: &std::path::Path, run_id: &str) -> Value {
    let file = output.join("_runs").join(format!("{run_id}.json"));
    serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap()
}

/// The ids of a manifest's stages that have `field` true.
fn stages_where<'a>(manifest: &'a Value, field: &str) -> Vec<&'a str> {
    manifest["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[field] == true)
        .map(|s| s["id"].as_str().unwrap())
        .collect()
}

#[test]
fn a_failed_run_resumes_reusing_unchanged_stages_and_publishes_once() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate(&input, 200, 5);
    let surveys_file = input.join("survey_responses.csv");
    let good_surveys = std::fs::read_to_string(&surveys_file).unwrap();
    // A fresh run on a copy of the good input: what the resumed run must publish.
    let reference = dir.path().join("reference");
    let fresh = run_with(&default_pipeline(), &input, &reference, &[]);
    assert!(fresh.status.success(), "{}", text(&fresh));

    // The survey export arrives broken: the survey ingest fails its contract (exit 3) after
    // the three ingests before it passed.
    std::fs::write(&surveys_file, good_surveys.replace(",5\n", ",9\n")).unwrap();
    let failed = run_with(&default_pipeline(), &input, &output, &[]);
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed));
    let first = newest_manifest(&output);
    let run_id = first["run_id"].as_str().unwrap().to_string();
    assert_eq!(first["attempt"], 1);
    // Its folder stays, with a checkpoint per stage that passed.
    let run_dir = output.join("_runs").join(&run_id);
    for stage in ["ingest_customers", "ingest_orders", "ingest_events"] {
        assert!(
            run_dir.join(format!("stages/{stage}.json")).exists(),
            "{stage}"
        );
    }

    // Resumed on the same broken input: the passed stages are reused, the ingest fails again.
    let again = run_with(&default_pipeline(), &input, &output, &["--resume", &run_id]);
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));
    let second = manifest_of(&output, &run_id);
    assert_valid_manifest(&second);
    assert_eq!(second["attempt"], 2);
    assert_eq!(
        stages_where(&second, "reused"),
        ["ingest_customers", "ingest_orders", "ingest_events"]
    );

    // The export is fixed: the third attempt reruns the survey ingest (its input changed) and
    // everything after it, publishes, and leaves no folder behind.
    std::fs::write(&surveys_file, &good_surveys).unwrap();
    let third = run_with(&default_pipeline(), &input, &output, &["--resume", &run_id]);
    assert!(third.status.success(), "{}", text(&third));
    let manifest = manifest_of(&output, &run_id);
    assert_valid_manifest(&manifest);
    assert_eq!(manifest["status"], "succeeded");
    assert_eq!(manifest["attempt"], 3);
    let previous: Vec<&str> = manifest["previous_attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(previous, ["failed", "failed"]);
    assert_eq!(
        stages_where(&manifest, "reused"),
        ["ingest_customers", "ingest_orders", "ingest_events"]
    );
    let ran = stage_field(&manifest, "status");
    assert!(ran.iter().all(|s| *s == "succeeded"), "{ran:?}");
    assert!(!run_dir.exists(), "the succeeded run's folder is deleted");
    let pointer: Value = serde_json::from_str(
        &std::fs::read_to_string(output.join("_runs/_published.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pointer["run_id"], run_id.as_str());
    // Exactly what a run without the failure publishes, each table in one commit.
    for (table, cols) in [
        (
            "customer_segments",
            "customer_id, rfm_segment, cluster_label",
        ),
        ("customer_features", "*"),
        // Written into its Delta table by the first attempt, committed by the third.
        ("staging/orders", "count(*)"),
        ("quarantine", "table_name, source_file, line_number, reason"),
    ] {
        let got = crate::read_table(&output, table, cols);
        let want = crate::read_table(&reference, table, cols);
        assert_eq!(got.1, want.1, "{table}");
        assert_eq!(got.0, 0, "{table}: one commit, version 0");
    }

    // A succeeded run, or one that never was, cannot be resumed: exit 2, nothing run.
    let done = run_with(&default_pipeline(), &input, &output, &["--resume", &run_id]);
    assert_eq!(done.status.code(), Some(2), "{}", text(&done));
    assert!(text(&done).contains("does not exist"), "{}", text(&done));
    let unknown = run_with(
        &default_pipeline(),
        &input,
        &output,
        &["--resume", "20200101T000000Z-00000000"],
    );
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
}
