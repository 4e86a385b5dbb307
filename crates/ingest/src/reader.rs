//! A CSV source that keeps what a quarantine needs: the file and line every record came from,
//! its raw text, and records that do not parse at all.
//!
//! DataFusion's CSV reader fails a whole file on one short row or one invalid UTF-8 byte, and
//! does not say which line a row came from. This source reads each file with the `csv` crate
//! (RFC 4180 quoting, line tracking), streams it through DataFusion's decompression, and yields
//! every value as text plus these columns, so that typing and validation stay vectorized
//! DataFusion expressions over Arrow arrays:
//!
//! | column           | type   | meaning                                                       |
//! |------------------|--------|---------------------------------------------------------------|
//! | `_source_file`   | string | URL of the file                                               |
//! | `_line_number`   | bigint | 1-based line the record starts on; the header is line 1       |
//! | `_raw_record`    | string | the record's text (invalid UTF-8 replaced by U+FFFD)          |
//! | `_parse_error`   | string | `column_count` or `invalid_utf8` when the record is unusable  |
//! | `_parse_column`  | string | the column with invalid UTF-8                                 |
//! | `_parse_message` | string | what is wrong, for a human                                    |
//!
//! then one nullable string column per target column (empty field = null). A record with a
//! parse error has all target columns null. One file is one partition; DataFusion spreads the
//! casts and checks over all cores after the scan.

use std::io::Read;
use std::sync::Arc;

use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt as _};
use segflow_core::datafusion::arrow::array::{ArrayRef, Int64Builder, RecordBatch, StringBuilder};
use segflow_core::datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use segflow_core::datafusion::catalog::streaming::StreamingTable;
use segflow_core::datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use segflow_core::datafusion::error::{DataFusionError, Result as DfResult};
use segflow_core::datafusion::execution::TaskContext;
use segflow_core::datafusion::physical_plan::SendableRecordBatchStream;
use segflow_core::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use segflow_core::datafusion::physical_plan::streaming::PartitionStream;
use url::Url;

/// Rows per batch the reader yields.
pub(crate) const BATCH_ROWS: usize = 8192;

pub const SOURCE_FILE: &str = "_source_file";
pub const LINE_NUMBER: &str = "_line_number";
pub const RAW_RECORD: &str = "_raw_record";
pub const PARSE_ERROR: &str = "_parse_error";
pub const PARSE_COLUMN: &str = "_parse_column";
pub const PARSE_MESSAGE: &str = "_parse_message";

/// CSV dialect options.
#[derive(Debug, Clone)]
pub struct Dialect {
    pub delimiter: u8,
    pub quote: u8,
    /// Where the header is; records before it are skipped (some exports have a title line).
    pub header_line: usize,
}

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
}

/// The schema the reader yields for these target columns.
pub fn raw_schema(columns: &[String]) -> SchemaRef {
    let mut fields = vec![
        Field::new(SOURCE_FILE, DataType::Utf8, false),
        Field::new(LINE_NUMBER, DataType::Int64, false),
        Field::new(RAW_RECORD, DataType::Utf8, false),
        Field::new(PARSE_ERROR, DataType::Utf8, true),
        Field::new(PARSE_COLUMN, DataType::Utf8, true),
        Field::new(PARSE_MESSAGE, DataType::Utf8, true),
    ];
    fields.extend(columns.iter().map(|c| Field::new(c, DataType::Utf8, true)));
    Arc::new(Schema::new(fields))
}

/// A table over the files, one partition each. Keys an NDJSON record has beyond the
/// contract's are added to `extra_keys`, for the stage to report.
pub fn table(
    store: Arc<dyn ObjectStore>,
    columns: &[String],
    files: Vec<FileSource>,
    format: &Format,
    extra_keys: crate::ndjson::ExtraKeys,
) -> DfResult<StreamingTable> {
    let schema = raw_schema(columns);
    let partitions: Vec<Arc<dyn PartitionStream>> = files
        .into_iter()
        .map(|file| {
            let schema = schema.clone();
            let store = store.clone();
            match format {
                Format::Csv(dialect) => Arc::new(CsvPartition {
                    schema,
                    store,
                    file,
                    dialect: dialect.clone(),
                }) as Arc<dyn PartitionStream>,
                Format::Ndjson => Arc::new(crate::ndjson::NdjsonPartition {
                    schema,
                    store,
                    file,
                    extra_keys: extra_keys.clone(),
                }),
                Format::Parquet => Arc::new(crate::parquet::ParquetPartition {
                    schema,
                    store,
                    file,
                }),
            }
        })
        .collect();
    StreamingTable::try_new(schema, partitions)
}

