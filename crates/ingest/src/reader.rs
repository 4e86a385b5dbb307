//! A CSV source that keeps what a quarantine needs: the file and line every record came from,
//! its raw text, and records that do not parse at all.
//!
//! DataFusion's CSV reader fails a whole file on one short row or one invalid UTF-8 byte, and
//! does not say which line a row came from. This source reads each file with the `csv` crate
//! (RFC 4180 quoting, line tracking), streams it through DataFusion's decompression, types and
//! checks every batch against the contract ([`crate::row_checks`]) and yields these columns:
//!
//! | column           | type   | meaning                                                       |
//! |------------------|--------|---------------------------------------------------------------|
//! | `_source_file`   | string | URL of the file (dictionary-encoded: one value per batch)     |
//! | `_line_number`   | bigint | 1-based line the record starts on; the header is line 1       |
//! | `_raw_record`    | string | the record's text (invalid UTF-8 replaced by U+FFFD), kept    |
//! |                  |        | only where it cannot be read again by offset: see below       |
//! | `_raw_offset`    | bigint | where that text starts in the file's (decompressed) bytes     |
//! | `_raw_length`    | bigint | its length in bytes                                           |
//! | `_reason`, `_column`, `_message` | string | the row's first problem; null for a good row  |
//!
//! then one column per contract column, typed (null where empty or bad). A record the reader
//! cannot use (a short row, invalid UTF-8) has all of them null. A CSV record's text is kept
//! only when the reader itself finds it unusable: every other quarantined record is read again
//! from its file by offset ([`crate::raw_text`]), so a good row's text is never copied. A file is
//! one partition, or, when the stage has cut
//! a large uncompressed file at record boundaries ([`crate::split`]), one partition per piece, so
//! that parsing and everything after it runs on all cores. Local files are read directly on
//! the parsing thread; other stores' bytes are streamed to it.

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use futures::StreamExt;
use object_store::ObjectStore;
use segflow_core::datafusion::arrow::array::{
    ArrayRef, DictionaryArray, Int32Array, Int64Builder, RecordBatch, StringArray, StringBuilder,
};
use segflow_core::datafusion::arrow::datatypes::{DataType, Field, Int32Type, SchemaRef};
use segflow_core::datafusion::catalog::streaming::StreamingTable;
use segflow_core::datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use segflow_core::datafusion::error::{DataFusionError, Result as DfResult};
use segflow_core::datafusion::execution::TaskContext;
use segflow_core::datafusion::logical_expr::{Expr, cast, ident};
use segflow_core::datafusion::physical_plan::SendableRecordBatchStream;
use segflow_core::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use segflow_core::datafusion::physical_plan::streaming::PartitionStream;
use url::Url;

use crate::row_checks::RowChecks;
pub use crate::split::Piece;

/// Rows per batch the reader yields.
pub(crate) const BATCH_ROWS: usize = 8192;

pub const SOURCE_FILE: &str = "_source_file";
pub const LINE_NUMBER: &str = "_line_number";
pub const RAW_RECORD: &str = "_raw_record";
/// Where a record's text is in its file, so that it can be read again ([`crate::raw_text`])
/// for the few rows a later check quarantines; null where the reader cannot say (Parquet).
pub const RAW_OFFSET: &str = "_raw_offset";
pub const RAW_LENGTH: &str = "_raw_length";

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

