//! The codecs that carry segflow's plan pieces between the client, the scheduler and the
//! executors: a logical one (the plan a client submits) and a physical one (the tasks the
//! scheduler hands out). Each knows segflow's pieces and passes everything else to Ballista's
//! own codec, which in turn knows DataFusion's.
//!
//! | piece                              | logical | physical | carried as                      |
//! |------------------------------------|---------|----------|---------------------------------|
//! | `WriteFiles` / `WriteExec`         | node    | node     | its `WriteSpec` (JSON)          |
//! | an ingest's table / `IngestScan`   | table   | node     | files, format, contract as text |
//! | an in-memory table (`MemTable`)    | table   | (native) | Arrow IPC                       |
//! | a partitioned table's files        | table   | (native) | files, sizes, partition values  |
//! | `key_hash`, `key_in_<table>`       | udf     | udf      | nothing / the keys (Arrow IPC)  |
//! | `kmeans_assign`                    | udf     | udf      | centers, ids, transforms        |
//! | `kmeans_pass`                      | udaf    | udaf     | the pass (its centers, draws)   |
//!
//! segflow's encodings start with [`MAGIC`] and a kind byte; bytes without it are Ballista's.

use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use segflow_core::datafusion::arrow::array::RecordBatch;
use segflow_core::datafusion::arrow::datatypes::SchemaRef;
use segflow_core::datafusion::arrow::ipc::reader::StreamReader;
use segflow_core::datafusion::arrow::ipc::writer::StreamWriter;
use segflow_core::datafusion::catalog::{MemTable, TableProvider};
use segflow_core::datafusion::common::TableReference;
use segflow_core::datafusion::datasource::file_format::FileFormatFactory;
use segflow_core::datafusion::error::{DataFusionError, Result};
use segflow_core::datafusion::execution::TaskContext;
use segflow_core::datafusion::logical_expr::{
    AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF,
};
use segflow_core::datafusion::physical_plan::ExecutionPlan;
use segflow_core::files::PartitionedFiles;
use segflow_core::write::{WriteExec, WriteFiles, WriteSpec};

/// What every segflow encoding starts with.
pub const MAGIC: &[u8; 4] = b"sgf\x01";

const WRITE: u8 = 1;
const INGEST: u8 = 2;
const MEMORY: u8 = 3;
const UDF_INGEST: u8 = 4;
const UDF_KMEANS: u8 = 5;
const UDAF_KMEANS: u8 = 6;
const FILES: u8 = 7;

fn envelope(kind: u8, body: &[u8], buf: &mut Vec<u8>) {
    buf.extend_from_slice(MAGIC);
    buf.push(kind);
    buf.extend_from_slice(body);
}

/// The kind and body of a segflow encoding; `None` for anyone else's bytes.
fn open(buf: &[u8]) -> Option<(u8, &[u8])> {
    let rest = buf.strip_prefix(MAGIC.as_slice())?;
    let (&kind, body) = rest.split_first()?;
    Some((kind, body))
}

fn unknown(kind: u8) -> DataFusionError {
    DataFusionError::Internal(format!(
        "a segflow plan piece of kind {kind}, which this segflow does not know; are the client, \
         scheduler and executors the same segflow version?"
    ))
}

fn json_spec(spec: &WriteSpec) -> Result<Vec<u8>> {
    serde_json::to_vec(spec).map_err(|e| DataFusionError::External(Box::new(e)))
}

fn spec_from(body: &[u8]) -> Result<WriteSpec> {
    serde_json::from_slice(body).map_err(|e| DataFusionError::External(Box::new(e)))
}

/// An in-memory table's partitions as Arrow IPC: a count, then per partition a length and an
/// IPC stream.
fn encode_memory(table: &MemTable, schema: &SchemaRef) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend((table.batches.len() as u32).to_le_bytes());
    for partition in &table.batches {
        let batches = partition.try_read().map_err(|_| {
            DataFusionError::Internal("an in-memory table is being written to".into())
        })?;
        let mut stream = Vec::new();
        let mut w = StreamWriter::try_new(&mut stream, schema)?;
        for b in batches.iter() {
            w.write(b)?;
        }
        w.finish()?;
        drop(w);
        out.extend((stream.len() as u64).to_le_bytes());
        out.extend(stream);
    }
    Ok(out)
}

