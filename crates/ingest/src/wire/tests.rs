//! Round trips: what decodes from the bytes reads the same rows as what was encoded.

use std::sync::Arc;

use segflow_core::datafusion::arrow::array::{Array, AsArray, RecordBatch};
use segflow_core::datafusion::arrow::datatypes::DataType;
use segflow_core::datafusion::logical_expr::{Expr, ident};
use segflow_core::datafusion::physical_plan::{ExecutionPlan, common, displayable};
use segflow_core::datafusion::prelude::SessionContext;

use super::*;
use crate::key_hash::tests::batch;
use crate::source::scan::tests::table;

/// Every partition's rows of `plan`, in partition order.
async fn rows(plan: &Arc<dyn ExecutionPlan>, ctx: &SessionContext) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for p in 0..plan.properties().output_partitioning().partition_count() {
        out.extend(
            common::collect(plan.execute(p, ctx.task_ctx()).unwrap())
                .await
                .unwrap(),
        );
    }
    out
}

#[tokio::test]
async fn an_ingest_table_and_its_scan_read_the_same_rows_after_a_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = SessionContext::new();
    let original = table(dir.path(), &["a", "b", "c", "d", "e"], 2);
    let bytes = encode_table(&original).expect("an ingest table").unwrap();
    let decoded = decode_table(&bytes).unwrap();
    assert_eq!(decoded.schema(), original.schema());

    // Scans with a projection, planned from each table, and the scan itself sent on.
    let projection = Some(vec![1, original.schema().fields().len() - 1]);
    let a = original
        .scan(&ctx.state(), projection.as_ref(), &[], None)
        .await
        .unwrap();
    let b = decoded
        .scan(&ctx.state(), projection.as_ref(), &[], None)
        .await
        .unwrap();
    let pieces = a.children()[0].clone();
    let c = decode_scan(
        &encode_scan(a.as_ref()).expect("an ingest scan").unwrap(),
        pieces,
    )
    .unwrap();
    let shown = |p: &Arc<dyn ExecutionPlan>| displayable(p.as_ref()).one_line().to_string();
    assert_eq!(shown(&a), shown(&b));
    assert_eq!(shown(&a), shown(&c));
    let expected = rows(&a, &ctx).await;
    assert_eq!(expected.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
    assert_eq!(rows(&b, &ctx).await, expected);
    assert_eq!(rows(&c, &ctx).await, expected);
}

#[tokio::test]
async fn key_functions_answer_the_same_after_a_round_trip() {
    let target = batch(
        vec![Some("a"), Some("b"), None],
        vec![Some(1), Some(2), Some(3)],
    );
    let probe = batch(
        vec![Some("a"), Some("b"), Some("c"), None],
        vec![Some(1), Some(1), Some(1), Some(3)],
    );
    let set = Arc::new(KeySet::new(vec![DataType::Utf8, DataType::Int64], &[target]).unwrap());
    let key_in = set.udf("key_in_t".into());
    let hash = KeyHash::udf();
    let round =
        |u: &ScalarUDF| decode_udf(&encode_udf(u).expect("a segflow function").unwrap()).unwrap();
    let (key_in2, hash2) = (round(&key_in), round(&hash));
    assert_eq!(key_in2.name(), "key_in_t");
    assert_eq!(hash2.name(), "key_hash");
    let args = || vec![ident("id"), ident("n")];
    let eval = |f: Expr| async {
        SessionContext::new()
            .read_batch(probe.clone())
            .unwrap()
            .select(vec![f.alias("v")])
            .unwrap()
            .collect()
            .await
            .unwrap()
    };
    let found =
        |b: Vec<RecordBatch>| -> Vec<Option<bool>> { b[0].column(0).as_boolean().iter().collect() };
    assert_eq!(
        found(eval(key_in.call(args())).await),
        found(eval(key_in2.call(args())).await)
    );
    assert_eq!(
        found(eval(key_in2.call(args())).await),
        [Some(true), Some(false), Some(false), None]
    );
    let hashed = |b: Vec<RecordBatch>| b[0].column(0).to_data();
    assert_eq!(
        hashed(eval(hash.call(args())).await),
        hashed(eval(hash2.call(args())).await)
    );
    // Not this crate's: no bytes.
    assert!(
        encode_udf(
            &segflow_core::datafusion::functions::string::upper()
                .as_ref()
                .clone()
        )
        .is_none()
    );
}
