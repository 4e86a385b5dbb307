//! Segmentations on generated data: every customer gets exactly one segment per segmentation,
//! profiles add up, and rules that cannot fill their segment are named.

use std::path::Path;

use crate::{default_pipeline, read_table, run, table_url, text};

const SEGMENTATIONS: [&str; 5] = [
    "rfm",
    "demographic",
    "geographic",
    "psychographic",
    "engagement",
];

fn query(output: &Path, table: &str, sql: &str) -> Vec<Vec<String>> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_, batches) = rt.block_on(segflow_testkit::delta::query(
        &table_url(output, table),
        sql,
    ));
    segflow_testkit::delta::rows(&batches)
}

#[test]
fn every_customer_has_one_segment_per_segmentation_and_profiles_add_up() {
    // Several generated worlds (one with corrupted rows, so some customers are quarantined).
    for (seed, customers, dirty) in [(21, 150, None), (22, 400, Some("0.01")), (23, 250, None)] {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        let mut generate = crate::segflow();
        generate.args(["generate", "--customers", &customers.to_string()]);
        generate.args(["--seed", &seed.to_string()]);
        if let Some(f) = dirty {
            generate.args(["--dirty", f]);
        }
        let out = generate.arg("--out").arg(&input).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let output = dir.path().join("out");
        let out = run(&default_pipeline(), &input, &output, &[]);
        assert!(out.status.success(), "seed {seed}: {}", text(&out));

        let (_, staged) = read_table(&output, "staging/customers", "count(*)");
        let accepted: u64 = staged[0][0].parse().unwrap();
        let mut columns = vec!["count(*)".to_string(), "count(distinct customer_id)".into()];
        columns.extend(SEGMENTATIONS.iter().map(|s| format!("count({s}_segment)")));
        let (_, counts) = read_table(&output, "customer_segments", &columns.join(", "));
        assert!(
            counts[0].iter().all(|n| n == &accepted.to_string()),
            "seed {seed}: one row and one segment per segmentation for each of {accepted} customers: {counts:?}"
        );
        let (_, features) = read_table(&output, "customer_features", "count(*), sum(monetary)");
        assert_eq!(features[0][0], accepted.to_string());

        let sums = query(
            &output,
            "segment_profiles",
            "select segmentation, sum(customers), round(sum(customer_share), 9), sum(revenue) \
             from t group by segmentation order by segmentation",
        );
        let mut expected_names: Vec<&str> = SEGMENTATIONS.to_vec();
        expected_names.push("cluster");
        expected_names.sort();
        assert_eq!(
            sums.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
            expected_names
        );
        for row in &sums {
            assert_eq!(row[1], accepted.to_string(), "seed {seed}: {row:?}");
            assert_eq!(row[2], "1.0", "seed {seed}: {row:?}");
            assert_eq!(row[3], features[0][1], "seed {seed}: revenue {row:?}");
        }
        // The profiles list exactly the segments customers are in, with their sizes.
        let columns = SEGMENTATIONS
            .iter()
            .map(|s| (*s, format!("{s}_segment")))
            .chain([(
                "cluster",
                "coalesce(cluster_label, 'unclustered')".to_string(),
            )]);
        for (s, column) in columns {
            let from_customers = query(
                &output,
                "customer_segments",
                &format!("select {column}, count(*) from t group by {column} order by 1"),
            );
            let from_profiles = query(
                &output,
                "segment_profiles",
                &format!(
                    "select segment, customers from t where segmentation = '{s}' order by segment"
                ),
            );
            assert_eq!(from_customers, from_profiles, "seed {seed}, {s}");
        }
    }
}

#[test]
fn rules_that_leave_their_segment_empty_are_named_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = crate::write_pipeline(
        dir.path(),
        "tiers",
        r#"  - { id: customers, kind: ingest.csv, path: "${input}/customers.csv", contract: {contracts}/customers.yaml, output: customers }
  - id: tiers
    kind: segment.rules
    inputs: [customers]
    output: tiers
    segmentation: income
    rules:
      - { segment: any_income, when: "annual_income >= 0" }
      - { segment: rich, when: "annual_income > 100000" }
      - { segment: impossible, when: "annual_income < 0" }
    default: unknown
"#,
    );
    let input = segflow_testkit::repo_root().join("tests/data/sample");
    let out = run(&pipeline, &input, &dir.path().join("out"), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("segmentation `income`: segment `rich` is empty: all ")
            && stderr.contains(
                " rows its rule 2 (`annual_income > 100000`) matches are taken by earlier rules"
            ),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains(
            "segmentation `income`: segment `impossible` is empty: its rule 3 (`annual_income < 0`) matches no row"
        ),
        "{}",
        text(&out)
    );
    assert!(!stderr.contains("segment `unknown` is empty"), "{stderr}");
}