fn decode_memory(body: &[u8], schema: SchemaRef) -> Result<MemTable> {
    let bad = || DataFusionError::Internal("truncated in-memory table".into());
    let count = u32::from_le_bytes(
        body.get(..4)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let mut at = 4;
    let mut partitions = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = u64::from_le_bytes(
            body.get(at..at + 8)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize;
        at += 8;
        let stream = body.get(at..at + len).ok_or_else(bad)?;
        at += len;
        let batches = StreamReader::try_new(stream, None)?
            .collect::<std::result::Result<Vec<RecordBatch>, _>>()?;
        partitions.push(batches);
    }
    if partitions.is_empty() {
        partitions.push(Vec::new());
    }
    MemTable::try_new(schema, partitions)
}

fn encode_udf(node: &ScalarUDF, buf: &mut Vec<u8>) -> Option<Result<()>> {
    if let Some(bytes) = segflow_ingest::wire::encode_udf(node) {
        return Some(bytes.map(|b| envelope(UDF_INGEST, &b, buf)));
    }
    let bytes = segflow_segment::kmeans::wire::encode_udf(node)?;
    envelope(UDF_KMEANS, &bytes, buf);
    Some(Ok(()))
}

fn decode_udf(buf: &[u8]) -> Option<Result<Arc<ScalarUDF>>> {
    let (kind, body) = open(buf)?;
    Some(match kind {
        UDF_INGEST => segflow_ingest::wire::decode_udf(body),
        UDF_KMEANS => segflow_segment::kmeans::wire::decode_udf(body),
        other => Err(unknown(other)),
    })
}

fn encode_udaf(node: &AggregateUDF, buf: &mut Vec<u8>) -> bool {
    match segflow_segment::kmeans::wire::encode_udaf(node) {
        Some(bytes) => {
            envelope(UDAF_KMEANS, &bytes, buf);
            true
        }
        None => false,
    }
}

fn decode_udaf(buf: &[u8]) -> Option<Result<Arc<AggregateUDF>>> {
    let (kind, body) = open(buf)?;
    Some(match kind {
        UDAF_KMEANS => segflow_segment::kmeans::wire::decode_udaf(body),
        other => Err(unknown(other)),
    })
}

/// segflow's logical codec, over Ballista's.
#[derive(Debug, Default)]
pub struct LogicalCodec {
    inner: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        let Some((kind, body)) = open(buf) else {
            return self.inner.try_decode(buf, inputs, ctx);
        };
        match (kind, inputs) {
            (WRITE, [input]) => Ok(Extension {
                node: Arc::new(WriteFiles::try_new(input.clone(), spec_from(body)?)?),
            }),
            (WRITE, _) => Err(DataFusionError::Internal(
                "WriteFiles takes one input".into(),
            )),
            (other, _) => Err(unknown(other)),
        }
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        match node.node.as_any().downcast_ref::<WriteFiles>() {
            Some(write) => {
                envelope(WRITE, &json_spec(&write.spec)?, buf);
                Ok(())
            }
            None => self.inner.try_encode(node, buf),
        }
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match open(buf) {
            Some((INGEST, body)) => segflow_ingest::wire::decode_table(body),
            Some((MEMORY, body)) => Ok(Arc::new(decode_memory(body, schema)?)),
            Some((FILES, body)) => Ok(Arc::new(PartitionedFiles::decode(body, schema)?)),
            Some((other, _)) => Err(unknown(other)),
            None => self
                .inner
                .try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(bytes) = segflow_ingest::wire::encode_table(node.as_ref()) {
            envelope(INGEST, &bytes?, buf);
            return Ok(());
        }
        if let Some(files) = node.downcast_ref::<PartitionedFiles>() {
            envelope(FILES, &files.encode()?, buf);
            return Ok(());
        }
        if let Some(memory) = node.downcast_ref::<MemTable>() {
            envelope(MEMORY, &encode_memory(memory, &node.schema())?, buf);
            return Ok(());
        }
        self.inner.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        match decode_udf(buf) {
            Some(udf) => udf,
            None => self.inner.try_decode_udf(name, buf),
        }
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        match encode_udf(node, buf) {
            Some(done) => done,
            None => self.inner.try_encode_udf(node, buf),
        }
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        match decode_udaf(buf) {
            Some(udaf) => udaf,
            None => self.inner.try_decode_udaf(name, buf),
        }
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        if encode_udaf(node, buf) {
            return Ok(());
        }
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}

/// segflow's physical codec, over Ballista's.
#[derive(Debug, Default)]
pub struct PhysicalCodec {
    inner: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some((kind, body)) = open(buf) else {
            return self.inner.try_decode(buf, inputs, ctx, proto_converter);
        };
        match (kind, inputs) {
            (WRITE, [input]) => Ok(Arc::new(WriteExec::try_new(
                input.clone(),
                spec_from(body)?,
            )?)),
            (WRITE, _) => Err(DataFusionError::Internal(
                "WriteExec takes one input".into(),
            )),
            (INGEST, [pieces]) => segflow_ingest::wire::decode_scan(body, pieces.clone()),
            (INGEST, _) => Err(DataFusionError::Internal(
                "IngestScan reads one input: its pieces".into(),
            )),
            (other, _) => Err(unknown(other)),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(write) = node.downcast_ref::<WriteExec>() {
            envelope(WRITE, &json_spec(write.spec())?, buf);
            return Ok(());
        }
        if let Some(bytes) = segflow_ingest::wire::encode_scan(node.as_ref()) {
            envelope(INGEST, &bytes?, buf);
            return Ok(());
        }
        self.inner.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        match decode_udf(buf) {
            Some(udf) => udf,
            None => self.inner.try_decode_udf(name, buf),
        }
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        match encode_udf(node, buf) {
            Some(done) => done,
            None => self.inner.try_encode_udf(node, buf),
        }
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        match decode_udaf(buf) {
            Some(udaf) => udaf,
            None => self.inner.try_decode_udaf(name, buf),
        }
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        if encode_udaf(node, buf) {
            return Ok(());
        }
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}

#[cfg(test)]
mod tests;
