//! Incremental ingest: a rerun reads only new or changed files, adds their rows to staging in
//! one commit, replaces a changed file's rows, leaves everything alone when nothing changed,
//! and `--full-refresh` rebuilds the same tables from scratch.

use crate::{
    default_pipeline, generate, manifest_metric, newest_manifest, read_table, run, segflow, text,
};

const ORDER_COLS: &str = "order_id, customer_id, order_ts, amount, channel, order_month";

fn ok(out: std::process::Output) {
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn reruns_are_idempotent_and_read_only_new_or_changed_files() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate(&input, 300, 31);
    let as_of = ["as_of=2026-12-01"];
    ok(run(&default_pipeline(), &input, &output, &as_of));
    let (v0, orders0) = read_table(&output, "staging/orders", ORDER_COLS);
    let (_, segments0) = read_table(&output, "customer_segments", "*");
    assert_eq!(v0, 0);
    assert!(
        output.join("staging/orders/order_month=2024-01").is_dir(),
        "staging is partitioned by month"
    );

    // The same inputs again: nothing read, nothing added, the same segments.
    ok(run(&default_pipeline(), &input, &output, &as_of));
    assert_eq!(
        manifest_metric(&output, "ingest_orders", "orders_files_read"),
        0
    );
    assert_eq!(
        manifest_metric(&output, "ingest_orders", "orders_files_unchanged"),
        1
    );
    assert_eq!(
        read_table(&output, "staging/orders", ORDER_COLS),
        (0, orders0.clone())
    );
    assert_eq!(read_table(&output, "quarantine", "count(*)").0, 0);
    assert_eq!(read_table(&output, "customer_segments", "*").1, segments0);

    // A daily drop adds a file: 40 new orders, and one that repeats an order already loaded
    // (2.4% bad, under max_bad_fraction). Its name sorts after orders.csv, so a full refresh,
    // which keeps the first copy of a key in file-name order, agrees with the incremental run,
    // which keeps the copy already loaded.
    let first = &orders0[0];
    let mut drop = String::from(
        "order_id,customer_id,order_ts,amount,currency,category,channel,campaign_id\n",
    );
    for i in 1..=40 {
        drop.push_str(&format!(
            "N-{i},C{:08},2026-11-20T10:00:00Z,{i}.50,USD,books,web,\n",
            i % 2 + 1
        ));
    }
    drop.push_str(&format!(
        "{},{},2026-11-20T12:00:00Z,5.00,USD,toys,app,\n",
        first[0], first[1]
    ));
    std::fs::write(input.join("orders_2026-11-24.csv"), drop).unwrap();
    ok(run(&default_pipeline(), &input, &output, &as_of));
    assert_eq!(
        manifest_metric(&output, "ingest_orders", "orders_files_read"),
        1
    );
    let (v1, orders1) = read_table(&output, "staging/orders", ORDER_COLS);
    assert_eq!(v1, 1);
    let published = &newest_manifest(&output)["published"];
    let orders_report = published
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["table"] == "orders")
        .unwrap_or_else(|| panic!("orders in {published}"));
    assert_eq!(
        orders_report["rows"], 40,
        "the commit adds the new rows only"
    );
    assert_eq!(orders1.len(), orders0.len() + 40);
    assert!(orders1.iter().any(|r| r[0] == "N-2" && r[5] == "2026-11"));
    let (_, dups) = read_table(&output, "quarantine", "reason, line_number, source_file");
    assert_eq!(dups.len(), 1, "{dups:?}");
    assert_eq!(dups[0][0], "duplicate_key");
    assert_eq!(dups[0][1], "42");
    assert!(dups[0][2].ends_with("orders_2026-11-24.csv"));
    let (_, frequency) = read_table(&output, "customer_segments", "customer_id, frequency");
    let c1 = frequency.iter().find(|r| r[0] == "C00000001").unwrap();
    let c1_before = orders0.iter().filter(|r| r[1] == "C00000001").count();
    assert_eq!(c1[1], (c1_before + 20).to_string(), "the new orders count");

    // A changed file replaces its own rows, in one commit, and no others.
    let drop = input.join("orders_2026-11-24.csv");
    let text_now = std::fs::read_to_string(&drop).unwrap();
    std::fs::write(
        &drop,
        text_now.replace(
            "N-2,C00000001,2026-11-20T10:00:00Z,2.50",
            "N-2,C00000001,2026-11-20T10:00:00Z,99.00",
        ),
    )
    .unwrap();
    ok(run(&default_pipeline(), &input, &output, &as_of));
    let (v2, orders2) = read_table(&output, "staging/orders", ORDER_COLS);
    assert_eq!(v2, 2);
    assert_eq!(orders2.len(), orders1.len());
    assert!(orders2.iter().any(|r| r[0] == "N-2" && r[3] == "99.00"));
    assert!(!orders2.iter().any(|r| r[0] == "N-2" && r[3] == "2.50"));

    // A full refresh rebuilds staging from every file: the same rows.
    let out = segflow()
        .args(["run", "--full-refresh"])
        .arg(default_pipeline())
        .args(["--var", &format!("input={}", input.display())])
        .args(["--var", &format!("output={}", output.display())])
        .args(["--var", as_of[0]])
        .output()
        .unwrap();
    ok(out);
    assert_eq!(
        manifest_metric(&output, "ingest_orders", "orders_files_read"),
        2
    );
    let (v3, orders3) = read_table(&output, "staging/orders", ORDER_COLS);
    assert_eq!((v3, orders3), (3, orders2));
}

/// Nullable columns added to a contract (contract v1 only adds columns: `email` and
/// `last_name` of customers) join the staging table on the next incremental run, no
/// `--full-refresh`: rows loaded before read null there, new rows have their values.
#[test]
fn a_nullable_column_added_to_the_contract_joins_staging_on_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate(&input, 50, 7);
    let contracts = segflow_testkit::repo_root().join("pipelines/contracts");
    let full = std::fs::read_to_string(contracts.join("customers.yaml")).unwrap();
    let before: String = full
        .lines()
        .filter(|l| !l.contains("name: email,") && !l.contains("name: last_name,"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(before, full);
    let old_contract = dir.path().join("customers_before.yaml");
    std::fs::write(&old_contract, before).unwrap();
    let stage = |contract: &std::path::Path| {
        format!(
            "  - id: customers\n    kind: ingest.csv\n    path: \"${{input}}/customers*.csv\"\n    contract: {}\n    output: customers\n    staging: \"${{output}}/staging/customers\"\n",
            contract.display()
        )
    };
    let p = crate::write_pipeline(dir.path(), "old", &stage(&old_contract));
    ok(run(&p, &input, &output, &[]));
    let p = crate::write_pipeline(dir.path(), "new", &stage(&contracts.join("customers.yaml")));
    // Nothing new: the run table has the column (null), staging keeps its version.
    ok(run(&p, &input, &output, &[]));
    assert_eq!(read_table(&output, "staging/customers", "count(*)").0, 0);
    std::fs::write(
        input.join("customers-2.csv"),
        "customer_id,signup_date,birth_date,gender,country,region,city,annual_income,email_opt_in,email,last_name\n\
         N0000001,2026-01-02,,F,DE,Berlin,Berlin,,true,n1@example.com,Weber\n",
    )
    .unwrap();
    ok(run(&p, &input, &output, &[]));
    let (version, rows) = read_table(
        &output,
        "staging/customers",
        "count(*), count(email), max(email), max(last_name)",
    );
    assert_eq!(version, 1);
    assert_eq!(rows, [["51", "1", "n1@example.com", "Weber"]]);
}
