//! `segflow backfill` over 12 monthly as_of dates: 12 history partitions, migrations and the
//! change feed of every period equal a join of consecutive snapshots, and a rerun changes
//! nothing.

use std::path::Path;

use crate::{table_url, text};

/// Rows of `sql` over the published tables named in `tables`, sorted (as text) so that two
/// queries compare as sets.
fn query(output: &Path, tables: &[&str], sql: &str) -> Vec<Vec<String>> {
    let mut rows = crate::query_tables(output, tables, sql);
    rows.sort();
    rows
}

fn backfill(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    crate::segflow()
        .arg("backfill")
        .arg(crate::default_pipeline())
        .args([
            "--from",
            "2025-12-01",
            "--to",
            "2026-11-01",
            "--every",
            "month",
        ])
        .arg("--var")
        .arg(format!("input={}", input.display()))
        .arg("--var")
        .arg(format!("output={}", output.display()))
        .args(extra)
        .output()
        .unwrap()
}

/// Each snapshot with the one before it, per customer (rfm only), as migrations and changes
/// would see them.
const PAIRS: &str = "
    with dates as (
        select as_of, lag(as_of) over (order by as_of) as prev
        from (select distinct as_of from segment_history)),
    pairs as (
        select d.prev as from_as_of, d.as_of as to_as_of, c.customer_id,
               p.rfm_segment as from_segment, c.rfm_segment as to_segment
        from dates d
        join segment_history c on c.as_of = d.as_of
        left join segment_history p on p.as_of = d.prev and p.customer_id = c.customer_id)";

#[test]
fn twelve_monthly_periods_then_a_rerun_that_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    crate::generate(&input, 300, 51);
    let output = dir.path().join("out");
    let out = backfill(&input, &output, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("12 run, 0 already published"),
        "{}",
        text(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[12/12] as_of 2026-11-01: published"),
        "{stderr}"
    );

    let partitions = query(
        &output,
        &["segment_history"],
        "select count(distinct as_of), min(as_of), max(as_of) from segment_history",
    );
    assert_eq!(partitions, [["12", "2025-12-01", "2026-11-01"]]);

    let migrations = query(
        &output,
        &["segment_migrations"],
        "select from_as_of, to_as_of, from_segment, to_segment, customers from segment_migrations \
         where segmentation = 'rfm' order by to_as_of, from_segment, to_segment",
    );
    let joined = query(
        &output,
        &["segment_history"],
        &format!(
            "{PAIRS} select from_as_of, to_as_of, coalesce(from_segment, 'new') as f, to_segment, \
             count(*) as n from pairs group by from_as_of, to_as_of, coalesce(from_segment, 'new'), \
             to_segment order by to_as_of, f, to_segment"
        ),
    );
    assert!(migrations.len() > 24, "{migrations:?}");
    assert_eq!(migrations, joined);

    let changes = query(
        &output,
        &["segment_changes"],
        "select to_as_of, customer_id, from_segment, to_segment from segment_changes \
         where segmentation = 'rfm' order by to_as_of, customer_id",
    );
    let differences = query(
        &output,
        &["segment_history"],
        &format!(
            "{PAIRS} select to_as_of, customer_id, coalesce(from_segment, 'new') as f, to_segment \
             from pairs where from_as_of is not null and from_segment is distinct from to_segment \
             order by to_as_of, customer_id"
        ),
    );
    assert!(!changes.is_empty());
    assert_eq!(changes, differences);

    // Rerunning the backfill runs nothing and adds no version anywhere.
    let versions = |output: &Path| -> Vec<u64> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        ["segment_history", "segment_migrations", "customer_segments"]
            .iter()
            .map(|t| {
                rt.block_on(segflow_testkit::delta::query(
                    &table_url(output, t),
                    "select 1",
                ))
                .0
            })
            .collect()
    };
    let before = versions(&output);
    let out = backfill(&input, &output, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 run, 12 already published"),
        "{}",
        text(&out)
    );
    assert_eq!(versions(&output), before);
}

#[test]
fn bad_ranges_and_an_as_of_var_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        crate::segflow()
            .arg("backfill")
            .arg(crate::default_pipeline())
            .args(args)
            .arg("--var")
            .arg(format!("output={}", dir.path().display()))
            .output()
            .unwrap()
    };
    let out = run(&["--from", "2026-02-01", "--to", "2026-01-01"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is after --to"));
    let out = run(&[
        "--from",
        "2026-01-01",
        "--to",
        "2026-02-01",
        "--var",
        "as_of=2026-01-01",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--var as_of is set by the backfill"));
}
