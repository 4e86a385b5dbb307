//! Round trips through the codecs: every segflow plan piece a cluster sees comes out of its
//! bytes as a plan that computes the same rows.

use std::sync::Arc;

use datafusion_proto::logical_plan::AsLogicalPlan;
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use segflow_core::datafusion::arrow::array::{Float64Array, RecordBatch, UInt64Array};
use segflow_core::datafusion::arrow::datatypes::{DataType, Field, Schema};
use segflow_core::datafusion::catalog::MemTable;
use segflow_core::datafusion::logical_expr::{Extension, LogicalPlan, col};
use segflow_core::datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use segflow_core::datafusion::prelude::{DataFrame, SessionContext};
use segflow_core::write::{SinkSpec, WriteExec, WriteFiles, WriteSpec, WriteTarget};
use segflow_segment::kmeans::kernel::{Pass, Scales, Task};
use segflow_segment::kmeans::{KMeansAssign, KMeansPass};

use super::*;

/// Rows of two features in two partitions, as an in-memory table.
fn table() -> Arc<MemTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("__row", DataType::UInt64, false),
        Field::new("__f0", DataType::Float64, false),
        Field::new("__f1", DataType::Float64, false),
    ]));
    let batch = |rows: std::ops::Range<u64>| {
        let x: Vec<f64> = rows.clone().map(|r| (r % 7) as f64 - 3.0).collect();
        let y: Vec<f64> = rows.clone().map(|r| (r % 5) as f64 * 0.5).collect();
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(UInt64Array::from_iter_values(rows)),
                Arc::new(Float64Array::from(x)),
                Arc::new(Float64Array::from(y)),
            ],
        )
        .unwrap()
    };
    Arc::new(
        MemTable::try_new(
            schema.clone(),
            vec![vec![batch(0..40)], vec![batch(40..100)]],
        )
        .unwrap(),
    )
}

/// A k-means step over the table, and every row's cluster: both k-means functions, over an
/// in-memory table.
fn kmeans_plan(ctx: &SessionContext) -> DataFrame {
    let centers = vec![vec![-2.0, 0.5, 2.0, 1.5]];
    let pass = Pass {
        scales: Scales::for_bounds(&[3.0, 2.0]),
        task: Task::Step { k: 2, centers },
    };
    let features = || vec![col("__f0"), col("__f1")];
    let state = ctx
        .read_table(table())
        .unwrap()
        .aggregate(
            vec![],
            vec![
                KMeansPass::call(
                    &pass,
                    std::iter::once(col("__row")).chain(features()).collect(),
                )
                .alias("state"),
            ],
        )
        .unwrap();
    let assigned = ctx
        .read_table(table())
        .unwrap()
        .select(vec![
            col("__row"),
            KMeansAssign::call(&[-2.0, 0.5, 2.0, 1.5], &[1, 0], features()).alias("cluster"),
        ])
        .unwrap();
    // One plan with both: the state as text beside each row's cluster.
    assigned
        .join_on(
            state,
            segflow_core::datafusion::common::JoinType::Inner,
            vec![],
        )
        .unwrap()
        .sort(vec![col("__row").sort(true, false)])
        .unwrap()
}

async fn rows(ctx: &SessionContext, plan: LogicalPlan) -> Vec<RecordBatch> {
    DataFrame::new(ctx.state(), plan).collect().await.unwrap()
}

#[tokio::test]
async fn logical_plans_with_memory_tables_and_kmeans_functions_round_trip() {
    let ctx = SessionContext::new();
    let plan = kmeans_plan(&ctx).into_optimized_plan().unwrap();
    let codec = LogicalCodec::default();
    let bytes = LogicalPlanNode::try_from_logical_plan(&plan, &codec).unwrap();
    let decoded = bytes
        .try_into_logical_plan(&ctx.task_ctx(), &codec)
        .unwrap();
    assert_eq!(
        format!("{}", decoded.display_indent()),
        format!("{}", plan.display_indent())
    );
    let expected = rows(&ctx, plan).await;
    assert_eq!(expected.iter().map(|b| b.num_rows()).sum::<usize>(), 100);
    assert_eq!(rows(&ctx, decoded).await, expected);
}

