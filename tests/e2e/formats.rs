//! NDJSON and Parquet exports go through the same contracts and quarantine as CSV: the same
//! data in another format gives the same tables, and bad records are quarantined with file,
//! line (row, for Parquet) and reason.

use std::path::Path;
use std::sync::Arc;

use segflow_core::datafusion::arrow::array::{RecordBatch, StringArray};
use segflow_core::datafusion::arrow::datatypes::{DataType, Field, Schema};
use segflow_core::datafusion::dataframe::DataFrameWriteOptions;
use segflow_core::datafusion::prelude::{CsvReadOptions, SessionContext};

use crate::{read_table, run, text};

const CUSTOMER_COLUMNS: &str = "customer_id, signup_date, birth_date, gender, country, region, city, annual_income, email_opt_in";

/// The CSV as a typed Parquet file (types inferred, as a warehouse export would have them).
fn csv_to_parquet(csv: &Path, parquet: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ctx = SessionContext::new();
        let df = ctx
            .read_csv(csv.to_str().unwrap(), CsvReadOptions::new())
            .await
            .unwrap();
        df.write_parquet(
            parquet.to_str().unwrap(),
            DataFrameWriteOptions::new().with_single_file_output(true),
            None,
        )
        .await
        .unwrap();
    });
}

/// A Parquet file of string columns with these rows.
fn strings_to_parquet(parquet: &Path, columns: &[&str], rows: &[&[Option<&str>]]) {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let arrays = (0..columns.len())
        .map(|i| Arc::new(rows.iter().map(|r| r[i]).collect::<StringArray>()) as _)
        .collect();
    let batch = RecordBatch::try_new(schema, arrays).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ctx = SessionContext::new();
        ctx.read_batch(batch)
            .unwrap()
            .write_parquet(
                parquet.to_str().unwrap(),
                DataFrameWriteOptions::new().with_single_file_output(true),
                None,
            )
            .await
            .unwrap();
    });
}

/// An order CSV line as an NDJSON record with other key names, a nested customer and an
/// extra key.
fn order_json(line: &str) -> String {
    let f: Vec<&str> = line.split(',').collect();
    let campaign = if f[7].is_empty() {
        serde_json::Value::Null
    } else {
        f[7].into()
    };
    serde_json::json!({
        "id": f[0],
        "customer": { "id": f[1] },
        "ts": f[2],
        "amount": f[3].parse::<f64>().unwrap(),
        "currency": f[4],
        "category": f[5],
        "channel": f[6],
        "campaign": campaign,
        "note": "exported by crm v2",
    })
    .to_string()
}

fn pipeline(dir: &Path, extra_columns: &str) -> std::path::PathBuf {
    let stages = r#"  - { id: customers, kind: ingest.parquet, path: "${input}/parquet/", contract: {contracts}/customers.yaml, output: customers }
  - { id: plain_customers, kind: ingest.csv, path: "${input}/customers.csv", contract: {contracts}/customers.yaml, output: plain_customers }
  - id: orders
    kind: ingest.ndjson
    path: ${input}/json/
    contract: {contracts}/orders.yaml
    output: orders
    extra_columns: EXTRA
    columns: { order_id: id, customer_id: customer.id, order_ts: ts, campaign_id: campaign }
  - { id: plain_orders, kind: ingest.csv, path: "${input}/orders.csv", contract: {contracts}/orders.yaml, output: plain_orders }
  - id: publish
    kind: export.delta
    tables:
      orders: ${output}/orders
      plain_orders: ${output}/plain_orders
      customers: ${output}/customers
      plain_customers: ${output}/plain_customers
      orders_quarantine: ${output}/orders_quarantine
      customers_quarantine: ${output}/customers_quarantine
"#;
    crate::write_pipeline(dir, "formats", &stages.replace("EXTRA", extra_columns))
}

