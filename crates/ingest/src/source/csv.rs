//! The CSV reader: RFC 4180 quoting and line tracking from the `csv` crate, so that a short
//! row or an invalid UTF-8 byte is one quarantined record, not a failed file (DataFusion's CSV
//! reader fails the file, and does not say which line a row came from). A record's text is
//! kept only when the reader itself finds it unusable; every other record is known by its
//! offset and length in the file, read again ([`crate::raw_text`]) only if a later check
//! quarantines it. A large uncompressed file is cut at record boundaries ([`super::split`]),
//! one partition per piece, so that parsing and everything after it runs on all cores.

use std::io::Read;
use std::sync::Arc;

use object_store::ObjectStore;
use segflow_core::datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use segflow_core::datafusion::error::{DataFusionError, Result as DfResult};
use segflow_core::datafusion::physical_plan::SendableRecordBatchStream;
use url::Url;

use super::input::{BatchSender, InputReader, parse_blocking, read_start};
use super::rows::{Problem, Raw, RowBuffer};
use super::split::Piece;
use super::{FileSource, FormatReader, Reading};
use crate::row_checks::RowChecks;

/// CSV dialect options.
#[derive(Debug, Clone)]
pub struct Dialect {
    pub delimiter: u8,
    pub quote: u8,
    /// Where the header is; records before it are skipped (some exports have a title line).
    pub header_line: usize,
}

/// A file is one partition per piece it was cut into, or one when it was not cut.
impl FormatReader for Dialect {
    fn partitions(&self, file: &FileSource) -> usize {
        file.pieces.len().max(1)
    }

    fn read(&self, file: &FileSource, part: usize, reading: &Reading) -> SendableRecordBatchStream {
        // A single piece is the whole file: read it as one, header included.
        let piece = (file.pieces.len() > 1).then(|| file.pieces[part].clone());
        let parser = Parser {
            checks: reading.checks.clone(),
            file: file.clone(),
            dialect: self.clone(),
            piece: piece.clone(),
        };
        parse_blocking(
            reading.checks.schema().clone(),
            reading.store.clone(),
            file,
            piece.map(|p| p.start..p.end),
            true,
            move |input, out| parser.run(input, out),
        )
    }
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
/// at a record boundary, reading it up to the last cut ([`super::split`]).
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
            let mut splitter = super::split::Splitter::new(
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

fn builder(dialect: &Dialect) -> csv::ReaderBuilder {
    let mut b = csv::ReaderBuilder::new();
    b.has_headers(false)
        .flexible(true)
        .delimiter(dialect.delimiter)
        .quote(dialect.quote);
    b
}

struct Parser {
    checks: Arc<RowChecks>,
    file: FileSource,
    dialect: Dialect,
    piece: Option<Piece>,
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
}
