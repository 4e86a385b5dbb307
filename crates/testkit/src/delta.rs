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
    let version = register(ctx, "t", url).await;
    (version, collect(ctx, sql).await)
}

/// Registers the Delta table at `url` in `ctx` as `name` (replacing any table of that name);
/// returns its current version.
pub async fn register(ctx: &SessionContext, name: &str, url: &Url) -> u64 {
    let table = publish::open_table(ctx, url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    let version = table.version().expect("loaded table has a version");
    table
        .update_datafusion_session(&ctx.state())
        .expect("register store");
    let provider = table.table_provider().await.expect("table provider");
    ctx.deregister_table(name).expect("deregister");
    ctx.register_table(name, Arc::clone(&provider))
        .expect("register");
    version
}

/// Runs `sql` in `ctx` and collects every batch.
pub async fn collect(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("plan {sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("run {sql}: {e}"))
}

/// Rows as strings (NULL for null), in the query's order.
pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    crate::slt::format_rows(batches).expect("formattable")
}