/// Writes the orders as two NDJSON files (the second gzipped) with bad lines in the first;
/// returns the bad lines' `(line, reason, column)`.
fn write_orders_ndjson(input: &Path) -> Vec<(String, String, String)> {
    let orders = std::fs::read_to_string(input.join("orders.csv")).unwrap();
    let records: Vec<String> = orders.lines().skip(1).map(order_json).collect();
    let (first, second) = records.split_at(records.len() / 2);
    let mut lines: Vec<Vec<u8>> = first.iter().map(|r| r.clone().into_bytes()).collect();
    let mut bad = Vec::new();
    let mut insert = |at: usize, line: &[u8], reason: &str, column: &str| {
        lines.insert(at - 1, line.to_vec());
        if !reason.is_empty() {
            bad.push((at.to_string(), reason.to_string(), column.to_string()));
        }
    };
    insert(6, br#"{"id": "X1", "amount": "#, "bad_json", "NULL");
    insert(11, b"", "", "");
    insert(
        20,
        br#"{"id":"X2","customer":{"id":"C00000001"},"ts":"2026-01-05T10:00:00Z","amount":"abc","channel":"web"}"#,
        "bad_number",
        "amount",
    );
    insert(30, b"{\"id\":\"X3\xff\"}", "invalid_utf8", "NULL");
    let json = input.join("json");
    std::fs::create_dir_all(&json).unwrap();
    std::fs::write(json.join("part-0.ndjson"), lines.join(&b'\n')).unwrap();
    let part1 = json.join("part-1.ndjson");
    std::fs::write(&part1, second.join("\n")).unwrap();
    let gz = std::process::Command::new("gzip")
        .arg(&part1)
        .status()
        .unwrap();
    assert!(gz.success());
    bad
}

#[test]
fn ndjson_and_parquet_exports_load_like_the_csv_and_quarantine_their_bad_records() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    crate::generate(&input, 300, 9);
    let bad_orders = write_orders_ndjson(&input);
    let parquet = input.join("parquet");
    std::fs::create_dir_all(&parquet).unwrap();
    csv_to_parquet(
        &input.join("customers.csv"),
        &parquet.join("customers.parquet"),
    );
    // A second file of string columns: one good row, one whose income is not a number.
    let columns: Vec<&str> = CUSTOMER_COLUMNS.split(", ").collect();
    strings_to_parquet(
        &parquet.join("late.parquet"),
        &columns,
        &[
            &[
                Some("CX1"),
                Some("2026-01-02"),
                None,
                Some("F"),
                Some("FR"),
                Some("Occitanie"),
                Some("Toulouse"),
                Some("4100.5"),
                Some("true"),
            ],
            &[
                Some("CX2"),
                Some("2026-01-02"),
                None,
                None,
                Some("FR"),
                None,
                None,
                Some("lots"),
                None,
            ],
        ],
    );

    let output = dir.path().join("out");
    let out = run(&pipeline(dir.path(), "ignore"), &input, &output, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("part-0.ndjson: ignoring keys the contract does not have: note"),
        "{}",
        text(&out)
    );

    let summary = "count(*), sum(amount), min(order_ts), max(order_ts), count(distinct customer_id), count(campaign_id), count(distinct channel)";
    let (_, from_json) = read_table(&output, "orders", summary);
    let (_, from_csv) = read_table(&output, "plain_orders", summary);
    assert_eq!(from_json, from_csv);
    let (_, quarantined) = read_table(
        &output,
        "orders_quarantine",
        "line_number, reason, coalesce(column_name, 'NULL'), source_file, raw_record",
    );
    let got: Vec<(String, String, String)> = quarantined
        .iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        .collect();
    assert_eq!(got, bad_orders);
    assert!(quarantined.iter().all(|r| r[3].ends_with("/part-0.ndjson")));
    assert_eq!(quarantined[0][4], r#"{"id": "X1", "amount": "#);

    let (_, from_parquet) = read_table(&output, "customers", CUSTOMER_COLUMNS);
    let (_, mut from_csv) = read_table(&output, "plain_customers", CUSTOMER_COLUMNS);
    assert_eq!(from_csv.len(), 300);
    let cx1 = from_parquet
        .iter()
        .find(|r| r[0] == "CX1")
        .expect("the good row of the second file")
        .clone();
    from_csv.push(cx1);
    from_csv.sort();
    assert_eq!(from_parquet, from_csv);
    let (_, quarantined) = read_table(
        &output,
        "customers_quarantine",
        "line_number, reason, column_name, source_file, raw_record",
    );
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    let q = &quarantined[0];
    assert_eq!(&q[..3], ["2", "bad_number", "annual_income"]);
    assert!(q[3].ends_with("/parquet/late.parquet"), "{q:?}");
    assert!(
        q[4].starts_with(r#"{"customer_id":"CX2","signup_date":"2026-01-02","birth_date":null"#)
            && q[4].contains(r#""annual_income":"lots""#),
        "{q:?}"
    );
}

#[test]
fn ndjson_keys_beyond_the_contract_fail_with_file_and_line_when_declared() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    crate::generate(&input, 50, 3);
    write_orders_ndjson(&input);
    let parquet = input.join("parquet");
    std::fs::create_dir_all(&parquet).unwrap();
    csv_to_parquet(
        &input.join("customers.csv"),
        &parquet.join("customers.parquet"),
    );
    let output = dir.path().join("out");
    let out = run(&pipeline(dir.path(), "fail"), &input, &output, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":1: key `note` is not a column of the contract (extra_columns: fail)"),
        "{}",
        text(&out)
    );
    assert!(!output.join("orders").exists(), "nothing is published");
}
