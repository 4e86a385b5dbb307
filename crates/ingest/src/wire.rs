//! This crate's plan pieces as bytes, for a distributed engine's codecs
//! (`segflow-distributed`): the ingest's table and scan, and the key functions.
//!
//! A scan travels as what it was built from (the files and where to cut them, the format,
//! the contract as written, how each column parses, the ingest's clock), not as its built
//! checks: the process that runs it builds them again, with the same code. The key set of a
//! foreign-key check travels as its key columns in Arrow IPC, and is indexed again where it
//! is used: a few megabytes for a million keys, sent with each task that checks keys. Every
//! encoding starts with a tag byte, so that one decoder tells the pieces apart.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use segflow_core::datafusion::arrow::array::RecordBatch;
use segflow_core::datafusion::arrow::ipc::reader::StreamReader;
use segflow_core::datafusion::arrow::ipc::writer::StreamWriter;
use segflow_core::datafusion::catalog::TableProvider;
use segflow_core::datafusion::common::parsers::CompressionTypeVariant;
use segflow_core::datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use segflow_core::datafusion::error::{DataFusionError, Result};
use segflow_core::datafusion::logical_expr::ScalarUDF;
use segflow_core::datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::contract::Contract;
use crate::key_hash::KeyHash;
use crate::key_set::{KeyIn, KeySet};
use crate::row_checks::RowChecks;
use crate::source::scan::IngestScan;
use crate::source::{Dialect, ExtraKeys, FileSource, Format, IngestTable, Piece, meta_fields};
use crate::validate::Parse;

const TABLE: u8 = 1;
const SCAN: u8 = 2;
const KEY_HASH: u8 = 3;
const KEY_IN: u8 = 4;

/// What a scan's checks were built from, kept so that they can be built again elsewhere.
#[derive(Debug, Clone)]
pub(crate) struct ChecksSource {
    pub contract: Contract,
    pub parses: Vec<Parse>,
    /// The ingest's clock (`max: now` bounds).
    pub now: DateTime<Utc>,
    /// `extra_columns: fail`: an NDJSON key the contract lacks fails the stage.
    pub extra_keys_fail: bool,
}

impl ChecksSource {
    /// The row checks, built as the stage built them.
    pub fn checks(&self) -> Result<RowChecks> {
        RowChecks::new(&self.contract, &self.parses, self.now, meta_fields())
            .map_err(DataFusionError::Plan)
    }
}

#[derive(Serialize, Deserialize)]
struct ScanWire {
    files: Vec<FileWire>,
    format: FormatWire,
    contract_file: String,
    contract_text: String,
    parses: Vec<Option<String>>,
    now: DateTime<Utc>,
    extra_keys_fail: bool,
    /// A scan's projection; none for a table.
    projection: Option<Vec<usize>>,
}

#[derive(Serialize, Deserialize)]
enum FormatWire {
    Csv {
        delimiter: u8,
        quote: u8,
        header_line: usize,
    },
    Ndjson,
    Parquet,
}

#[derive(Serialize, Deserialize)]
struct FileWire {
    url: Url,
    size: u64,
    compression: String,
    names: Vec<String>,
    positions: Vec<Option<usize>>,
    header: Vec<String>,
    /// `(start, end, first_line)`.
    pieces: Vec<(u64, u64, u64)>,
}

fn encode_scan_parts(
    files: &[FileSource],
    format: &Format,
    source: &ChecksSource,
    projection: Option<Vec<usize>>,
) -> ScanWire {
    ScanWire {
        files: files
            .iter()
            .map(|f| FileWire {
                url: f.url.clone(),
                size: f.size,
                compression: f.compression.get_variant().to_string(),
                names: f.names.clone(),
                positions: f.positions.clone(),
                header: f.header.clone(),
                pieces: f
                    .pieces
                    .iter()
                    .map(|p| (p.start, p.end, p.first_line))
                    .collect(),
            })
            .collect(),
        format: match format {
            Format::Csv(d) => FormatWire::Csv {
                delimiter: d.delimiter,
                quote: d.quote,
                header_line: d.header_line,
            },
            Format::Ndjson => FormatWire::Ndjson,
            Format::Parquet => FormatWire::Parquet,
        },
        contract_file: source.contract.file.display().to_string(),
        contract_text: source.contract.text.clone(),
        parses: source.parses.iter().map(|p| p.format.clone()).collect(),
        now: source.now,
        extra_keys_fail: source.extra_keys_fail,
        projection,
    }
}

/// The pieces of a scan, rebuilt.
struct Decoded {
    files: Vec<FileSource>,
    format: Format,
    source: ChecksSource,
    projection: Option<Vec<usize>>,
}

