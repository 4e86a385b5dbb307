//! Reading the text of quarantined records again from their files.
//!
//! The row checks keep a record's text only where they quarantine it ([`crate::validate`]):
//! the text of every good row, carried along and stored with the rows, was most of the bytes
//! an ingest moved. A row that a later check quarantines (a duplicate key, an unknown
//! customer) has its file, byte offset and length instead, and this module reads those bytes
//! again: ranged reads of an uncompressed file (coalesced by the object store), one forward
//! pass over a compressed one. Usually there are none, or a handful.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use object_store::ObjectStore;
use segflow_core::datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use url::Url;

/// Where a record's text is: `(offset, length)` in its file's (decompressed) bytes.
pub type At = (u64, u64);

/// The text at each of `at` (any order) in the file at `url`, keyed by offset; invalid UTF-8
/// is replaced by U+FFFD, as the reader did.
pub async fn read(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
    compression: FileCompressionType,
    mut at: Vec<At>,
) -> Result<HashMap<u64, String>, String> {
    at.sort_unstable();
    at.dedup();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if !compression.is_compressed() {
        let path = segflow_core::storage::store_path(url).map_err(|e| e.to_string())?;
        let ranges: Vec<_> = at.iter().map(|&(o, l)| o..o + l).collect();
        let bytes = store
            .get_ranges(&path, &ranges)
            .await
            .map_err(|e| format!("reading {url} again for quarantined rows: {e}"))?;
        return Ok(at.iter().zip(bytes).map(|(a, b)| (a.0, text(&b))).collect());
    }
    let url_text = url.to_string();
    crate::source::read_start(store, url, compression, move |input| {
        let mut input = std::io::BufReader::with_capacity(1 << 20, input);
        let mut out = HashMap::with_capacity(at.len());
        let mut position = 0u64;
        let mut buf = Vec::new();
        for (offset, length) in at {
            // Offsets are sorted: skip forward to the next one.
            let skip = offset
                .checked_sub(position)
                .ok_or_else(|| format!("{url_text}: overlapping records at byte {offset}"))?;
            std::io::copy(&mut (&mut input).take(skip), &mut std::io::sink())
                .map_err(|e| format!("{url_text}: {e}"))?;
            buf.clear();
            (&mut input)
                .take(length)
                .read_to_end(&mut buf)
                .map_err(|e| format!("{url_text}: {e}"))?;
            if buf.len() as u64 != length {
                return Err(format!(
                    "{url_text} changed while it was read: it ends before byte {}",
                    offset + length
                ));
            }
            position = offset + length;
            out.insert(offset, text(&buf));
        }
        Ok(out)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;

    #[tokio::test]
    async fn reads_ranges_of_plain_and_compressed_files() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"id,name\n1,ann\n2,b\xffob\n3,cy\n";
        let plain = dir.path().join("a.csv");
        std::fs::write(&plain, text).unwrap();
        let gz = dir.path().join("a.csv.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, text).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
        for (path, c) in [
            (plain, FileCompressionType::UNCOMPRESSED),
            (gz, FileCompressionType::GZIP),
        ] {
            let url = Url::from_file_path(&path).unwrap();
            let got = read(&store, &url, c, vec![(21, 4), (14, 6), (21, 4)])
                .await
                .unwrap();
            let want: HashMap<u64, String> =
                HashMap::from([(21, "3,cy".to_string()), (14, "2,b\u{fffd}ob".to_string())]);
            assert_eq!(got, want, "{c:?}");
        }
    }
}
