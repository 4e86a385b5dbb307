//! Reading a CSV file's header, and finding the cells that break a contract's types.
//!
//! `find_bad_values` only runs after DataFusion's typed read has failed. It re-reads the file
//! with the `csv` crate, which knows line numbers, and casts each column chunk with the same
//! Arrow cast kernel the read used, so what it reports is exactly what made the read fail.

use object_store::ObjectStoreExt as _;
use segflow_core::datafusion::arrow::array::{Array, StringArray};
use segflow_core::datafusion::arrow::compute::{CastOptions, cast_with_options};
use segflow_core::datafusion::arrow::datatypes::DataType;
use segflow_core::datafusion::prelude::SessionContext;
use segflow_core::{Error, Result, storage};
use url::Url;

use crate::contract::Contract;

/// How many bad cells an error lists.
const EXAMPLES: usize = 5;
/// Rows cast at a time while diagnosing.
const CHUNK: usize = 8192;

async fn read_bytes(
    ctx: &SessionContext,
    url: &Url,
    range: Option<std::ops::Range<u64>>,
) -> Result<bytes::Bytes> {
    let store = storage::store_for(ctx, url)?;
    let path = storage::store_path(url)?;
    let fail = |e| Error::Storage {
        location: url.to_string(),
        message: "cannot read".into(),
        source: Some(e),
    };
    match range {
        Some(r) => {
            let size = store.head(&path).await.map_err(fail)?.size;
            let r = r.start..r.end.min(size);
            store.get_range(&path, r).await.map_err(fail)
        }
        None => store
            .get(&path)
            .await
            .map_err(fail)?
            .bytes()
            .await
            .map_err(fail),
    }
}

/// The header row's column names; `Ok(Err(message))` when the file has no readable header.
pub(crate) async fn read_header(
    ctx: &SessionContext,
    url: &Url,
    delimiter: u8,
) -> Result<std::result::Result<Vec<String>, String>> {
    let head = read_bytes(ctx, url, Some(0..1 << 16)).await?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .from_reader(head.as_ref());
    let mut record = csv::StringRecord::new();
    Ok(match reader.read_record(&mut record) {
        Ok(true) => Ok(record.iter().map(|s| s.trim().to_string()).collect()),
        Ok(false) => Err(format!("{url} is empty; it needs at least a header row")),
        Err(e) => Err(format!("{url}: cannot read the header row: {e}")),
    })
}

struct BadCell {
    line: u64,
    column: usize,
    name: String,
    value: String,
    type_name: String,
}

/// A report of the cells that do not parse as their contract type, or of a malformed row;
/// `None` if every cell parses.
pub(crate) async fn find_bad_values(
    ctx: &SessionContext,
    url: &Url,
    delimiter: u8,
    header: &[String],
    contract: &Contract,
) -> Result<Option<String>> {
    let bytes = read_bytes(ctx, url, None).await?;
    let file_name = url.path().rsplit('/').next().unwrap_or("").to_string();
    // Columns to check: (index in the file, contract column), text columns need no cast.
    let typed: Vec<(usize, &crate::contract::Column)> = header
        .iter()
        .enumerate()
        .filter_map(|(i, h)| contract.column(h).map(|c| (i, c)))
        .filter(|(_, c)| c.data_type != DataType::Utf8)
        .collect();
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .from_reader(bytes.as_ref());
    let mut bad = Vec::new();
    let mut total_bad = 0u64;
    let mut lines: Vec<u64> = Vec::with_capacity(CHUNK);
    let mut cells: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(CHUNK); typed.len()];
    let mut record = csv::StringRecord::new();
    loop {
        let more = match reader.read_record(&mut record) {
            Ok(more) => more,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                return Ok(Some(format!("{file_name}:{line}: malformed row: {e}")));
            }
        };
        if more {
            lines.push(record.position().map(|p| p.line()).unwrap_or(0));
            for (k, (i, _)) in typed.iter().enumerate() {
                let v = record.get(*i).unwrap_or("");
                cells[k].push((!v.is_empty()).then(|| v.to_string()));
            }
        }
        if lines.len() == CHUNK || (!more && !lines.is_empty()) {
            for (k, (i, col)) in typed.iter().enumerate() {
                let input = StringArray::from(std::mem::take(&mut cells[k]));
                let options = CastOptions {
                    safe: true,
                    ..Default::default()
                };
                let Ok(out) = cast_with_options(&input, &col.data_type, &options) else {
                    continue;
                };
                for (row, line) in lines.iter().enumerate() {
                    if input.is_valid(row) && out.is_null(row) {
                        total_bad += 1;
                        if bad.len() < EXAMPLES {
                            bad.push(BadCell {
                                line: *line,
                                column: i + 1,
                                name: col.name.clone(),
                                value: input.value(row).to_string(),
                                type_name: col.type_name.clone(),
                            });
                        }
                    }
                }
            }
            lines.clear();
        }
        if !more {
            break;
        }
    }
    if bad.is_empty() {
        return Ok(None);
    }
    let mut report = format!("{url}: {total_bad} value(s) do not parse as their contract type:");
    for b in &bad {
        report.push_str(&format!(
            "\n  {file_name}:{}:{} column `{}`: '{}' is not a {}",
            b.line, b.column, b.name, b.value, b.type_name
        ));
    }
    if total_bad > bad.len() as u64 {
        report.push_str(&format!(
            "\n  ... and {} more",
            total_bad - bad.len() as u64
        ));
    }
    Ok(Some(report))
}
