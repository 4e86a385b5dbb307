//! Ingest: bad rows are quarantined exactly (file, line, reason), never dropped; exports with
//! other column names, formats, compression and file layouts map onto the contracts.

use std::collections::BTreeSet;
use std::path::Path;

use crate::{default_pipeline, query_tables, read_table, run, segflow, text};

const QUARANTINE_COLS: &str =
    "table_name, line_number, reason, column_name, message, raw_record, source_file, run_id";

fn generate_dirty(dir: &Path, customers: u64, seed: u64, fraction: f64) {
    let out = segflow()
        .args(["generate", "--customers", &customers.to_string()])
        .args([
            "--seed",
            &seed.to_string(),
            "--dirty",
            &fraction.to_string(),
            "--out",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// The Parquet files under a directory, relative to it.
fn parquet_files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
                out.insert(rel);
            }
        }
    }
    out
}

/// The data files a Delta table's log adds and does not remove.
fn committed_files(table: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut logs: Vec<_> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    logs.sort();
    for log in logs {
        for line in std::fs::read_to_string(log).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            let path = |kind: &str| {
                // Paths in the log are URL-encoded.
                action[kind]["path"].as_str().map(|p| {
                    let url = url::Url::parse(&format!("file:///t/{p}")).unwrap();
                    let path = url.to_file_path().unwrap();
                    path.strip_prefix("/t")
                        .unwrap()
                        .to_string_lossy()
                        .to_string()
                })
            };
            if let Some(p) = path("add") {
                out.insert(p);
            }
            if let Some(p) = path("remove") {
                out.remove(&p);
            }
        }
    }
    out
}

fn data_lines(file: &Path) -> u64 {
    std::fs::read(file)
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64
        - 1
}