/// Reads the header record of a file: its fields, trimmed of a UTF-8 byte order mark.
pub async fn read_header(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
    compression: FileCompressionType,
    dialect: &Dialect,
) -> Result<Vec<String>, String> {
    let dialect = dialect.clone();
    read_start(store, url, compression, move |input| {
        let mut reader = builder(&dialect).from_reader(input);
        let mut record = csv::ByteRecord::new();
        for _ in 0..dialect.header_line {
            match reader.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => return Err("the file is empty: it has no header row".to_string()),
                Err(e) => return Err(e.to_string()),
            }
        }
        record
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let f = if i == 0 {
                    f.strip_prefix(b"\xef\xbb\xbf").unwrap_or(f)
                } else {
                    f
                };
                String::from_utf8(f.to_vec())
                    .map(|s| s.trim().to_string())
                    .map_err(|_| format!("header field {} is not valid UTF-8", i + 1))
            })
            .collect()
    })
    .await
}

/// Runs `read` on a blocking thread over the start of the file's (decompressed) bytes, and
/// stops fetching the rest once it returns: for headers and samples before a stage reads.
pub(crate) async fn read_start<T: Send + 'static>(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
    compression: FileCompressionType,
    read: impl FnOnce(ChannelReader) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let feed = tokio::spawn(feed_bytes(store.clone(), url.clone(), compression, tx));
    let out = tokio::task::spawn_blocking(move || read(ChannelReader::new(rx)))
        .await
        .map_err(|e| e.to_string());
    feed.abort();
    out?
}

fn builder(dialect: &Dialect) -> csv::ReaderBuilder {
    let mut b = csv::ReaderBuilder::new();
    b.has_headers(false)
        .flexible(true)
        .delimiter(dialect.delimiter)
        .quote(dialect.quote);
    b
}

#[derive(Debug)]
struct CsvPartition {
    schema: SchemaRef,
    store: Arc<dyn ObjectStore>,
    file: FileSource,
    dialect: Dialect,
}

impl PartitionStream for CsvPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let parser = Parser {
            schema: self.schema.clone(),
            file: self.file.clone(),
            dialect: self.dialect.clone(),
        };
        parse_blocking(
            self.schema.clone(),
            self.store.clone(),
            &self.file,
            true,
            move |input, out| parser.run(input, out),
        )
    }
}

/// A stream of the batches `parse` makes from the file's (decompressed) bytes on a blocking
/// thread, while an async task feeds it the bytes. `record` keeps the bytes read for
/// [`ChannelReader::seen`] (the CSV reader slices raw records from them).
pub(crate) fn parse_blocking(
    schema: SchemaRef,
    store: Arc<dyn ObjectStore>,
    file: &FileSource,
    record: bool,
    parse: impl FnOnce(ChannelReader, &BatchSender) -> DfResult<()> + Send + 'static,
) -> SendableRecordBatchStream {
    let (bytes_tx, bytes_rx) = tokio::sync::mpsc::channel(8);
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel::<DfResult<RecordBatch>>(2);
    let feed = tokio::spawn(feed_bytes(
        store,
        file.url.clone(),
        file.compression,
        bytes_tx,
    ));
    tokio::task::spawn_blocking(move || {
        let mut input = ChannelReader::new(bytes_rx);
        input.record = record;
        if let Err(e) = parse(input, &batch_tx) {
            let _ = batch_tx.blocking_send(Err(e));
        }
        // The feeder may still be blocked on a full channel when the consumer stopped early.
        feed.abort();
    });
    let stream = futures::stream::unfold(batch_rx, |mut rx| async move {
        rx.recv().await.map(|b| (b, rx))
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

/// Where a blocking parser sends its batches.
pub(crate) type BatchSender = tokio::sync::mpsc::Sender<DfResult<RecordBatch>>;

/// Streams the object's (decompressed) bytes into a channel the blocking parser reads.
async fn feed_bytes(
    store: Arc<dyn ObjectStore>,
    url: Url,
    compression: FileCompressionType,
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
) {
    // The parser side receives with `blocking_recv` on its own blocking thread.
    let opened = async {
        let path = segflow_core::storage::store_path(&url).map_err(std::io::Error::other)?;
        let stream = store
            .get(&path)
            .await
            .map_err(std::io::Error::other)?
            .into_stream()
            .map(|r| r.map_err(DataFusionError::from))
            .boxed();
        compression
            .convert_stream(stream)
            .map_err(std::io::Error::other)
    };
    let mut stream = match opened.await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return;
        }
    };
    while let Some(chunk) = stream.next().await {
        let item = chunk.map_err(|e| std::io::Error::other(format!("reading {url}: {e}")));
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// A blocking `Read` over byte chunks from a channel; when `record` is set it remembers
/// everything it handed out since the last `trim`, so the parser can slice each record's raw
/// text.
pub(crate) struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
    record: bool,
    /// Bytes handed to the CSV reader, starting at stream offset `base`.
    seen: std::rc::Rc<std::cell::RefCell<Seen>>,
}

#[derive(Default)]
struct Seen {
    base: u64,
    bytes: Vec<u8>,
}

impl Seen {
    fn slice(&self, start: u64, end: u64) -> &[u8] {
        let s = (start.saturating_sub(self.base)) as usize;
        let e = ((end.saturating_sub(self.base)) as usize).min(self.bytes.len());
        &self.bytes[s.min(e)..e]
    }

    /// Forgets everything before stream offset `upto`.
    fn trim(&mut self, upto: u64) {
        let n = (upto.saturating_sub(self.base) as usize).min(self.bytes.len());
        self.bytes.drain(..n);
        self.base += n as u64;
    }
}

impl ChannelReader {
    pub(crate) fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>) -> Self {
        ChannelReader {
            rx,
            current: bytes::Bytes::new(),
            record: false,
            seen: Default::default(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0), // sender gone: end of the file
            }
        }
        let n = buf.len().min(self.current.len());
        let chunk = self.current.split_to(n);
        buf[..n].copy_from_slice(&chunk);
        if self.record {
            self.seen.borrow_mut().bytes.extend_from_slice(&chunk);
        }
        Ok(n)
    }
}