/// A table over the files, one partition per file or piece of a file. Keys an NDJSON record
/// has beyond the contract's are added to `extra_keys`, for the stage to report.
pub fn table(
    store: Arc<dyn ObjectStore>,
    checks: Arc<RowChecks>,
    files: Vec<FileSource>,
    format: &Format,
    extra_keys: crate::ndjson::ExtraKeys,
) -> DfResult<StreamingTable> {
    let schema = checks.schema().clone();
    let mut partitions: Vec<Arc<dyn PartitionStream>> = Vec::new();
    for file in files {
        let checks = checks.clone();
        let store = store.clone();
        match format {
            Format::Csv(dialect) => {
                let pieces = match file.pieces.as_slice() {
                    [] | [_] => vec![None],
                    pieces => pieces.iter().cloned().map(Some).collect(),
                };
                for piece in pieces {
                    partitions.push(Arc::new(CsvPartition {
                        checks: checks.clone(),
                        store: store.clone(),
                        file: file.clone(),
                        dialect: dialect.clone(),
                        piece,
                    }));
                }
            }
            Format::Ndjson => partitions.push(Arc::new(crate::ndjson::NdjsonPartition {
                checks,
                store,
                file,
                extra_keys: extra_keys.clone(),
            })),
            Format::Parquet => partitions.push(Arc::new(crate::parquet::ParquetPartition {
                checks,
                store,
                file,
            })),
        }
    }
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

/// Cuts an uncompressed CSV file of `size` bytes into at most `pieces` pieces that each start
/// at a record boundary, reading it up to the last cut ([`crate::split`]).
pub async fn split(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
    size: u64,
    dialect: &Dialect,
    pieces: u64,
) -> Result<Vec<Piece>, String> {
    let dialect = dialect.clone();
    read_start(
        store,
        url,
        FileCompressionType::UNCOMPRESSED,
        move |mut input| {
            let mut splitter = crate::split::Splitter::new(
                dialect.delimiter,
                dialect.quote,
                dialect.header_line,
                size,
                pieces,
            );
            let mut buf = vec![0; 1 << 20];
            while !splitter.done() {
                let n = input.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                splitter.feed(&buf[..n]);
            }
            Ok(splitter.pieces(size))
        },
    )
    .await
}

/// Runs `read` on a blocking thread over the start of the file's (decompressed) bytes, and
/// stops fetching the rest once it returns: for headers and samples before a stage reads.
pub(crate) async fn read_start<T: Send + 'static>(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
    compression: FileCompressionType,
    read: impl FnOnce(InputReader) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let source = Source::open(store.clone(), url.clone(), compression, None)
        .await
        .map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || read(InputReader::new(source, false)))
        .await
        .map_err(|e| e.to_string())?
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
    checks: Arc<RowChecks>,
    store: Arc<dyn ObjectStore>,
    file: FileSource,
    dialect: Dialect,
    /// The part of the file to read; `None`: all of it.
    piece: Option<Piece>,
}

impl PartitionStream for CsvPartition {
    fn schema(&self) -> &SchemaRef {
        self.checks.schema()
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let parser = Parser {
            checks: self.checks.clone(),
            file: self.file.clone(),
            dialect: self.dialect.clone(),
            piece: self.piece.clone(),
        };
        parse_blocking(
            self.checks.schema().clone(),
            self.store.clone(),
            &self.file,
            self.piece.as_ref().map(|p| p.start..p.end),
            true,
            move |input, out| parser.run(input, out),
        )
    }
}

