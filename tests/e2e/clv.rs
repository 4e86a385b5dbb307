//! `features.clv` end to end: a pipeline of ingest, the CLV summary and fit, and publish, on
//! generated data (the models' numbers against published values are unit tests in
//! crates/features/src/clv).

use crate::{generate, query_tables, run, text};

#[test]
fn clv_stage_fits_and_publishes_values_and_models() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    generate(&input, 1500, 11);
    let pipeline = crate::write_pipeline(
        dir.path(),
        "clv",
        r#"  - { id: customers, kind: ingest.csv, path: "${input}/customers.csv", contract: {contracts}/customers.yaml, output: customers }
  - { id: orders, kind: ingest.csv, path: "${input}/orders.csv", contract: {contracts}/orders.yaml, output: orders }
  - { id: as_of, kind: features.sql, sql: features/run_as_of.sql, params: { as_of: "" }, output: run_as_of }
  - id: clv
    kind: features.clv
    summary: features/clv_summary.sql
    params: { as_of: { table: run_as_of } }
    horizon_months: "6"
    output: customer_clv
    model_output: clv_model
    checks:
      - unique: [customer_id]
      - expression_is_true: "p_alive between 0 and 1 and expected_purchases >= 0"
      - expression_is_true: "(repeat_purchases = 0) = (avg_repeat_amount is null)"
  - { id: publish, kind: export.delta, tables: { customer_clv: "${output}/customer_clv", clv_model: "${output}/clv_model" } }
"#,
    );
    let output = dir.path().join("out");
    let out = run(&pipeline, &input, &output, &[]);
    assert!(out.status.success(), "{}", text(&out));

    // One row per customer with a counted order.
    let counts = query_tables(
        &output,
        &["customer_clv"],
        "select count(*), count(distinct customer_id), sum(case when repeat_purchases > 0 then 1 else 0 end) from customer_clv",
    );
    let (rows, distinct, repeaters): (u64, u64, u64) = (
        counts[0][0].parse().unwrap(),
        counts[0][1].parse().unwrap(),
        counts[0][2].parse().unwrap(),
    );
    assert!(rows > 1000 && rows == distinct, "{counts:?}");
    assert!(repeaters > 100, "{counts:?}");
    // Both models converged, with every parameter positive and a standard error.
    let models = query_tables(
        &output,
        &["clv_model"],
        "select model, parameter, value > 0, std_error > 0, converged, customers from clv_model order by model, parameter",
    );
    let names: Vec<(&str, &str)> = models
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("bgnbd", "a"),
            ("bgnbd", "alpha"),
            ("bgnbd", "b"),
            ("bgnbd", "r"),
            ("gamma_gamma", "gamma"),
            ("gamma_gamma", "p"),
            ("gamma_gamma", "q"),
        ]
    );
    for r in &models {
        assert_eq!(&r[2..5], ["true", "true", "true"], "{models:?}");
    }
    assert_eq!(models[0][5], rows.to_string());
    // Value follows expected purchases: the customers expected to buy most are worth more than
    // the mean. Only repeat purchases that net out to refunds (a mean repeat amount of 0 or less,
    // which the Gamma-Gamma fit leaves out and lifetimes' formula shrinks toward the population
    // mean) can make a value negative.
    let value = query_tables(
        &output,
        &["customer_clv"],
        "select min(case when repeat_purchases = 0 or avg_repeat_amount > 0 then predicted_clv end) >= 0, \
         bool_and(predicted_clv >= 0 or avg_repeat_amount <= 0), \
         avg(case when expected_purchases >= 1 then predicted_clv end) > avg(predicted_clv) \
         from customer_clv",
    );
    assert_eq!(value, [["true", "true", "true"]], "{value:?}");
}

/// In the default pipeline: customer_clv has a row for exactly the customers with a counted
/// order, customer_segments carries the same predictions and clv segment, every clv segment is
/// where the pipeline's rules put it (recomputed here from the published columns, with
/// clv_score recomputed as a quintile of predicted_clv), and the fits are reported converged.
#[test]
fn default_pipeline_publishes_clv_and_the_clv_segmentation() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    generate(&input, 800, 17);
    let output = dir.path().join("out");
    let out = run(&crate::default_pipeline(), &input, &output, &[]);
    assert!(out.status.success(), "{}", text(&out));

    let tables = ["customer_clv", "customer_segments"];
    let matched = query_tables(
        &output,
        &tables,
        "select count(*) filter (where c.customer_id is null and s.frequency is not null), \
                count(*) filter (where c.customer_id is not null and s.frequency is null), \
                count(*) filter (where c.customer_id is not null and \
                    ((c.p_alive is distinct from s.p_alive) \
                     or (c.predicted_clv is distinct from s.predicted_clv) \
                     or (c.clv_segment is distinct from s.clv_segment))), \
                count(*) filter (where (s.clv_segment = 'no_purchase') <> (c.customer_id is null)), \
                count(c.customer_id) \
         from customer_segments s left join customer_clv c on c.customer_id = s.customer_id",
    );
    let [missing, extra, differ, no_purchase, with_clv] = &matched[0][..] else {
        panic!("{matched:?}")
    };
    assert_eq!(
        [missing, extra, differ, no_purchase],
        ["0", "0", "0", "0"],
        "{matched:?}"
    );
    assert!(with_clv.parse::<u64>().unwrap() > 500, "{matched:?}");

    let wrong = query_tables(
        &output,
        &tables,
        "with scored as ( \
             select c.*, s.m_score, \
                 cast(1 + (5 * (rank() over (order by c.predicted_clv) - 1)) / count(*) over () as int) \
                     as score \
             from customer_clv c join customer_segments s on s.customer_id = c.customer_id) \
         select customer_id, clv_score, score, clv_segment, p_alive, m_score from scored \
         where clv_score <> score or clv_segment <> case \
             when p_alive >= 0.5 and score >= 4 then 'high_value' \
             when p_alive >= 0.5 and score > m_score then 'growing' \
             when p_alive < 0.5 and m_score >= 4 then 'at_risk_high_value' \
             when p_alive < 0.5 then 'likely_churned' \
             else 'low_value' end",
    );
    assert!(wrong.is_empty(), "{wrong:?}");
    let segments = query_tables(
        &output,
        &["customer_segments"],
        "select clv_segment from customer_segments group by 1 order by 1",
    );
    assert_eq!(
        segments.concat(),
        [
            "at_risk_high_value",
            "growing",
            "high_value",
            "likely_churned",
            "low_value",
            "no_purchase"
        ]
    );
    for model in ["bgnbd", "gamma_gamma"] {
        let key = format!("clv_{model}_converged");
        assert_eq!(crate::manifest_metric(&output, "clv", &key), true, "{key}");
    }
}
