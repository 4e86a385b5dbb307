//! Rows into PostgreSQL by `COPY ... FROM STDIN (FORMAT binary)`: pgpq encodes each Arrow
//! batch in PostgreSQL's binary row format, which the server stores without parsing text.

use bytes::BytesMut;
use futures::{SinkExt as _, StreamExt as _};
use pgpq::ArrowToPostgresBinaryEncoder;
use segflow_core::datafusion::prelude::{DataFrame, cast, ident as col_ident};
use tokio_postgres::Transaction;

use super::connect::{Target, ident};
use super::schema::Column;
use crate::error::{ExportError, Result};

/// Bytes encoded before they are sent: large enough that the per-message cost vanishes,
/// small enough to keep memory flat.
const CHUNK: usize = 4 << 20;

/// COPYs the rows of `rows` (with `columns`, in that order) into `table` (quoted); returns
/// the rows the server took.
pub async fn copy_rows(
    tx: &Transaction<'_>,
    target: &Target,
    table: &str,
    columns: &[Column],
    rows: DataFrame,
) -> Result<u64> {
    let df_error = |e| {
        ExportError::Core(segflow_core::Error::DataFusion {
            stage: "export".into(),
            context: format!("reading the rows for {table}"),
            source: e,
        })
    };
    let rows = rows
        .select(
            columns
                .iter()
                .map(|c| cast(col_ident(&c.name), c.arrow.clone()).alias(&c.name))
                .collect::<Vec<_>>(),
        )
        .map_err(df_error)?;
    let schema = rows.schema().as_arrow().clone();
    let mut encoder = ArrowToPostgresBinaryEncoder::try_new(&schema)
        .map_err(|e| ExportError::Mismatch(format!("{table}: {e}")))?;
    let names: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
    let statement = format!(
        "COPY {table} ({}) FROM STDIN (FORMAT binary)",
        names.join(", ")
    );
    let context = || format!("COPY into {table}");
    let sink = tx
        .copy_in(&statement)
        .await
        .map_err(|e| target.error(context(), e))?;
    futures::pin_mut!(sink);
    let mut stream = rows.execute_stream().await.map_err(df_error)?;
    let mut buf = BytesMut::with_capacity(CHUNK * 2);
    encoder
        .write_header(&mut buf)
        .map_err(|e| ExportError::Mismatch(format!("{table}: {e}")))?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(df_error)?;
        encoder
            .write_batch(&batch, &mut buf)
            .map_err(|e| ExportError::Mismatch(format!("{table}: {e}")))?;
        if buf.len() >= CHUNK {
            sink.send(buf.split().freeze())
                .await
                .map_err(|e| target.error(context(), e))?;
        }
    }
    encoder
        .write_footer(&mut buf)
        .map_err(|e| ExportError::Mismatch(format!("{table}: {e}")))?;
    sink.send(buf.freeze())
        .await
        .map_err(|e| target.error(context(), e))?;
    sink.as_mut()
        .finish()
        .await
        .map_err(|e| target.error(context(), e))
}