struct Parser {
    schema: SchemaRef,
    file: FileSource,
    dialect: Dialect,
}

/// Why a record cannot be used at all; its target columns are all null.
#[derive(Debug)]
pub(crate) struct Problem {
    pub code: &'static str,
    pub column: Option<String>,
    pub message: String,
}

/// Rows of the raw schema being built for one file, a batch at a time.
pub(crate) struct RowBuffer {
    schema: SchemaRef,
    url: String,
    line: Int64Builder,
    raw: StringBuilder,
    error: StringBuilder,
    column: StringBuilder,
    message: StringBuilder,
    values: Vec<StringBuilder>,
    rows: usize,
}

impl RowBuffer {
    pub(crate) fn new(schema: SchemaRef, url: &Url) -> Self {
        let width = schema.fields().len() - 6;
        RowBuffer {
            schema,
            url: url.to_string(),
            line: Int64Builder::with_capacity(BATCH_ROWS),
            raw: StringBuilder::new(),
            error: StringBuilder::new(),
            column: StringBuilder::new(),
            message: StringBuilder::new(),
            values: (0..width).map(|_| StringBuilder::new()).collect(),
            rows: 0,
        }
    }

    /// The target column names, in order.
    pub(crate) fn column_name(&self, i: usize) -> &str {
        self.schema.field(6 + i).name()
    }

    /// A usable record: one value per target column (`None` or empty: null).
    pub(crate) fn push<S: AsRef<str>>(&mut self, line: u64, raw: &str, values: &[Option<S>]) {
        self.line.append_value(line as i64);
        self.raw.append_value(raw);
        self.error.append_null();
        self.column.append_null();
        self.message.append_null();
        for (b, v) in self.values.iter_mut().zip(values) {
            match v.as_ref().map(AsRef::as_ref) {
                Some(t) if !t.is_empty() => b.append_value(t),
                _ => b.append_null(),
            }
        }
        self.rows += 1;
    }

    /// A record that cannot be used.
    pub(crate) fn push_problem(&mut self, line: u64, raw: &str, problem: Problem) {
        self.line.append_value(line as i64);
        self.raw.append_value(raw);
        self.error.append_value(problem.code);
        self.column.append_option(problem.column);
        self.message.append_value(problem.message);
        for b in &mut self.values {
            b.append_null();
        }
        self.rows += 1;
    }

    /// Whether a batch is full.
    pub(crate) fn full(&self) -> bool {
        self.rows >= BATCH_ROWS
    }

