//! The HTML report: written by the default pipeline after it publishes, rendered again by
//! `segflow report`, and opened in a real browser (headless Chromium, from file://, network
//! off) by tests/report/browser.py, which checks what a reader sees against the tables.

use std::path::PathBuf;
use std::process::Command;

use crate::{default_pipeline, generate, python, run, segflow, text};

/// Debian's Chromium, as ci/browser.sh installs it, or `SEGFLOW_CHROMIUM`.
fn chromium() -> PathBuf {
    std::env::var_os("SEGFLOW_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            let p = PathBuf::from("/usr/bin/chromium");
            p.exists().then_some(p)
        })
        .expect("the report test needs Chromium: run ci/browser.sh (ci/test.sh does), or set SEGFLOW_CHROMIUM")
}

#[test]
fn the_report_opens_offline_in_a_browser_with_the_tables_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    generate(&input, 3_000, 20);
    let output = dir.path().join("out");
    // Two snapshots, so that migrations and the history have something to show.
    for as_of in ["as_of=2026-08-01", "as_of=2026-10-01"] {
        let out = run(&default_pipeline(), &input, &output, &[as_of]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let report = output.join("report/index.html");
    let html = std::fs::read_to_string(&report).expect("the run wrote its report");
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..100]);
    assert!(html.contains("win-back: a personal offer on their top category"));
    assert!(html.contains("social_advocates"));

    // `segflow report` renders the same page from the published run, without a run.
    let again = dir.path().join("again.html");
    let report_again = || {
        segflow()
            .arg("report")
            .arg(default_pipeline())
            .arg("--var")
            .arg(format!("output={}", output.display()))
            .arg("--out")
            .arg(&again)
            .output()
            .unwrap()
    };
    let out = report_again();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&again).unwrap(), html);

    let shot = dir.path().join("report.png");
    let out = Command::new(python())
        .arg(segflow_testkit::repo_root().join("tests/report/browser.py"))
        .arg("--chromium")
        .arg(chromium())
        .arg("--report")
        .arg(&report)
        .arg("--runs")
        .arg(output.join("_runs"))
        .arg("--screenshot")
        .arg(&shot)
        .output()
        .unwrap();
    assert!(out.status.success(), "browser check failed: {}", text(&out));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    // An output without a publish pointer (published before pointers existed): each table at
    // its latest version, and the page says the run is not known.
    std::fs::remove_file(output.join("_runs/_published.json")).unwrap();
    let out = report_again();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("tables at their latest versions"),
        "{}",
        text(&out)
    );
    let latest = std::fs::read_to_string(&again).unwrap();
    assert!(latest.contains("not recorded: tables at their latest versions"));
    // The same tables, so the same segments.
    assert!(latest.contains("win-back: a personal offer on their top category"));
}

#[test]
fn report_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing published: the run failed or never ran (exit 1), which the message says.
    let out = segflow()
        .arg("report")
        .arg(default_pipeline())
        .arg("--var")
        .arg(format!("output={}", dir.path().join("none").display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("nothing is published there yet"),
        "{}",
        text(&out)
    );
}