#[test]
fn dirty_export_quarantines_exactly_the_corrupted_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate_dirty(&input, 2000, 11, 0.01);
    let out = run(&default_pipeline(), &input, &output, &[]);
    assert!(out.status.success(), "{}", text(&out));

    let expected: BTreeSet<(String, String, String)> =
        std::fs::read_to_string(input.join("corrupted_rows.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].to_string(), f[1].to_string(), f[2].to_string())
            })
            .collect();
    let reasons: BTreeSet<&str> = expected.iter().map(|(_, _, r)| r.as_str()).collect();
    assert!(
        reasons.len() >= 10,
        "the corruption covers the reason codes: {reasons:?}"
    );
    let (_, rows) = read_table(&output, "quarantine", QUARANTINE_COLS);
    let got: BTreeSet<(String, String, String)> = rows
        .iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        .collect();
    assert_eq!(rows.len(), got.len(), "one quarantine row per bad record");
    let missing: Vec<_> = expected.difference(&got).take(10).collect();
    let extra: Vec<_> = got.difference(&expected).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not quarantined: {missing:?}\nquarantined but clean: {extra:?}"
    );
    // Every quarantined row says what and where, and keeps its text: the line it starts on,
    // whether a row check kept it or it was read again by offset (keys, references).
    let mut files: std::collections::HashMap<String, Vec<String>> = Default::default();
    for r in &rows {
        assert!(
            r[4] != "NULL" && r[5] != "NULL" && r[6].ends_with(".csv"),
            "{r:?}"
        );
        let lines = files.entry(r[6].clone()).or_insert_with(|| {
            let path = url::Url::parse(&r[6]).unwrap().to_file_path().unwrap();
            String::from_utf8_lossy(&std::fs::read(path).unwrap())
                .lines()
                .map(|l| l.trim_end_matches('\r').to_string())
                .collect()
        });
        let line: usize = r[1].parse().unwrap();
        assert_eq!(r[5].lines().next().unwrap_or(""), lines[line - 1], "{r:?}");
    }

    // Staging holds exactly the other rows; the manifest adds up.
    let manifest = std::fs::read_dir(output.join("_runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| crate::of_a_run(p) && p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    for table in ["customers", "orders", "events", "survey_responses"] {
        let bad = expected.iter().filter(|(t, _, _)| t == table).count() as u64;
        let lines = data_lines(&input.join(format!("{table}.csv")));
        let (_, count) = read_table(&output, &format!("staging/{table}"), "count(*)");
        assert_eq!(count[0][0], (lines - bad).to_string(), "{table}");
        let stage = m["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == format!("ingest_{table}"))
            .unwrap();
        let metrics = &stage["metrics"];
        assert_eq!(metrics[format!("{table}_rows_read")], lines, "{table}");
        assert_eq!(metrics[format!("{table}_rows_quarantined")], bad, "{table}");
        let by_reason: u64 = metrics[format!("{table}_quarantined_by_reason")]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(by_reason, bad, "{table}");
        // A table whose keys repeat is loaded the long way, after a first pass that wrote
        // its rows into staging: those files are deleted, not left beside the commit.
        assert_eq!(
            parquet_files(&output.join(format!("staging/{table}"))),
            committed_files(&output.join(format!("staging/{table}"))),
            "{table}"
        );
    }

    // A rerun on the same files reads none of them again: the quarantine keeps one row per
    // bad record and no new version.
    let again = run(&default_pipeline(), &input, &output, &[]);
    assert!(again.status.success(), "{}", text(&again));
    let (version, again_rows) = read_table(&output, "quarantine", QUARANTINE_COLS);
    assert_eq!((version, again_rows), (0, rows));
}

#[test]
fn one_bad_value_is_quarantined_with_its_line_column_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    crate::generate(&input, 50, 3);
    let orders = std::fs::read_to_string(input.join("orders.csv")).unwrap();
    let mut lines: Vec<String> = orders.lines().map(String::from).collect();
    let mut cells: Vec<String> = lines[5].split(',').map(String::from).collect();
    cells[3] = "12.5O".to_string();
    lines[5] = cells.join(",");
    let bad_line = lines[5].clone();
    // An order from 1997 (the age of the CDNOW purchase log) is real data, not out of range.
    let mut old: Vec<String> = lines[7].split(',').map(String::from).collect();
    old[2] = "1997-03-14T10:00:00Z".to_string();
    let old_order = old[0].clone();
    lines[7] = old.join(",");
    std::fs::write(input.join("orders.csv"), lines.join("\n") + "\n").unwrap();
    let out = run(&default_pipeline(), &input, &output, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("quarantined 1 of"),
        "{}",
        text(&out)
    );
    let (_, rows) = read_table(&output, "quarantine", QUARANTINE_COLS);
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        r[..6],
        [
            "orders".to_string(),
            "6".into(),
            "bad_number".into(),
            "amount".into(),
            "'12.5O' is not a decimal(12,2)".into(),
            bad_line
        ]
    );
    assert!(r[6].ends_with("/in/orders.csv"), "{r:?}");
    let staged = query_tables(
        &output,
        &["staging/orders"],
        "select order_id, cast(cast(order_ts as date) as varchar) from orders \
         where order_ts < TIMESTAMP '2000-01-01T00:00:00Z'",
    );
    assert_eq!(staged, [[old_order, "1997-03-14".to_string()]]);
}

#[test]
fn mapped_export_with_other_names_formats_and_gzip_parts_matches_the_contract_shape() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    crate::generate(&input, 300, 8);
    // The same orders as a real export would ship them: other column names, `;`-separated,
    // day-first timestamps without seconds' zone, split over two gzip files in a folder, with
    // a column the contract does not have.
    let orders = std::fs::read_to_string(input.join("orders.csv")).unwrap();
    let drop = input.join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    let lines: Vec<&str> = orders.lines().skip(1).collect();
    for (part, chunk) in lines.chunks(lines.len() / 2 + 1).enumerate() {
        let mut text = String::from(
            "OrderNo;CustomerID;OrderDate;Total;Curr;Category;Channel;Campaign;StoreNote\n",
        );
        for l in chunk {
            let f: Vec<&str> = l.split(',').collect();
            let ts = chrono::DateTime::parse_from_rfc3339(f[2]).unwrap();
            text.push_str(&format!(
                "{};{};{};{};{};{};{};{};n/a\n",
                f[0],
                f[1],
                ts.format("%d/%m/%Y %H:%M:%S"),
                f[3],
                f[4],
                f[5],
                f[6],
                f[7]
            ));
        }
        let path = drop.join(format!("orders-{part}.csv"));
        std::fs::write(&path, text).unwrap();
        let gz = std::process::Command::new("gzip")
            .arg(&path)
            .status()
            .unwrap();
        assert!(gz.success());
    }
    std::fs::write(drop.join("_SUCCESS"), "").unwrap();

    let pipeline = crate::write_pipeline(
        dir.path(),
        "mapped",
        r#"  - { id: customers, kind: ingest.csv, path: "${input}/customers.csv", contract: {contracts}/customers.yaml, output: customers }
  - { id: plain, kind: ingest.csv, path: "${input}/orders.csv", contract: {contracts}/orders.yaml, output: plain_orders }
  - id: mapped
    kind: ingest.csv
    path: ${input}/drop/
    contract: {contracts}/orders.yaml
    output: orders
    delimiter: ";"
    columns:
      order_id: OrderNo
      customer_id: CustomerID
      order_ts: { from: OrderDate, format: "%d/%m/%Y %H:%M:%S" }
      amount: Total
      currency: Curr
      category: Category
      channel: Channel
      campaign_id: Campaign
  - { id: publish, kind: export.delta, tables: { orders: "${output}/orders", plain_orders: "${output}/plain_orders" } }
"#,
    );
    let output = dir.path().join("out");
    let out = run(&pipeline, &input, &output, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("ignoring columns the contract does not have: StoreNote"),
        "{}",
        text(&out)
    );
    let summary = "count(*), sum(amount), min(order_ts), max(order_ts), count(distinct customer_id), count(campaign_id)";
    let (_, mapped) = read_table(&output, "orders", summary);
    let (_, plain) = read_table(&output, "plain_orders", summary);
    assert_eq!(mapped, plain);
    assert_eq!(mapped[0][0], (lines.len()).to_string());
}

