use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{BooleanArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{DataFrame, SessionContext};
use url::Url;

use super::*;

/// Rows 0..10 in three partitions (the last empty), with `keep` true, false or null.
fn input(ctx: &SessionContext) -> DataFrame {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("keep", DataType::Boolean, true),
    ]));
    let batch = |ids: std::ops::Range<i64>| {
        let keep: BooleanArray = ids
            .clone()
            .map(|i| match i % 3 {
                0 => Some(true),
                1 => Some(false),
                _ => None,
            })
            .collect();
        RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(ids)), Arc::new(keep)],
        )
        .unwrap()
    };
    let table = MemTable::try_new(
        schema.clone(),
        vec![vec![batch(0..4)], vec![batch(4..10)], vec![]],
    )
    .unwrap();
    ctx.read_table(Arc::new(table)).unwrap()
}

fn run_table(dir: &Url, name: &str, columns: &[&str]) -> WriteTarget {
    WriteTarget {
        table: name.into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        sink: SinkSpec::RunTable {
            dir: dir.join(&format!("{name}/")).unwrap(),
        },
    }
}

/// Plans `df` under a write of `spec` with `hooks`, runs it, and returns its files per target
/// and the plan.
async fn write(
    df: DataFrame,
    spec: WriteSpec,
    hooks: LocalHooks,
) -> (Vec<Vec<WrittenFile>>, Arc<dyn ExecutionPlan>) {
    let targets = spec.targets.len();
    let (state, input) = df.into_parts();
    let node = WriteFiles::try_new(input, spec)
        .unwrap()
        .with_hooks(Arc::new(hooks));
    let df = DataFrame::new(
        state,
        LogicalPlan::Extension(Extension {
            node: Arc::new(node),
        }),
    );
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await.unwrap();
    let batches = collect(plan.clone(), task).await.unwrap();
    (parse_results(&batches, targets).unwrap(), plan)
}

/// The ids in the files, sorted.
async fn ids(ctx: &SessionContext, files: &[WrittenFile]) -> Vec<i64> {
    let mut out = Vec::new();
    for f in files {
        let batches = ctx
            .read_parquet(f.url.as_str(), Default::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        for b in batches {
            let c = b.column_by_name("id").unwrap();
            out.extend(
                c.as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .iter()
                    .copied(),
            );
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_write_is_one_file_per_partition_with_rows_and_its_own_names() {
    let dir = tempfile::tempdir().unwrap();
    let url = Url::from_directory_path(dir.path()).unwrap();
    let ctx = crate::session::new_session(&Default::default()).unwrap();
    let spec = || WriteSpec {
        targets: vec![run_table(&url, "t", &["id"])],
        split_by: None,
    };
    let rows = Arc::new(AtomicU64::new(0));
    let hooks = LocalHooks {
        rows: vec![rows.clone()],
        observe: None,
    };
    let (files, plan) = write(input(&ctx), spec(), hooks).await;
    let exec = plan
        .downcast_ref::<WriteExec>()
        .expect("planned as a WriteExec");
    assert!(exec.has_hooks(), "planned in this process, with its hooks");
    // Two partitions with rows, one without: two files, none for the empty partition.
    assert_eq!(files[0].len(), 2);
    assert_eq!(files[0].iter().map(|f| f.rows).sum::<u64>(), 10);
    assert_eq!(rows.load(Ordering::Relaxed), 10);
    assert!(
        files[0]
            .iter()
            .all(|f| f.bytes > 0 && f.worker == "local" && f.add.is_none())
    );
    assert_eq!(ids(&ctx, &files[0]).await, (0..10).collect::<Vec<_>>());

    // Run again: new files beside the first ones, never over them.
    let (again, _) = write(input(&ctx), spec(), LocalHooks::default()).await;
    for f in &again[0] {
        assert!(files[0].iter().all(|g| g.url != f.url), "{} reused", f.url);
    }
}

#[tokio::test]
async fn a_split_sends_true_rows_to_the_first_target_and_the_rest_to_the_second() {
    let dir = tempfile::tempdir().unwrap();
    let url = Url::from_directory_path(dir.path()).unwrap();
    let ctx = crate::session::new_session(&Default::default()).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let observe: Observe = {
        let seen = seen.clone();
        Arc::new(move |b: &RecordBatch| {
            // With every input column, the split column included.
            assert_eq!(b.num_columns(), 2);
            let ids = b.column(0).as_primitive::<arrow::datatypes::Int64Type>();
            seen.lock().unwrap().extend(ids.values().iter().copied());
            Ok(())
        })
    };
    let spec = WriteSpec {
        targets: vec![
            run_table(&url, "good", &["id"]),
            run_table(&url, "bad", &["id", "keep"]),
        ],
        split_by: Some("keep".into()),
    };
    let hooks = LocalHooks {
        rows: vec![Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))],
        observe: Some(observe),
    };
    let (files, _) = write(input(&ctx), spec, hooks).await;
    assert_eq!(ids(&ctx, &files[0]).await, [0, 3, 6, 9]);
    // False and null rows both go to the second target.
    assert_eq!(ids(&ctx, &files[1]).await, [1, 2, 4, 5, 7, 8]);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, [0, 3, 6, 9]);
}

#[tokio::test]
async fn a_delta_target_yields_the_add_action_of_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = Url::from_directory_path(dir.path()).unwrap();
    let ctx = crate::session::new_session(&Default::default()).unwrap();
    let table = url.join("delta/").unwrap();
    let spec = WriteSpec {
        targets: vec![WriteTarget {
            table: "t".into(),
            columns: vec!["id".into(), "keep".into()],
            sink: SinkSpec::Delta {
                table: table.clone(),
                partition_by: vec!["keep".into()],
            },
        }],
        split_by: None,
    };
    let (files, _) = write(input(&ctx), spec, LocalHooks::default()).await;
    assert_eq!(files[0].iter().map(|f| f.rows).sum::<u64>(), 10);
    for f in &files[0] {
        let add = f.add.as_ref().expect("an Add action");
        assert!(f.url.as_str().starts_with(table.as_str()));
        assert!(
            f.url.as_str().ends_with(&add.path),
            "{} / {}",
            f.url,
            add.path
        );
        assert!(add.partition_values.contains_key("keep"));
        assert!(std::path::Path::new(f.url.path()).exists());
    }
}