    /// The rows so far as a batch (`None` when there are none), starting a new one.
    pub(crate) fn take(&mut self) -> DfResult<Option<RecordBatch>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let rows = std::mem::take(&mut self.rows);
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(
                segflow_core::datafusion::arrow::array::StringArray::from_iter_values(
                    std::iter::repeat_n(self.url.as_str(), rows),
                ),
            ),
            Arc::new(self.line.finish()),
            Arc::new(self.raw.finish()),
            Arc::new(self.error.finish()),
            Arc::new(self.column.finish()),
            Arc::new(self.message.finish()),
        ];
        columns.extend(
            self.values
                .iter_mut()
                .map(|v| Arc::new(v.finish()) as ArrayRef),
        );
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
    }
}

impl Parser {
    fn run(&self, input: ChannelReader, out: &BatchSender) -> DfResult<()> {
        let seen = input.seen.clone();
        let mut reader = builder(&self.dialect).from_reader(input);
        let mut record = csv::ByteRecord::new();
        let url = self.file.url.as_str();
        let io_err = |e: csv::Error| DataFusionError::External(format!("{url}: {e}").into());
        // Skip up to and including the header.
        for _ in 0..self.dialect.header_line {
            if !reader.read_byte_record(&mut record).map_err(io_err)? {
                return Ok(());
            }
        }
        let width = self.file.header.len();
        let mut rows = RowBuffer::new(self.schema.clone(), &self.file.url);
        loop {
            let start = reader.position().clone();
            if !reader.read_byte_record(&mut record).map_err(io_err)? {
                break;
            }
            let end = reader.position().byte();
            // The reader's position is where the previous record ended: skip the blank
            // lines it passed over to find the record's own first line.
            let seen_now = seen.borrow();
            let (blank_lines, raw) = skip_blank_lines(seen_now.slice(start.byte(), end));
            let raw = String::from_utf8_lossy(trim_newline(raw));
            let line = start.line() + blank_lines;
            let mut field_text: Vec<Option<&str>> = Vec::with_capacity(self.file.positions.len());
            let mut problem = None;
            if record.len() != width {
                problem = Some(Problem {
                    code: "column_count",
                    column: None,
                    message: format!("has {} fields, the header has {width}", record.len()),
                });
            } else {
                for (i, p) in self.file.positions.iter().enumerate() {
                    let text = match p {
                        Some(p) => match std::str::from_utf8(&record[*p]) {
                            Ok(t) => Some(t),
                            Err(_) => {
                                problem = Some(Problem {
                                    code: "invalid_utf8",
                                    column: Some(rows.column_name(i).to_string()),
                                    message: "is not valid UTF-8".to_string(),
                                });
                                break;
                            }
                        },
                        None => None,
                    };
                    field_text.push(text);
                }
            }
            match problem {
                Some(p) => rows.push_problem(line, &raw, p),
                None => rows.push(line, &raw, &field_text),
            }
            drop(seen_now);
            if rows.full() {
                let batch = rows.take()?.expect("a full batch");
                if out.blocking_send(Ok(batch)).is_err() {
                    return Ok(()); // the consumer stopped reading
                }
                seen.borrow_mut().trim(reader.position().byte());
            }
        }
        if let Some(batch) = rows.take()? {
            let _ = out.blocking_send(Ok(batch));
        }
        Ok(())
    }
}

/// Leading empty lines and what follows them.
fn skip_blank_lines(raw: &[u8]) -> (u64, &[u8]) {
    let mut lines = 0;
    let mut r = raw;
    loop {
        match r {
            [b'\n', rest @ ..] => {
                lines += 1;
                r = rest;
            }
            [b'\r', b'\n', rest @ ..] => {
                lines += 1;
                r = rest;
            }
            _ => return (lines, r),
        }
    }
}

pub(crate) fn trim_newline(raw: &[u8]) -> &[u8] {
    let mut r = raw;
    while let [rest @ .., b'\n' | b'\r'] = r {
        r = rest;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newline_trimmed() {
        assert_eq!(trim_newline(b"a,b\r\n"), b"a,b");
        assert_eq!(trim_newline(b"a,b"), b"a,b");
        assert_eq!(skip_blank_lines(b"\n\r\na,b\n"), (2, &b"a,b\n"[..]));
    }

    #[test]
    fn seen_slices_and_trims() {
        let mut s = Seen::default();
        s.bytes.extend_from_slice(b"0123456789");
        assert_eq!(s.slice(2, 5), b"234");
        s.trim(4);
        assert_eq!(s.base, 4);
        assert_eq!(s.slice(4, 6), b"45");
        assert_eq!(s.slice(8, 20), b"89");
    }
}