/// A stream of the batches `parse` makes from the file's (decompressed) bytes, or the bytes of
/// `range` of it, on a blocking thread. `record` keeps the bytes read for [`InputReader::seen`]
/// (the CSV reader slices raw records from them).
pub(crate) fn parse_blocking(
    schema: SchemaRef,
    store: Arc<dyn ObjectStore>,
    file: &FileSource,
    range: Option<Range<u64>>,
    record: bool,
    parse: impl FnOnce(InputReader, &BatchSender) -> DfResult<()> + Send + 'static,
) -> SendableRecordBatchStream {
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel::<DfResult<RecordBatch>>(2);
    let (url, compression) = (file.url.clone(), file.compression);
    let file_url = url.to_string();
    let task = tokio::spawn(async move {
        let source = match Source::open(store, url, compression, range).await {
            Ok(source) => source,
            Err(e) => {
                let _ = batch_tx.send(Err(DataFusionError::IoError(e))).await;
                return;
            }
        };
        let out = batch_tx.clone();
        let parsed = tokio::task::spawn_blocking(move || {
            if let Err(e) = parse(InputReader::new(source, record), &out) {
                let _ = out.blocking_send(Err(e));
            }
        });
        // A parser that panicked must fail the query, not end the stream as if the file had.
        if let Err(e) = parsed.await {
            let e = DataFusionError::Internal(format!("the parser of {file_url}: {e}"));
            let _ = batch_tx.send(Err(e)).await;
        }
    });
    // The consumer may stop early: the parser then sees the channel closed and returns.
    drop(task);
    let stream = futures::stream::unfold(batch_rx, |mut rx| async move {
        rx.recv().await.map(|b| (b, rx))
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

/// Where a blocking parser sends its batches.
pub(crate) type BatchSender = tokio::sync::mpsc::Sender<DfResult<RecordBatch>>;

/// Streams an object's (decompressed) bytes into a channel the blocking parser reads.
async fn feed_bytes(
    url: Url,
    stream: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    compression: FileCompressionType,
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
) {
    let stream = stream.map(|r| r.map_err(DataFusionError::from)).boxed();
    let mut stream = match compression.convert_stream(stream) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Err(std::io::Error::other(e))).await;
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

/// A blocking `Read` over a file's (decompressed) bytes: read directly from a local file, or
/// received in chunks from a task that streams them from the object store. When `record` is
/// set it remembers everything it handed out since the last `trim`, so the parser can slice
/// each record's raw text.
pub(crate) struct InputReader {
    source: Source,
    record: bool,
    /// Bytes handed to the CSV reader, starting at stream offset `base`.
    seen: std::rc::Rc<std::cell::RefCell<Seen>>,
}

/// Where an [`InputReader`] gets its bytes; opened in async code, read on a blocking thread.
pub(crate) enum Source {
    /// A local file, read on the parser's thread: no task and no channel per 8 KiB chunk.
    File(Box<dyn Read + Send>),
    Channel {
        rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
        current: bytes::Bytes,
        /// Aborted when the reader is dropped: it may be blocked on a full channel.
        feed: tokio::task::JoinHandle<()>,
    },
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Source::Channel { feed, .. } = self {
            feed.abort();
        }
    }
}

impl InputReader {
    fn new(source: Source, record: bool) -> Self {
        InputReader {
            source,
            record,
            seen: Default::default(),
        }
    }
}

impl Source {
    /// Opens the object at `url` (only `range` of it, when given; ranges are of the stored,
    /// uncompressed bytes).
    async fn open(
        store: Arc<dyn ObjectStore>,
        url: Url,
        compression: FileCompressionType,
        range: Option<Range<u64>>,
    ) -> std::io::Result<Self> {
        let path = segflow_core::storage::store_path(&url).map_err(std::io::Error::other)?;
        let options = object_store::GetOptions {
            range: range.map(object_store::GetRange::Bounded),
            ..Default::default()
        };
        let opened = store
            .get_opts(&path, options)
            .await
            .map_err(|e| std::io::Error::other(format!("reading {url}: {e}")))?;
        Ok(match opened.payload {
            object_store::GetResultPayload::File(mut file, _) => {
                use std::io::Seek;
                let range = opened.range;
                file.seek(std::io::SeekFrom::Start(range.start))?;
                let bytes =
                    std::io::BufReader::with_capacity(1 << 20, file).take(range.end - range.start);
                Source::File(
                    compression
                        .convert_read(bytes)
                        .map_err(std::io::Error::other)?,
                )
            }
            object_store::GetResultPayload::Stream(stream) => {
                let (tx, rx) = tokio::sync::mpsc::channel(8);
                let feed = tokio::spawn(feed_bytes(url, stream, compression, tx));
                Source::Channel {
                    rx,
                    current: bytes::Bytes::new(),
                    feed,
                }
            }
        })
    }
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

impl Read for InputReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = match &mut self.source {
            Source::File(file) => file.read(buf)?,
            Source::Channel { rx, current, .. } => {
                while current.is_empty() {
                    match rx.blocking_recv() {
                        Some(Ok(chunk)) => *current = chunk,
                        Some(Err(e)) => return Err(e),
                        None => return Ok(0), // sender gone: end of the file
                    }
                }
                let n = buf.len().min(current.len());
                buf[..n].copy_from_slice(&current.split_to(n));
                n
            }
        };
        if self.record {
            self.seen.borrow_mut().bytes.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

struct Parser {
    checks: Arc<RowChecks>,
    file: FileSource,
    dialect: Dialect,
    piece: Option<Piece>,
}

/// Why a record cannot be used at all; its target columns are all null.
#[derive(Debug)]
pub(crate) struct Problem {
    pub code: &'static str,
    pub column: Option<String>,
    pub message: String,
}

/// Rows being read from one file, a batch at a time: their fields as text until the batch
/// is full, then typed and checked ([`RowChecks::check`]).
pub(crate) struct RowBuffer {
    checks: Arc<RowChecks>,
    /// The file's URL, the one value of every batch's [`SOURCE_FILE`] dictionary.
    file: ArrayRef,
    line: Int64Builder,
    raw: StringBuilder,
    offset: Int64Builder,
    length: Int64Builder,
    /// The rows the reader could not use, by row of the batch.
    problems: Vec<(usize, Problem)>,
    values: Vec<StringBuilder>,
    rows: usize,
}

/// Where a record's text is, for the quarantine.
pub(crate) enum Raw<'a> {
    /// At `(offset, length)` in the file: read again from there if the row is quarantined.
    At(crate::raw_text::At),
    /// Here: the file cannot be read by offset (a JSON line, a Parquet row).
    Text(&'a str),
}

impl RowBuffer {
    pub(crate) fn new(checks: &Arc<RowChecks>, url: &Url) -> Self {
        RowBuffer {
            checks: checks.clone(),
            file: Arc::new(StringArray::from(vec![url.as_str()])),
            line: Int64Builder::with_capacity(BATCH_ROWS),
            raw: StringBuilder::new(),
            offset: Int64Builder::with_capacity(BATCH_ROWS),
            length: Int64Builder::with_capacity(BATCH_ROWS),
            problems: Vec::new(),
            // Sized for a batch up front: grown by doubling, each builder copies its bytes
            // again at every step (perf showed copies and fresh pages high in an ingest).
            values: (0..checks.width())
                .map(|_| StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 12))
                .collect(),
            rows: 0,
        }
    }

    /// The contract column names, in order.
    pub(crate) fn column_name(&self, i: usize) -> &str {
        self.checks.column_name(i)
    }

    /// A usable record: one value per contract column (`None` or empty: null).
    pub(crate) fn push<S: AsRef<str>>(&mut self, line: u64, raw: Raw<'_>, values: &[Option<S>]) {
        self.push_fields(line, raw, |i| values[i].as_ref().map(AsRef::as_ref));
    }

    /// [`RowBuffer::push`] with column `i`'s value given by `value(i)`, for a reader whose
    /// fields are already at hand and need no list per record.
    pub(crate) fn push_fields<'v>(
        &mut self,
        line: u64,
        raw: Raw<'_>,
        value: impl Fn(usize) -> Option<&'v str>,
    ) {
        self.line.append_value(line as i64);
        match raw {
            Raw::At(at) => {
                self.raw.append_null();
                self.push_at(Some(at));
            }
            Raw::Text(text) => {
                self.raw.append_value(text);
                self.push_at(None);
            }
        }
        for (i, b) in self.values.iter_mut().enumerate() {
            match value(i) {
                Some(t) if !t.is_empty() => b.append_value(t),
                _ => b.append_null(),
            }
        }
        self.rows += 1;
    }

    /// A record that cannot be used: its text is kept, whatever the format.
    pub(crate) fn push_problem(
        &mut self,
        line: u64,
        raw: &str,
        at: Option<crate::raw_text::At>,
        problem: Problem,
    ) {
        self.line.append_value(line as i64);
        self.raw.append_value(raw);
        self.push_at(at);
        self.problems.push((self.rows, problem));
        for b in &mut self.values {
            b.append_null();
        }
        self.rows += 1;
    }

    fn push_at(&mut self, at: Option<crate::raw_text::At>) {
        self.offset.append_option(at.map(|(o, _)| o as i64));
        self.length.append_option(at.map(|(_, l)| l as i64));
    }

    /// Whether a batch is full.
    pub(crate) fn full(&self) -> bool {
        self.rows >= BATCH_ROWS
    }

    /// The rows so far, typed and checked, as a batch (`None` when there are none), starting
    /// a new one.
    pub(crate) fn take(&mut self) -> DfResult<Option<RecordBatch>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let rows = std::mem::take(&mut self.rows);
        let texts: Vec<StringArray> = self.values.iter_mut().map(|v| v.finish()).collect();
        let problems = std::mem::take(&mut self.problems);
        let checked = self.checks.check(rows, &texts, &problems)?;
        let file = DictionaryArray::<Int32Type>::try_new(
            Int32Array::from(vec![0; rows]),
            self.file.clone(),
        )?;
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(file),
            Arc::new(self.line.finish()),
            Arc::new(self.raw.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.length.finish()),
            Arc::new(checked.reason),
            Arc::new(checked.column),
            Arc::new(checked.message),
        ];
        columns.extend(checked.values);
        Ok(Some(RecordBatch::try_new(
            self.checks.schema().clone(),
            columns,
        )?))
    }
}

