//! Reading published Delta tables back through DataFusion.

use std::sync::Arc;

use segflow_core::datafusion::arrow::record_batch::RecordBatch;
use segflow_core::datafusion::prelude::SessionContext;
use segflow_core::publish;
use url::Url;

/// The table's current version and all its rows, via `sql` over the table registered as `t`.
pub async fn query(url: &Url, sql: &str) -> (u64, Vec<RecordBatch>) {
    query_in(&SessionContext::new(), url, sql).await
}

/// [`query`] in `ctx`, whose object stores (registered beforehand, e.g. a test S3 server's)
/// serve the table.
pub async fn query_in(ctx: &SessionContext, url: &Url, sql: &str) -> (u64, Vec<RecordBatch>) {
    let table = publish::open_table(ctx, url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    let version = table.version().expect("loaded table has a version");
    table
        .update_datafusion_session(&ctx.state())
        .expect("register store");
    let provider = table.table_provider().await.expect("table provider");
    ctx.deregister_table("t").expect("deregister");
    ctx.register_table("t", Arc::clone(&provider))
        .expect("register");
    let batches = ctx
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("collect");
    (version, batches)
}

/// Rows as strings (NULL for null), in the query's order.
pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    crate::slt::format_rows(batches).expect("formattable")
}
