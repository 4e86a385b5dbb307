//! A file's (decompressed) bytes for a blocking parser: read directly from a local file on
//! the parser's thread, or streamed to it from another store; and the blocking task that runs
//! a parser and sends its batches on.

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use futures::StreamExt;
use object_store::ObjectStore;
use segflow_core::datafusion::arrow::array::RecordBatch;
use segflow_core::datafusion::arrow::datatypes::SchemaRef;
use segflow_core::datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use segflow_core::datafusion::error::{DataFusionError, Result as DfResult};
use segflow_core::datafusion::physical_plan::SendableRecordBatchStream;
use segflow_core::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use url::Url;

use super::FileSource;

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
    pub(super) seen: std::rc::Rc<std::cell::RefCell<Seen>>,
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
pub(super) struct Seen {
    base: u64,
    bytes: Vec<u8>,
}

impl Seen {
    pub(super) fn slice(&self, start: u64, end: u64) -> &[u8] {
        let s = (start.saturating_sub(self.base)) as usize;
        let e = ((end.saturating_sub(self.base)) as usize).min(self.bytes.len());
        &self.bytes[s.min(e)..e]
    }

    /// Forgets everything before stream offset `upto`.
    pub(super) fn trim(&mut self, upto: u64) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