fn decode_scan_parts(wire: ScanWire) -> Result<Decoded> {
    let files = wire
        .files
        .into_iter()
        .map(|f| {
            let variant: CompressionTypeVariant = f.compression.parse()?;
            Ok(FileSource {
                url: f.url,
                size: f.size,
                compression: FileCompressionType::from(variant),
                names: f.names,
                positions: f.positions,
                header: f.header,
                pieces: f
                    .pieces
                    .into_iter()
                    .map(|(start, end, first_line)| Piece {
                        start,
                        end,
                        first_line,
                    })
                    .collect(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let format = match wire.format {
        FormatWire::Csv {
            delimiter,
            quote,
            header_line,
        } => Format::Csv(Dialect {
            delimiter,
            quote,
            header_line,
        }),
        FormatWire::Ndjson => Format::Ndjson,
        FormatWire::Parquet => Format::Parquet,
    };
    let contract = Contract::parse(
        std::path::Path::new(&wire.contract_file),
        wire.contract_text,
    )
    .map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(Decoded {
        files,
        format,
        source: ChecksSource {
            contract,
            parses: wire
                .parses
                .into_iter()
                .map(|format| Parse { format })
                .collect(),
            now: wire.now,
            extra_keys_fail: wire.extra_keys_fail,
        },
        projection: wire.projection,
    })
}

fn tagged(tag: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(tag);
    out.extend(body);
    out
}

fn untag<'a>(bytes: &'a [u8], tag: u8, what: &str) -> Result<&'a [u8]> {
    match bytes.split_first() {
        Some((&t, body)) if t == tag => Ok(body),
        _ => Err(DataFusionError::Internal(format!(
            "the bytes are not an encoded {what}"
        ))),
    }
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| DataFusionError::External(Box::new(e)))
}

fn from_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| DataFusionError::External(Box::new(e)))
}

/// The bytes of an ingest's table; `None` when `table` is not one.
pub fn encode_table(table: &dyn TableProvider) -> Option<Result<Vec<u8>>> {
    let t = table.downcast_ref::<IngestTable>()?;
    let (files, format, source) = t.parts();
    Some(json(&encode_scan_parts(files, format, source, None)).map(|b| tagged(TABLE, b)))
}

/// An ingest's table from [`encode_table`]'s bytes.
pub fn decode_table(bytes: &[u8]) -> Result<Arc<dyn TableProvider>> {
    let d = decode_scan_parts(from_json(untag(bytes, TABLE, "ingest table")?)?)?;
    let checks = Arc::new(d.source.checks()?);
    let extra_keys = ExtraKeys::new(d.source.extra_keys_fail);
    Ok(Arc::new(IngestTable::new(
        d.files,
        d.format,
        checks,
        Arc::new(d.source),
        extra_keys,
    )))
}

/// The bytes of an ingest's scan; `None` when `plan` is not one.
pub fn encode_scan(plan: &dyn ExecutionPlan) -> Option<Result<Vec<u8>>> {
    let s = plan.downcast_ref::<IngestScan>()?;
    let (files, format, source, projection) = s.parts();
    Some(
        json(&encode_scan_parts(
            files,
            format,
            source,
            projection.cloned(),
        ))
        .map(|b| tagged(SCAN, b)),
    )
}

/// An ingest's scan from [`encode_scan`]'s bytes, over `input`: the pieces it reads (which
/// travel as a plan of their own, an in-memory table). An NDJSON file's keys beyond the
/// contract are reported in the log of the process that reads it.
pub fn decode_scan(bytes: &[u8], input: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let d = decode_scan_parts(from_json(untag(bytes, SCAN, "ingest scan")?)?)?;
    let checks = Arc::new(d.source.checks()?);
    let extra_keys = ExtraKeys::new(d.source.extra_keys_fail);
    Ok(Arc::new(IngestScan::over(
        input,
        Arc::new(d.files),
        d.format,
        checks,
        Arc::new(d.source),
        extra_keys.reporting(),
        d.projection,
    )?))
}

/// The bytes of one of this crate's functions; `None` when `udf` is not one.
pub fn encode_udf(udf: &ScalarUDF) -> Option<Result<Vec<u8>>> {
    let inner = udf.inner();
    if inner.downcast_ref::<KeyHash>().is_some() {
        return Some(Ok(vec![KEY_HASH]));
    }
    let key_in = inner.downcast_ref::<KeyIn>()?;
    Some((|| {
        let (name, batch) = key_in.parts()?;
        let mut body = Vec::new();
        let name = name.as_bytes();
        body.extend((name.len() as u32).to_le_bytes());
        body.extend(name);
        let mut w = StreamWriter::try_new(&mut body, batch.schema_ref())?;
        w.write(&batch)?;
        w.finish()?;
        drop(w);
        Ok(tagged(KEY_IN, body))
    })())
}

/// One of this crate's functions from [`encode_udf`]'s bytes.
pub fn decode_udf(bytes: &[u8]) -> Result<Arc<ScalarUDF>> {
    match bytes.split_first() {
        Some((&KEY_HASH, _)) => Ok(Arc::new(KeyHash::udf())),
        Some((&KEY_IN, body)) => {
            let bad = || DataFusionError::Internal("truncated key set".into());
            let len = u32::from_le_bytes(
                body.get(..4)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            ) as usize;
            let name = std::str::from_utf8(body.get(4..4 + len).ok_or_else(bad)?)
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .to_string();
            let reader = StreamReader::try_new(&body[4 + len..], None)?;
            let schema = reader.schema();
            let batches = reader.collect::<std::result::Result<Vec<RecordBatch>, _>>()?;
            let types = schema
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect();
            let set = Arc::new(KeySet::new(types, &batches)?);
            Ok(Arc::new(set.udf(name)))
        }
        _ => Err(DataFusionError::Internal(
            "the bytes are not an encoded segflow-ingest function".into(),
        )),
    }
}

#[cfg(test)]
mod tests;
