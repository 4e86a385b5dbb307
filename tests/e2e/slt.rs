//! Golden SQL: every `tests/slt/**/*.slt` file, each in a fresh DataFusion session.
//! `SEGFLOW_SLT_COMPLETE=1 cargo test -p segflow-cli --test e2e slt` rewrites the expected rows;
//! review the diff.

#[tokio::test]
async fn golden_sql_files() {
    let root = segflow_testkit::repo_root();
    let complete = std::env::var("SEGFLOW_SLT_COMPLETE").is_ok_and(|v| v == "1");
    let (count, failures) =
        segflow_testkit::slt::run_all(&root.join("tests/slt"), &root.join("sql"), complete).await;
    assert!(count > 0, "no .slt files found");
    assert!(
        failures.is_empty(),
        "{} of {count} golden files failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_sql_file_has_a_golden_test() {
    let root = segflow_testkit::repo_root();
    let mut missing = Vec::new();
    for area in std::fs::read_dir(root.join("sql")).unwrap().flatten() {
        for f in std::fs::read_dir(area.path()).unwrap().flatten() {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "sql") {
                let rel = p
                    .strip_prefix(root.join("sql"))
                    .unwrap()
                    .with_extension("slt");
                if !root.join("tests/slt").join(&rel).exists() {
                    missing.push(rel.display().to_string());
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "SQL files without tests/slt golden files: {missing:?}"
    );
}
