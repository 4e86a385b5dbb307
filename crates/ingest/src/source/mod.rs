//! The ingest's sources: one reader per file format, and the leaf plan that runs them.
//!
//! Every reader keeps what a quarantine needs (the file and line every record came from, and
//! records that do not parse at all), types and checks every batch against the contract
//! ([`crate::row_checks`]) and yields these columns:
//!
//! | column           | type   | meaning                                                       |
//! |------------------|--------|---------------------------------------------------------------|
//! | `_source_file`   | string | URL of the file (dictionary-encoded: one value per batch)     |
//! | `_line_number`   | bigint | 1-based line the record starts on; the header is line 1       |
//! | `_raw_record`    | string | the record's text (invalid UTF-8 replaced by U+FFFD), kept    |
//! |                  |        | only where it cannot be read again by offset (see [`csv`])    |
//! | `_raw_offset`    | bigint | where that text starts in the file's (decompressed) bytes     |
//! | `_raw_length`    | bigint | its length in bytes                                           |
//! | `_reason`, `_column`, `_message` | string | the row's first problem; null for a good row  |
//!
//! then one column per contract column, typed (null where empty or bad). A record the reader
//! cannot use (a short row, invalid UTF-8, a line that is not a JSON object) has all of them
//! null.
//!
//! A format is a [`FormatReader`]: how many partitions a file reads as, and the rows of one.
//! [`IngestScan`](scan::IngestScan) is the plan over all of a stage's files, one partition per
//! file or piece of a file. It holds plain data (the files, the format and its options, the
//! checks made from the contract) and finds each file's store in the task's runtime, so that a
//! distributed engine can ship it to where it runs; a `StreamingTable` of partition streams
//! could not be.

pub(crate) mod csv;
mod input;
pub(crate) mod ndjson;
pub(crate) mod parquet;
mod rows;
pub(crate) mod scan;
mod split;

use std::sync::Arc;

use object_store::ObjectStore;
use segflow_core::datafusion::arrow::datatypes::{DataType, Field};
use segflow_core::datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use segflow_core::datafusion::logical_expr::{Expr, cast, ident};
use segflow_core::datafusion::physical_plan::SendableRecordBatchStream;
use url::Url;

pub use csv::Dialect;
pub(crate) use input::read_start;
pub(crate) use ndjson::ExtraKeys;
pub(crate) use rows::Problem;
pub(crate) use scan::IngestTable;
pub use split::Piece;

use crate::row_checks::RowChecks;

/// Rows per batch the reader yields.
pub(crate) const BATCH_ROWS: usize = 8192;

pub const SOURCE_FILE: &str = "_source_file";
pub const LINE_NUMBER: &str = "_line_number";
pub const RAW_RECORD: &str = "_raw_record";
/// Where a record's text is in its file, so that it can be read again ([`crate::raw_text`])
/// for the few rows a later check quarantines; null where the reader cannot say (Parquet).
pub const RAW_OFFSET: &str = "_raw_offset";
pub const RAW_LENGTH: &str = "_raw_length";

/// A source file format and its options.
#[derive(Debug, Clone)]
pub enum Format {
    /// Delimited text with a header row.
    Csv(Dialect),
    /// One JSON object per line.
    Ndjson,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// The name users write (`kind: ingest.<name>`).
    pub fn name(&self) -> &'static str {
        match self {
            Format::Csv(_) => "csv",
            Format::Ndjson => "ndjson",
            Format::Parquet => "parquet",
        }
    }

    /// The reader of files in this format.
    pub(crate) fn reader(&self) -> &dyn FormatReader {
        match self {
            Format::Csv(dialect) => dialect,
            Format::Ndjson => &ndjson::NdjsonReader,
            Format::Parquet => &parquet::ParquetReader,
        }
    }
}

/// One file to read, and where each target column sits in its records.
#[derive(Debug, Clone)]
pub struct FileSource {
    pub url: Url,
    pub size: u64,
    pub compression: FileCompressionType,
    /// For each target column, the name it has in the file (its header, key or field).
    pub names: Vec<String>,
    /// For each target column, its field index in this file's header (`None`: not in this
    /// file, always null). NDJSON records name their keys, so they go by `names` instead.
    pub positions: Vec<Option<usize>>,
    /// The file's column names: its header, its schema, or the keys of its first records.
    pub header: Vec<String>,
    /// Where to cut a CSV file into partitions; empty: the whole file is one.
    pub pieces: Vec<Piece>,
}

/// The type of [`SOURCE_FILE`]: a dictionary, since every row of a batch has the same file.
/// As plain text, the URL was the widest value of a staged order (47 of about 130 bytes per
/// row at M) in every run table and hash key that carries it; a dictionary column is its
/// keys on disk and in memory, and its value is hashed once per batch.
fn source_file_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// [`SOURCE_FILE`] as text, for the tables the ingest hands on (staging, the quarantine),
/// whose documented `source_file` column is a plain string.
pub fn source_file_text() -> Expr {
    cast(ident(SOURCE_FILE), DataType::Utf8)
}

/// The columns every reader yields before the checked ones ([`RowChecks::schema`]).
pub fn meta_fields() -> Vec<Field> {
    vec![
        Field::new(SOURCE_FILE, source_file_type(), false),
        Field::new(LINE_NUMBER, DataType::Int64, false),
        Field::new(RAW_RECORD, DataType::Utf8, true),
        Field::new(RAW_OFFSET, DataType::Int64, true),
        Field::new(RAW_LENGTH, DataType::Int64, true),
    ]
}

/// A file format's reader.
pub(crate) trait FormatReader: std::fmt::Debug + Send + Sync {
    /// How many partitions `file` is read as: one, unless the reader can cut it.
    fn partitions(&self, _file: &FileSource) -> usize {
        1
    }

    /// The checked rows of partition `part` of `file`, streamed.
    fn read(&self, file: &FileSource, part: usize, reading: &Reading) -> SendableRecordBatchStream;
}

/// What a reader is given besides its file.
pub(crate) struct Reading {
    pub checks: Arc<RowChecks>,
    /// The file's store.
    pub store: Arc<dyn ObjectStore>,
    /// Where an NDJSON reader reports keys the contract does not have.
    pub extra_keys: ExtraKeys,
}
