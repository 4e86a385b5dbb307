//! Errors a user can act on: what went wrong, where, what to do, and the documented exit code.

use std::path::Path;

use crate::{default_pipeline, generate, run, segflow, text};

const EXIT_FAILED: i32 = 1;
const EXIT_INVALID: i32 = 2;
const EXIT_DATA: i32 = 3;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A pipeline file in `dir` whose paths point into the repository.
fn pipeline(dir: &Path, body: &str) -> std::path::PathBuf {
    let root = segflow_testkit::repo_root();
    let text = format!(
        "name: t\nruns: {}/runs\nsql_dir: {}\nvars:\n  input: {}\n{body}",
        dir.display(),
        dir.join("sql").display(),
        dir.join("in").display()
    )
    .replace(
        "CONTRACTS",
        &root.join("pipelines/contracts").display().to_string(),
    );
    std::fs::create_dir_all(dir.join("sql")).unwrap();
    let f = dir.join("p.yaml");
    std::fs::write(&f, text).unwrap();
    f
}

#[test]
fn unknown_top_level_key_gives_line_column_and_valid_keys() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "stagess: []\n");
    let out = segflow().arg("validate").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(EXIT_INVALID), "{}", text(&out));
    let e = stderr(&out);
    assert!(
        e.contains(&format!(
            "{}:6:1: unknown field `stagess`, expected one of",
            p.display()
        )),
        "{e}"
    );
    assert!(e.contains("`stages`"), "{e}");
}

#[test]
fn unknown_stage_key_points_at_its_line_and_lists_the_kinds_keys() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "stages:\n  - id: a\n    kind: ingest.csv\n    path: x.csv\n    contrct: CONTRACTS/orders.yaml\n    output: orders\n",
    );
    let out = segflow().arg("run").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(EXIT_INVALID), "{}", text(&out));
    let e = stderr(&out);
    assert!(e.contains(&format!("{}:10:5: stage `a` (ingest.csv): unknown field `contrct`, expected one of `path`, `contract`", p.display())), "{e}");
}

#[test]
fn unknown_kind_lists_the_registered_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "stages:\n  - id: a\n    kind: segment.magic\n");
    let out = segflow().arg("validate").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(EXIT_INVALID), "{}", text(&out));
    let e = stderr(&out);
    assert!(e.contains("has unknown kind `segment.magic`; the registered kinds are: export.crm, export.delta, export.files, export.postgres, export.report, features.clv, features.sql, ingest.csv, ingest.delta, ingest.ndjson, ingest.parquet, segment.kmeans, segment.rules"), "{e}");
}

#[test]
fn a_cycle_names_its_stages() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sql")).unwrap();
    std::fs::write(dir.path().join("sql/a.sql"), "select * from b_out").unwrap();
    std::fs::write(dir.path().join("sql/b.sql"), "select * from a_out").unwrap();
    let p = pipeline(
        dir.path(),
        "stages:\n  - { id: a, kind: features.sql, sql: a.sql, output: a_out }\n  - { id: b, kind: features.sql, sql: b.sql, output: b_out }\n",
    );
    let out = segflow().arg("plan").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(EXIT_INVALID), "{}", text(&out));
    let e = stderr(&out);
    assert!(
        e.contains("the stages form a cycle: a -> b -> a")
            || e.contains("the stages form a cycle: b -> a -> b"),
        "{e}"
    );
}