/// Every `on_duplicate` policy, with and without `duplicate_order_by`, over two files: the
/// copies lose in file order (file, then line) or by the ordering column, and a copy that
/// breaks another check does not compete for its key (so it cannot take the good copy down).
#[test]
fn duplicate_keys_follow_on_duplicate_and_only_good_rows_compete() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    // key a: the first copy has a bad version, so the second is the only good one.
    std::fs::write(
        input.join("items-1.csv"),
        "id,version,note\na,x,a-bad\na,1,a-good\nb,2,b1\nc,5,c1\n",
    )
    .unwrap();
    std::fs::write(
        input.join("items-2.csv"),
        "id,version,note\nb,1,b2\nc,3,c2\nc,9,c3\nd,1,d\n",
    )
    .unwrap();
    // A third file: three partitions read, where the rows table the duplicates are ordered
    // in is two; the first pass's third file of the output must not stay in it.
    std::fs::write(input.join("items-3.csv"), "id,version,note\ne,1,e\n").unwrap();
    let policies = [
        ("keep_first", "", "a-good b1 c1 d e"),
        ("keep_last", "", "a-good b2 c3 d e"),
        ("keep_first", "version", "a-good b2 c2 d e"),
        ("keep_last", "version", "a-good b1 c3 d e"),
        ("quarantine_all", "", "a-good d e"),
    ];
    let mut stages = String::new();
    let mut publish = String::from("  - id: publish\n    kind: export.delta\n    tables:\n");
    for (i, (policy, order_by, _)) in policies.iter().enumerate() {
        let contract = dir.path().join(format!("items_{i}.yaml"));
        let order = if order_by.is_empty() {
            String::new()
        } else {
            format!("duplicate_order_by: {order_by}\n")
        };
        std::fs::write(
            &contract,
            format!(
                "table: items\nunique: [id]\non_duplicate: {policy}\n{order}columns:\n  - {{ name: id, type: string, nullable: false }}\n  - {{ name: version, type: int }}\n  - {{ name: note, type: string }}\n"
            ),
        )
        .unwrap();
        stages.push_str(&format!(
            "  - {{ id: items_{i}, kind: ingest.csv, path: \"${{input}}/items-*.csv\", contract: {}, output: items_{i}, max_bad_fraction: 1 }}\n",
            contract.display()
        ));
        publish.push_str(&format!(
            "      items_{i}: ${{output}}/items_{i}\n      items_{i}_quarantine: ${{output}}/items_{i}_quarantine\n"
        ));
    }
    let pipeline = crate::write_pipeline(dir.path(), "dups", &(stages + &publish));
    let out = run(&pipeline, &input, &output, &[]);
    assert!(out.status.success(), "{}", text(&out));

    let all = ["a-bad", "a-good", "b1", "b2", "c1", "c2", "c3", "d", "e"];
    for (i, (policy, order_by, kept)) in policies.iter().enumerate() {
        let what = format!("{policy} by `{order_by}`");
        let (_, rows) = read_table(&output, &format!("items_{i}"), "note");
        let got: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(got.join(" "), *kept, "{what}");
        let (_, bad) = read_table(
            &output,
            &format!("items_{i}_quarantine"),
            "raw_record, reason, column_name, message, line_number",
        );
        // Everything not kept is quarantined once, with its reason.
        let expected: Vec<&str> = all
            .iter()
            .copied()
            .filter(|n| !kept.split(' ').any(|k| k == *n))
            .collect();
        let mut got: Vec<&str> = bad
            .iter()
            .map(|r| r[0].rsplit(',').next().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, expected, "{what}");
        for r in &bad {
            if r[0].ends_with("a-bad") {
                assert_eq!((r[1].as_str(), r[2].as_str()), ("bad_number", "version"));
            } else {
                assert_eq!(
                    (r[1].as_str(), r[2].as_str()),
                    ("duplicate_key", "id"),
                    "{r:?}"
                );
                let key = &r[0][..1];
                assert!(
                    r[3].starts_with(&format!("id '{key}': another row has the same id")),
                    "{r:?}"
                );
            }
        }
    }
}

