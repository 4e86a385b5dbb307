//! The default pipeline's `customer_segments` against RFM computed here, independently of the
//! pipeline's SQL: straight from the CSV files, in integer cents and day numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::NaiveDate;

use crate::{default_pipeline, generate, read_table, run, text};

#[derive(Debug, PartialEq)]
struct Expected {
    recency_days: i64,
    frequency: i64,
    monetary_cents: i64,
    r: i64,
    f: i64,
    m: i64,
    segment: &'static str,
}

fn cents(s: &str) -> i64 {
    let neg = s.starts_with('-');
    let s = s.trim_start_matches('-');
    let (whole, frac) = s.split_once('.').unwrap_or((s, "0"));
    let frac = format!("{frac:0<2}");
    let v = whole.parse::<i64>().unwrap() * 100 + frac[..2].parse::<i64>().unwrap();
    if neg { -v } else { v }
}

fn segment(r: i64, f: i64) -> &'static str {
    match (r, f) {
        (5, 4..=5) => "champions",
        (3..=4, 4..=5) => "loyal_customers",
        (5, 1) => "new_customers",
        (4, 1) => "promising",
        (4..=5, 2..=3) => "potential_loyalists",
        (3, 3) => "need_attention",
        (3, 1..=2) => "about_to_sleep",
        (1..=2, 5) => "cant_lose_them",
        (1..=2, 3..=4) => "at_risk",
        (1..=2, 1..=2) => "hibernating",
        other => panic!("no segment for {other:?}"),
    }
}

/// RFM per customer from the raw files; `as_of` None means the day after the latest order.
fn reference(
    input: &Path,
    as_of: Option<NaiveDate>,
) -> (NaiveDate, BTreeMap<String, Option<Expected>>) {
    let mut orders = csv::Reader::from_path(input.join("orders.csv")).unwrap();
    let rows: Vec<(String, String, NaiveDate, i64)> = orders
        .records()
        .map(|r| {
            let r = r.unwrap();
            let date = NaiveDate::parse_from_str(&r[2][..10], "%Y-%m-%d").unwrap();
            (r[0].to_string(), r[1].to_string(), date, cents(&r[3]))
        })
        .collect();
    let as_of =
        as_of.unwrap_or_else(|| rows.iter().map(|r| r.2).max().unwrap().succ_opt().unwrap());
    let mut per: BTreeMap<String, (NaiveDate, BTreeSet<String>, i64)> = BTreeMap::new();
    for (order_id, customer, date, amount) in rows {
        if date >= as_of {
            continue;
        }
        let e = per.entry(customer).or_insert((date, BTreeSet::new(), 0));
        e.0 = e.0.max(date);
        e.1.insert(order_id);
        e.2 += amount;
    }
    let values: Vec<(i64, i64, i64)> = per
        .values()
        .map(|(last, ids, m)| ((as_of - *last).num_days(), ids.len() as i64, *m))
        .collect();
    let n = values.len() as i64;
    // rank() ascending = 1 + number of strictly smaller values; descending likewise.
    let score = |rank: i64| 1 + 5 * (rank - 1) / n;
    let mut out = BTreeMap::new();
    let mut customers = csv::Reader::from_path(input.join("customers.csv")).unwrap();
    for r in customers.records() {
        out.insert(r.unwrap()[0].to_string(), None);
    }
    for (customer, (last, ids, m)) in &per {
        let (rec, freq) = ((as_of - *last).num_days(), ids.len() as i64);
        let r = score(1 + values.iter().filter(|v| v.0 > rec).count() as i64);
        let f = score(1 + values.iter().filter(|v| v.1 < freq).count() as i64);
        let ms = score(1 + values.iter().filter(|v| v.2 < *m).count() as i64);
        out.insert(
            customer.clone(),
            Some(Expected {
                recency_days: rec,
                frequency: freq,
                monetary_cents: *m,
                r,
                f,
                m: ms,
                segment: segment(r, f),
            }),
        );
    }
    (as_of, out)
}