#[test]
fn results_round_trip_and_name_a_bad_target() {
    let add = deltalake::kernel::Add {
        path: "part-1.parquet".into(),
        size: 10,
        ..Default::default()
    };
    let files = vec![WrittenFile {
        url: Url::parse("file:///t/part-1.parquet").unwrap(),
        rows: 3,
        bytes: 10,
        add: Some(add),
        worker: "executor-1".into(),
    }];
    let batch = result_batch(1, &files).unwrap();
    let back = parse_results(std::slice::from_ref(&batch), 2).unwrap();
    assert!(back[0].is_empty());
    assert_eq!(back[1][0].url, files[0].url);
    assert_eq!(back[1][0].rows, 3);
    assert_eq!(back[1][0].worker, "executor-1");
    assert_eq!(back[1][0].add.as_ref().unwrap().path, "part-1.parquet");
    let e = parse_results(&[batch], 1).unwrap_err().to_string();
    assert!(e.contains("target 1 of 1"), "{e}");
}

/// Rows whose partition column `part` holds `values`, one row each.
fn partitioned(ctx: &SessionContext, values: &[String]) -> DataFrame {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("part", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..values.len() as i64)),
            Arc::new(arrow::array::StringArray::from_iter_values(values)),
        ],
    )
    .unwrap();
    let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
    ctx.read_table(Arc::new(table)).unwrap()
}

proptest::proptest! {
    /// Partition values with `/`, `..`, `=`, `#12`, `%`, spaces or any unicode: every file
    /// lands inside the table's folder, and its Add action keeps the value as it was.
    #[test]
    fn prop_partition_values_never_escape_the_table(
        values in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(vec![
                    "../..".to_string(), "..".to_string(), "/".to_string(), "a/../../b".to_string(),
                    "x=y".to_string(), "#12".to_string(), "%2F..%2F".to_string(), " ".to_string(),
                    "ü/ß".to_string(), "日本/..".to_string(),
                ]),
                "\\PC{1,12}",
            ],
            1..6,
        ),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().canonicalize().unwrap();
            let url = Url::from_directory_path(&root).unwrap();
            let table = url.join("out/t/").unwrap();
            let ctx = crate::session::new_session(&Default::default()).unwrap();
            let spec = WriteSpec {
                targets: vec![WriteTarget {
                    table: "t".into(),
                    columns: vec!["id".into(), "part".into()],
                    sink: SinkSpec::Delta {
                        table: table.clone(),
                        partition_by: vec!["part".into()],
                    },
                }],
                split_by: None,
            };
            let (files, _) = write(partitioned(&ctx, &values), spec, LocalHooks::default()).await;
            let table_dir = root.join("out/t");
            let mut seen: Vec<String> = Vec::new();
            for f in &files[0] {
                let path = std::path::Path::new(f.url.path());
                let on_disk = path.canonicalize().expect("the file exists where its URL says");
                assert!(on_disk.starts_with(&table_dir), "{} escaped {}", on_disk.display(), table_dir.display());
                let add = f.add.as_ref().expect("an Add action");
                seen.push(add.partition_values["part"].clone().unwrap_or_default());
            }
            let mut want = values.clone();
            want.sort();
            want.dedup();
            seen.sort();
            seen.dedup();
            assert_eq!(seen, want);
        });
    }
}