impl Parser {
    fn run(&self, input: InputReader, out: &BatchSender) -> DfResult<()> {
        let seen = input.seen.clone();
        let mut reader = builder(&self.dialect)
            .buffer_capacity(1 << 16)
            .from_reader(input);
        let mut record = csv::ByteRecord::new();
        let url = self.file.url.as_str();
        let io_err = |e: csv::Error| DataFusionError::External(format!("{url}: {e}").into());
        // Lines are counted from the piece's start: the lines before it are added.
        let lines_before = self.piece.as_ref().map_or(0, |p| p.first_line - 1);
        // Likewise offsets: the reader counts bytes from the piece's start.
        let piece_start = self.piece.as_ref().map_or(0, |p| p.start);
        // Skip up to and including the header, which only the first piece has.
        let header = match &self.piece {
            Some(p) if p.start > 0 => 0,
            _ => self.dialect.header_line,
        };
        for _ in 0..header {
            if !reader.read_byte_record(&mut record).map_err(io_err)? {
                return Ok(());
            }
        }
        let width = self.file.header.len();
        let mut rows = RowBuffer::new(&self.checks, &self.file.url);
        loop {
            let start = reader.position().clone();
            if !reader.read_byte_record(&mut record).map_err(io_err)? {
                break;
            }
            let end = reader.position().byte();
            // The reader's position is where the previous record ended: skip the blank
            // lines it passed over to find the record's own first line.
            let seen_now = seen.borrow();
            let bytes = seen_now.slice(start.byte(), end);
            let (blank_lines, raw) = skip_blank_lines(bytes);
            let raw_at = piece_start + start.byte() + (bytes.len() - raw.len()) as u64;
            let raw = trim_newline(raw);
            let at = (raw_at, raw.len() as u64);
            let line = lines_before + start.line() + blank_lines;
            if record.len() != width {
                let problem = Problem {
                    code: "column_count",
                    column: None,
                    message: format!("has {} fields, the header has {width}", record.len()),
                };
                rows.push_problem(line, &String::from_utf8_lossy(raw), Some(at), problem);
            } else {
                // One UTF-8 check for the whole record, usually: where that passes, a field is
                // text exactly when it starts and ends at characters of the whole (a field
                // cut from valid text at character boundaries is valid; one that is not valid
                // on its own cannot start or end at them).
                let whole = std::str::from_utf8(record.as_slice()).ok();
                let field = |p: usize| -> Option<&str> {
                    match whole {
                        Some(t) => record.range(p).and_then(|r| t.get(r)),
                        None => std::str::from_utf8(&record[p]).ok(),
                    }
                };
                let invalid = self
                    .file
                    .positions
                    .iter()
                    .position(|p| p.is_some_and(|p| field(p).is_none()));
                match invalid {
                    None => rows.push_fields(line, Raw::At(at), |i| {
                        self.file.positions[i].and_then(field)
                    }),
                    Some(i) => {
                        let problem = Problem {
                            code: "invalid_utf8",
                            column: Some(rows.column_name(i).to_string()),
                            message: "is not valid UTF-8".to_string(),
                        };
                        rows.push_problem(line, &String::from_utf8_lossy(raw), Some(at), problem);
                    }
                }
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
pub(crate) fn skip_blank_lines(raw: &[u8]) -> (u64, &[u8]) {
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
