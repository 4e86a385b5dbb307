//! Publishing is atomic: a failed or killed run leaves the previous outputs as they were.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::{default_pipeline, generate, read_table, run, segflow, text};

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
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
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
    // A later run still works on top of whatever the killed one left behind.
    let again = run(&default_pipeline(), &input, &output, &[]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(read_table(&output, "customer_segments", COLS).1, before.1);
}