#[test]
fn a_file_cut_into_pieces_loads_exactly_like_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    // Quoted fields with newlines, delimiters and doubled quotes, CRLF and blank lines, bad
    // values and duplicate keys spread over the file: wherever a cut lands, every record must
    // keep its text, its line number, and its place in first-wins order.
    let mut csv = String::from("id,version,note\r\n");
    for i in 0..400 {
        let id = i % 170; // keys 0..170 repeat: duplicates in other pieces
        let version = if i % 37 == 0 {
            "x".to_string()
        } else {
            i.to_string()
        };
        let note = match i % 5 {
            0 => format!("\"line one\nline \"\"two\"\", of {i}\""),
            1 => format!("\"{i},\r\n\""),
            2 => format!("plain {i}"),
            3 => String::new(),
            _ => format!("\"\"\"{i}\"\"\""),
        };
        csv.push_str(&format!("k{id},{version},{note}\r\n"));
        if i % 41 == 0 {
            csv.push_str("\r\n\n");
        }
    }
    std::fs::write(input.join("items.csv"), &csv).unwrap();
    let contract = dir.path().join("items.yaml");
    std::fs::write(
        &contract,
        "table: items\nunique: [id]\non_duplicate: keep_first\ncolumns:\n  - { name: id, type: string, nullable: false }\n  - { name: version, type: int }\n  - { name: note, type: string }\n",
    )
    .unwrap();
    let pipeline = crate::write_pipeline(
        dir.path(),
        "pieces",
        &format!(
            "  - {{ id: items, kind: ingest.csv, path: \"${{input}}/items.csv\", contract: {}, output: items, max_bad_fraction: 1 }}\n  - id: publish\n    kind: export.delta\n    tables:\n      items: ${{output}}/items\n      items_quarantine: ${{output}}/items_quarantine\n",
            contract.display()
        ),
    );
    let load = |name: &str, pieces: Option<usize>| {
        let output = dir.path().join(name);
        let mut c = segflow();
        c.arg("run").arg(&pipeline);
        c.arg("--var").arg(format!("input={}", input.display()));
        c.arg("--var").arg(format!("output={}", output.display()));
        if let Some(n) = pieces {
            c.args(["--target-partitions", &n.to_string()]);
            c.env("DATAFUSION_OPTIMIZER_REPARTITION_FILE_MIN_SIZE", "1");
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let partitions = crate::manifest_metric(&output, "items", "items_read_partitions");
        let (_, good) = read_table(&output, "items", "id, version, note");
        let (_, bad) = read_table(
            &output,
            "items_quarantine",
            "line_number, reason, column_name, raw_record",
        );
        (partitions, good, bad)
    };
    let (one, good, bad) = load("whole", None);
    assert_eq!(one, 1);
    assert_eq!(good.len(), 170);
    assert_eq!(bad.len(), 230);
    // The first copy of k0 (line 2) has a bad version; its second copy (line 175 or later)
    // is the first good one.
    let k0 = good.iter().find(|r| r[0] == "k0").unwrap();
    assert_eq!(k0[1], "170", "{k0:?}");
    for pieces in [2, 3, 7] {
        let (n, g, b) = load(&format!("pieces-{pieces}"), Some(pieces));
        assert_eq!(n, pieces, "the file was read in {pieces} pieces");
        assert_eq!(g, good, "{pieces} pieces: good rows");
        assert_eq!(b, bad, "{pieces} pieces: quarantine");
    }
}