/// Compares the published table with the reference; returns the number of customers checked.
fn compare(input: &Path, output: &Path, as_of: Option<NaiveDate>) -> usize {
    let (as_of, expected) = reference(input, as_of);
    let (_, rows) = read_table(
        output,
        "customer_segments",
        "customer_id, as_of, recency_days, frequency, monetary, r_score, f_score, m_score, rfm_segment",
    );
    assert_eq!(rows.len(), expected.len(), "one row per customer");
    let mut mismatches = Vec::new();
    for row in &rows {
        let want = expected
            .get(&row[0])
            .unwrap_or_else(|| panic!("unknown customer {}", row[0]));
        assert_eq!(row[1], as_of.to_string(), "as_of of {}", row[0]);
        let got = if row[2] == "NULL" {
            assert!(
                row[3..8].iter().all(|v| v == "NULL"),
                "partial nulls: {row:?}"
            );
            assert_eq!(row[8], "no_purchase");
            None
        } else {
            Some(Expected {
                recency_days: row[2].parse().unwrap(),
                frequency: row[3].parse().unwrap(),
                monetary_cents: cents(&row[4]),
                r: row[5].parse().unwrap(),
                f: row[6].parse().unwrap(),
                m: row[7].parse().unwrap(),
                segment: segment(row[5].parse().unwrap(), row[6].parse().unwrap()),
            })
        };
        if let Some(g) = &got {
            assert_eq!(row[8], g.segment, "segment column of {}", row[0]);
        }
        if &got != want {
            mismatches.push(format!("{}: got {got:?}, want {want:?}", row[0]));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches, e.g.:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );
    rows.len()
}

#[test]
fn default_pipeline_matches_an_independent_rfm_computation() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate(&input, 1500, 11);
    let out = run(&default_pipeline(), &input, &output, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let checked = compare(&input, &output, None);
    assert_eq!(checked, 1500);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rfm segments (1,500 customers):"),
        "{stdout}"
    );
    assert!(stdout.contains("customer_segments"), "{stdout}");

    // An explicit as_of cuts later orders: more no_purchase customers, other scores.
    let out = run(&default_pipeline(), &input, &output, &["as_of=2024-06-01"]);
    assert!(out.status.success(), "{}", text(&out));
    compare(
        &input,
        &output,
        Some(NaiveDate::from_ymd_opt(2024, 6, 1).unwrap()),
    );
}

#[test]
fn reruns_are_idempotent_and_add_one_version_each() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate(&input, 300, 5);
    let cols = "customer_id, as_of, recency_days, frequency, monetary, r_score, f_score, m_score, rfm_segment";
    let first = run(&default_pipeline(), &input, &output, &[]);
    assert!(first.status.success(), "{}", text(&first));
    let (v0, rows0) = read_table(&output, "customer_segments", cols);
    let second = run(&default_pipeline(), &input, &output, &[]);
    assert!(second.status.success(), "{}", text(&second));
    let (v1, rows1) = read_table(&output, "customer_segments", cols);
    assert_eq!((v0, v1), (0, 1));
    assert_eq!(rows0, rows1);
    let (_, orders) = read_table(&output, "staging/orders", "count(*)");
    let raw_orders = std::fs::read_to_string(input.join("orders.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    assert_eq!(
        orders[0][0],
        raw_orders.to_string(),
        "staging keeps every order once, after two runs"
    );

    // Each run leaves a manifest; its work tables are gone.
    let runs: Vec<_> = std::fs::read_dir(output.join("_runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| crate::of_a_run(p))
        .collect();
    let manifests: Vec<_> = runs
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(manifests.len(), 2, "{runs:?}");
    assert_eq!(runs.len(), 2, "work directories left behind: {runs:?}");
    let mut ms: Vec<serde_json::Value> = manifests
        .iter()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect();
    ms.sort_by_key(|m| m["started_at"].as_str().unwrap().to_string());
    let (m, rerun) = (&ms[0], &ms[1]);
    assert_eq!(m["status"], "succeeded");
    // The rerun found every input file loaded already: it read nothing and added nothing.
    assert_eq!(rerun["status"], "succeeded");
    let rerun_ingest = rerun["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "ingest_orders")
        .unwrap();
    assert_eq!(rerun_ingest["metrics"]["orders_files_read"], 0);
    assert_eq!(rerun_ingest["metrics"]["orders_rows_read"], 0);
    assert_eq!(rerun_ingest["rows_out"], raw_orders as u64);
    assert_eq!(m["pipeline"], "customer_segmentation");
    let stages = m["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 26);
    let ingest = stages.iter().find(|s| s["id"] == "ingest_orders").unwrap();
    assert_eq!(ingest["rows_out"], raw_orders as u64);
    assert!(ingest["duration_ms"].is_u64());
    assert_eq!(m["published"].as_array().unwrap().len(), 17);
    assert_eq!(ingest["metrics"]["orders_rows_read"], raw_orders as u64);
    assert_eq!(ingest["metrics"]["orders_rows_quarantined"], 0);
}

#[test]
fn shipped_sample_runs_with_no_vars() {
    // README command 1, minus the fixed output location: the sample in tests/data/sample.
    let dir = tempfile::tempdir().unwrap();
    let out = crate::segflow()
        .args(["run", "pipelines/customer_segmentation.yaml", "--var"])
        .arg(format!("output={}", dir.path().display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let sample = segflow_testkit::repo_root().join("tests/data/sample");
    compare(&sample, dir.path(), None);
}