#[tokio::test]
async fn physical_plans_with_kmeans_functions_round_trip() {
    let ctx = SessionContext::new();
    let plan = kmeans_plan(&ctx).create_physical_plan().await.unwrap();
    let codec = PhysicalCodec::default();
    let bytes = PhysicalPlanNode::try_from_physical_plan(plan.clone(), &codec).unwrap();
    let decoded = bytes
        .try_into_physical_plan(&ctx.task_ctx(), &codec)
        .unwrap();
    let shown = |p: &Arc<dyn ExecutionPlan>| displayable(p.as_ref()).indent(false).to_string();
    assert_eq!(shown(&decoded), shown(&plan));
    let expected = collect(plan, ctx.task_ctx()).await.unwrap();
    assert_eq!(collect(decoded, ctx.task_ctx()).await.unwrap(), expected);
}

fn write_spec(dir: &url::Url) -> WriteSpec {
    WriteSpec {
        targets: vec![
            WriteTarget {
                table: "kept".into(),
                columns: vec!["__row".into(), "__f0".into()],
                sink: SinkSpec::RunTable {
                    dir: dir.join("kept/").unwrap(),
                },
            },
            WriteTarget {
                table: "others".into(),
                columns: vec!["__row".into()],
                sink: SinkSpec::Delta {
                    table: dir.join("delta/").unwrap(),
                    partition_by: vec![],
                },
            },
        ],
        split_by: Some("keep".into()),
    }
}

#[tokio::test]
async fn writes_round_trip_as_logical_and_physical_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(dir.path()).unwrap();
    let ctx = segflow_core::session::new_session(&Default::default()).unwrap();
    let input = ctx
        .read_table(table())
        .unwrap()
        .with_column(
            "keep",
            col("__f0").gt(segflow_core::datafusion::prelude::lit(0.0)),
        )
        .unwrap()
        .into_unoptimized_plan();
    let node = WriteFiles::try_new(input, write_spec(&url)).unwrap();
    let plan = LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    });

    let codec = LogicalCodec::default();
    let bytes = LogicalPlanNode::try_from_logical_plan(&plan, &codec).unwrap();
    let decoded = bytes
        .try_into_logical_plan(&ctx.task_ctx(), &codec)
        .unwrap();
    let LogicalPlan::Extension(e) = &decoded else {
        panic!("not an extension: {decoded}")
    };
    let write = e
        .node
        .as_any()
        .downcast_ref::<WriteFiles>()
        .expect("a WriteFiles node");
    assert_eq!(write.spec, write_spec(&url));
    assert_eq!(decoded, plan);

    let physical = DataFrame::new(ctx.state(), plan)
        .create_physical_plan()
        .await
        .unwrap();
    assert!(physical.downcast_ref::<WriteExec>().is_some());
    let codec = PhysicalCodec::default();
    let bytes = PhysicalPlanNode::try_from_physical_plan(physical.clone(), &codec).unwrap();
    let decoded = bytes
        .try_into_physical_plan(&ctx.task_ctx(), &codec)
        .unwrap();
    let exec = decoded.downcast_ref::<WriteExec>().expect("a WriteExec");
    assert_eq!(exec.spec(), &write_spec(&url));
    // The decoded write writes: both targets' files, all 100 rows between them.
    let results = collect(decoded, ctx.task_ctx()).await.unwrap();
    let files = segflow_core::write::parse_results(&results, 2).unwrap();
    let rows = |t: usize| files[t].iter().map(|f| f.rows).sum::<u64>();
    assert_eq!(rows(0) + rows(1), 100);
    assert!(rows(0) > 0 && rows(1) > 0);
    assert!(files[1].iter().all(|f| f.add.is_some()));
    assert!(
        files[0]
            .iter()
            .all(|f| f.add.is_none() && f.url.path().contains("/kept/"))
    );
}

#[test]
fn bytes_of_another_segflow_kind_are_refused_with_a_version_hint() {
    let codec = LogicalCodec::default();
    let mut buf = MAGIC.to_vec();
    buf.push(99);
    let e = codec.try_decode_udf("f", &buf).unwrap_err().to_string();
    assert!(e.contains("same segflow version"), "{e}");
}