#[test]
fn missing_param_and_unknown_var_are_spec_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sql")).unwrap();
    std::fs::write(dir.path().join("sql/a.sql"), "select $limit as n").unwrap();
    let p = pipeline(
        dir.path(),
        "stages:\n  - { id: a, kind: features.sql, sql: a.sql, output: a_out }\n",
    );
    let out = segflow().arg("validate").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(EXIT_INVALID), "{}", text(&out));
    assert!(
        stderr(&out).contains("a.sql uses `$limit` but"),
        "{}",
        text(&out)
    );
    assert!(
        stderr(&out).contains("add it under the stage's `params`"),
        "{}",
        text(&out)
    );

    let out = segflow()
        .args(["validate"])
        .arg(default_pipeline())
        .args(["--var", "ouptut=/tmp/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_INVALID), "{}", text(&out));
    assert!(
        stderr(&out).contains("`${ouptut}` is not a pipeline var"),
        "{}",
        text(&out)
    );
    let out = segflow()
        .args(["validate"])
        .arg(default_pipeline())
        .args(["--var", "as_of=2026-13-01"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_INVALID), "{}", text(&out));
    assert!(
        stderr(&out).contains("var `as_of`: `2026-13-01` is not a date"),
        "{}",
        text(&out)
    );
}

#[test]
fn missing_input_names_its_url() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("nothing-here");
    let out = run(&default_pipeline(), &input, &dir.path().join("out"), &[]);
    assert_eq!(out.status.code(), Some(EXIT_FAILED), "{}", text(&out));
    let e = stderr(&out);
    assert!(
        e.contains("stage `ingest_customers`: input not found: file://"),
        "{e}"
    );
    assert!(e.contains("nothing-here/customers*.csv"), "{e}");
}

#[test]
fn sql_error_names_the_stage_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    generate(&dir.path().join("in"), 20, 1);
    std::fs::create_dir_all(dir.path().join("sql")).unwrap();
    std::fs::write(
        dir.path().join("sql/bad.sql"),
        "select customer_id, no_such_column from customers",
    )
    .unwrap();
    let p = pipeline(
        dir.path(),
        "stages:\n  - { id: ing, kind: ingest.csv, path: \"${input}/customers.csv\", contract: CONTRACTS/customers.yaml, output: customers }\n  - { id: bad_sql, kind: features.sql, sql: bad.sql, output: x }\n",
    );
    let out = segflow().arg("run").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(EXIT_INVALID), "{}", text(&out));
    let e = stderr(&out);
    assert!(
        e.contains("stage `bad_sql`: ") && e.contains("sql/bad.sql"),
        "{e}"
    );
    assert!(e.contains("no_such_column"), "{e}");
}

#[test]
fn too_many_bad_values_fail_the_stage_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    generate(&input, 50, 3);
    let orders = std::fs::read_to_string(input.join("orders.csv")).unwrap();
    let mut lines: Vec<String> = orders.lines().map(String::from).collect();
    // Every tenth line from line 6 (the header is line 1): a bad amount in column 4; 10% of
    // the rows is over the default max_bad_fraction of 5%.
    for i in (5..lines.len()).step_by(10) {
        let mut cells: Vec<String> = lines[i].split(',').map(String::from).collect();
        cells[3] = "12.5O".to_string();
        lines[i] = cells.join(",");
    }
    std::fs::write(input.join("orders.csv"), lines.join("\n") + "\n").unwrap();
    let out = run(&default_pipeline(), &input, &dir.path().join("out"), &[]);
    assert_eq!(out.status.code(), Some(EXIT_DATA), "{}", text(&out));
    let e = stderr(&out);
    assert!(
        e.contains("orders.csv:6: column `amount`: '12.5O' is not a decimal(12,2) (bad_number)"),
        "{e}"
    );
    assert!(
        e.contains("over the limit (max_bad_fraction 0.05): bad_number"),
        "{e}"
    );
    assert!(e.contains("pipelines/contracts/orders.yaml"), "{e}");
    // Nothing was published, and the good orders written into staging before their bad
    // fraction was known are gone.
    assert!(!dir.path().join("out/customer_segments").exists());
    assert!(!dir.path().join("out/quarantine").exists());
    let mut left = Vec::new();
    let mut todo = vec![dir.path().join("out/staging/orders")];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.path() {
                p if p.is_dir() => todo.push(p),
                p if p.extension().is_some_and(|x| x == "parquet") => left.push(p),
                _ => {}
            }
        }
    }
    assert!(left.is_empty(), "{left:?}");
}
