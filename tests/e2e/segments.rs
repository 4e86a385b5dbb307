//! Segmentations on generated data: every customer gets exactly one segment per segmentation,
//! profiles add up, and rules that cannot fill their segment are named. A golden test sends
//! hand-made customers through the default pipeline's rules, one customer per rule.

use std::path::Path;

use crate::{default_pipeline, read_table, run, table_url, text};

const SEGMENTATIONS: [&str; 6] = [
    "rfm",
    "demographic",
    "geographic",
    "psychographic",
    "engagement",
    "clv",
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

/// Hand-made customers, one per rule: the default pipeline's rule segmentations (copied from
/// pipelines/customer_segmentation.yaml as they are) must put each where the README says.
/// Columns: id, r, f, frequency, age, income_band, country, region, top_interest, score,
/// opt_in, clicked, open_rate, opened, sent, then the expected rfm, demographic, geographic,
/// psychographic and engagement segments; then m_score, the CLV predictions p_alive and
/// clv_score (null: no counted order, so no prediction), the expected clv segment, and the
/// social counts social_shares_90d and reviews_365d.
const HAND_MADE: &str = "
  ('h01', 5, 4, 9, 22, 'middle', 'US', 'California', 'sustainability', 5, true, 1, 0.1, 1, 10, 'champions', 'young_adults', 'us_west', 'eco_conscious', 'email_engaged', 4, 0.9, 5, 'high_value', 0, 0),
  ('h02', 3, 5, 12, 30, 'high', 'US', 'New York', 'technology', 4, true, 0, 0.25, 1, 4, 'loyal_customers', 'young_professionals', 'us_east', 'tech_enthusiasts', 'email_engaged', 5, 0.8, 4, 'high_value', 0, 0),
  ('h03', 5, 1, 1, 30, 'middle', 'US', 'Texas', 'fitness', 4, true, 0, 0.2, 2, 10, 'new_customers', 'early_career', 'us_central', 'active_lifestyle', 'email_casual', 1, 1.0, 3, 'growing', 0, 0),
  ('h04', 4, 1, 1, 45, 'upper_middle', 'CA', 'Ontario', 'luxury', 5, true, 0, 0.0, 0, 3, 'promising', 'affluent_midlife', 'canada', 'luxury_seekers', 'email_lapsed', 2, 0.7, 2, 'low_value', 0, 0),
  ('h05', 4, 2, 2, 45, 'low', 'IE', 'Dublin', 'family', 4, true, 0, null, 0, 0, 'potential_loyalists', 'midlife', 'uk_ireland', 'family_focused', 'not_emailed', 2, 0.5, 3, 'growing', 0, 0),
  ('h06', 3, 3, 3, 60, 'high', 'AT', 'Wien', 'travel', 4, false, 2, 0.5, 2, 4, 'need_attention', 'affluent_seniors', 'dach', 'travelers', 'not_opted_in', 4, 0.45, 2, 'at_risk_high_value', 0, 0),
  ('h07', 3, 1, 1, 70, null, 'FR', 'Paris', 'value', 5, null, 0, null, 0, 0, 'about_to_sleep', 'seniors', 'western_europe', 'value_seekers', 'not_opted_in', 1, 0.2, 1, 'likely_churned', 0, 0),
  ('h08', 1, 5, 20, null, 'high', 'ES', 'Madrid', 'travel', 3, true, 0, 0.0, 0, 1, 'cant_lose_them', 'age_unknown', 'southern_europe', 'undeclared', 'email_lapsed', 5, 0.1, 1, 'at_risk_high_value', 0, 0),
  ('h09', 2, 3, 3, 24, 'high', 'SE', 'Stockholm', null, null, true, 1, 1.0, 1, 1, 'at_risk', 'young_adults', 'nordics', 'undeclared', 'email_engaged', 3, 0.3, 2, 'likely_churned', 0, 0),
  ('h10', 2, 2, 2, 35, 'middle', 'BR', 'Sao Paulo', 'sustainability', 3, true, 0, null, 0, 0, 'hibernating', 'midlife', 'latin_america', 'undeclared', 'not_emailed', 2, 0.55, 1, 'low_value', 0, 0),
  ('h11', null, null, null, 55, 'upper_middle', 'JP', 'Tokyo', 'technology', 5, true, 0, null, 0, 0, 'no_purchase', 'affluent_seniors', 'asia_pacific', 'tech_enthusiasts', 'not_emailed', null, null, null, 'no_purchase', 0, 0),
  ('h12', 1, 1, 1, 34, 'upper_middle', 'ZA', 'Gauteng', 'luxury', 4, true, 0, 0.1, 1, 10, 'hibernating', 'young_professionals', 'rest_of_world', 'luxury_seekers', 'email_casual', 1, 0.49, 5, 'likely_churned', 0, 0),
  ('h13', 5, 4, 9, 40, 'middle', 'US', 'Texas', null, null, false, 0, null, 0, 0, 'champions', 'midlife', 'us_central', 'undeclared', 'social_advocates', 4, 0.9, 5, 'high_value', 0, 2),
  ('h14', 2, 2, 2, 40, 'middle', 'US', 'Texas', null, null, true, 1, 0.5, 1, 2, 'hibernating', 'midlife', 'us_central', 'undeclared', 'social_advocates', 2, 0.6, 1, 'low_value', 1, 0)";

#[test]
fn default_rules_put_hand_made_customers_where_the_readme_says() {
    use segflow_core::yaml::{Mapping, Value};

    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("sql");
    std::fs::create_dir_all(&sql).unwrap();
    std::fs::write(
        sql.join("hand_made.sql"),
        format!(
            "select column1 as customer_id, cast(column2 as int) as r_score, \
             cast(column3 as int) as f_score, cast(column4 as int) as frequency, \
             cast(column5 as int) as age, column6 as income_band, column7 as country, \
             column8 as region, column9 as top_interest, cast(column10 as int) as top_interest_score, \
             cast(column11 as boolean) as email_opt_in, cast(column12 as int) as emails_clicked_90d, \
             cast(column13 as double) as email_open_rate_90d, cast(column14 as int) as emails_opened_90d, \
             cast(column15 as int) as emails_sent_90d, column16 as expected_rfm, \
             column17 as expected_demographic, column18 as expected_geographic, \
             column19 as expected_psychographic, column20 as expected_engagement, \
             cast(column21 as int) as m_score, column24 as expected_clv, \
             cast(column25 as int) as social_shares_90d, cast(column26 as int) as reviews_365d \
             from (values {HAND_MADE}) as t"
        ),
    )
    .unwrap();
    // The predictions are a table of their own, of the customers with a counted order, as the
    // clv stage makes them: the rule stage joins them to the features.
    std::fs::write(
        sql.join("clv_values.sql"),
        format!(
            "select column1 as customer_id, cast(column22 as double) as p_alive, \
             cast(column23 as int) as clv_score \
             from (values {HAND_MADE}) as t where column22 is not null"
        ),
    )
    .unwrap();

    // The default pipeline's rule stages, verbatim, after a stage that makes the rows.
    let default = std::fs::read_to_string(crate::default_pipeline()).unwrap();
    let default: Value = serde_yaml_value(&default);
    let mut stages = vec![
        serde_yaml_value(
            "{ id: rows, kind: features.sql, sql: hand_made.sql, output: customer_features }",
        ),
        serde_yaml_value(
            "{ id: clv, kind: features.sql, sql: clv_values.sql, output: clv_values }",
        ),
    ];
    let rules: Vec<Value> = default["stages"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "segment.rules")
        .cloned()
        .collect();
    assert_eq!(rules.len(), 1, "one stage for the rule segmentations");
    assert_eq!(
        rules[0]["segmentations"].as_sequence().map(Vec::len),
        Some(6),
        "the six rule segmentations"
    );
    let last = rules.last().unwrap()["output"]
        .as_str()
        .unwrap()
        .to_string();
    stages.extend(rules);
    stages.push(serde_yaml_value(&format!(
        "{{ id: publish, kind: export.delta, tables: {{ {last}: \"${{output}}/segmented\" }} }}"
    )));
    let mut pipeline = Mapping::new();
    pipeline.insert("name".into(), "hand_made".into());
    pipeline.insert(
        "vars".into(),
        serde_yaml_value("{ output: { default: \"\" }, input: { default: \"\" } }"),
    );
    pipeline.insert("runs".into(), "${output}/_runs".into());
    pipeline.insert("stages".into(), Value::Sequence(stages));
    let file = dir.path().join("hand_made.yaml");
    std::fs::write(&file, segflow_core::yaml::to_string(&pipeline).unwrap()).unwrap();

    let output = dir.path().join("out");
    let out = run(&file, dir.path(), &output, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let mut checked = 0;
    for s in SEGMENTATIONS {
        let wrong = query(
            &output,
            "segmented",
            &format!(
                "select customer_id, {s}_segment, expected_{s} from t \
                 where {s}_segment is distinct from expected_{s} order by 1"
            ),
        );
        assert!(wrong.is_empty(), "{s}: got, expected: {wrong:?}");
        checked += 1;
    }
    assert_eq!(checked, 6);
    // Every rule and default of every segmentation is reached by some hand-made row.
    for s in SEGMENTATIONS {
        let reached = query(
            &output,
            "segmented",
            &format!("select count(distinct {s}_segment) from t"),
        );
        let stage = default["stages"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|st| st["segmentations"].as_sequence())
            .flatten()
            .find(|seg| seg["segmentation"] == s)
            .unwrap();
        let mut names: Vec<&str> = stage["rules"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|r| r["segment"].as_str().unwrap())
            .collect();
        let default = &stage["default"];
        names.push(default.as_str().or(default["segment"].as_str()).unwrap());
        names.sort();
        names.dedup();
        assert_eq!(reached, [[names.len().to_string()]], "{s}: {names:?}");
    }
}

fn serde_yaml_value(text: &str) -> segflow_core::yaml::Value {
    segflow_core::yaml::from_str(Path::new("<test>"), text).unwrap()
}
