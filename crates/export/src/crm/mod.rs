//! `export.crm`: CSV files a CRM's contact import accepts (HubSpot, Salesforce, Zoho, or
//! segflow's own columns), one row per customer whose segments changed since the last export
//! (every customer with `mode: full`), each customer's current segments from the published
//! customer_segments and its email and last name from the published customers.
//!
//! Layout: `<path>/<format>/as_of=<date>/segflow-<format>-<date>-0001.csv ...`, split at the
//! CRM's limits ([`format::CrmFormat::limits`]), finished by `_SUCCESS` (each file's rows,
//! bytes and SHA-256; [`crate::folder`]); rows a CRM cannot take (HubSpot without an email)
//! are listed in `_skipped.csv` with the reason. Which changes were exported is kept in
//! `<path>/<format>/_state.json` (the segment_changes version), written after the folder: a
//! run killed in between exports those changes again, which a CRM import (an upsert) takes
//! as the same update.

pub mod format;

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use segflow_core::datafusion::arrow::array::{Array, StringArray};
use segflow_core::datafusion::arrow::datatypes::DataType;
use segflow_core::datafusion::common::JoinType;
use segflow_core::datafusion::prelude::{DataFrame, SessionContext, cast, col, lit};
use segflow_core::spec::StageSpec;
use segflow_core::stage::{BuildContext, Stage, StageContext, StageFactory};
use segflow_core::{Error, storage};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::folder::{self, FileEntry, Success};
use crate::published::{self, Published};
use format::{CrmFormat, Value};

/// The YAML keys of an `export.crm` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrmConfig {
    /// The CRM's import convention.
    pub format: CrmFormat,
    /// The runs folder (a pipeline's `runs:`) whose published run is exported.
    pub runs: String,
    /// Where the files go: `<path>/<format>/as_of=<date>/`.
    pub path: String,
    /// `changed` (default): customers whose segments changed since the last export (all on
    /// the first); `full`: every customer.
    #[serde(default)]
    pub mode: CrmMode,
    /// Lower limits than the CRM's own, per file (rows; bytes, header included).
    #[serde(default)]
    pub max_rows: Option<u64>,
    /// See `max_rows`.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// Which customers an export holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CrmMode {
    /// Those in segment_changes since the last export.
    #[default]
    Changed,
    /// All of them.
    Full,
}

/// A built `export.crm` stage.
#[derive(Debug)]
pub struct CrmExport {
    format: CrmFormat,
    runs: Url,
    /// `<path>/<format>/`.
    root: Url,
    mode: CrmMode,
    max_rows: Option<u64>,
    max_bytes: Option<u64>,
}

pub(crate) struct CrmExportFactory;

impl StageFactory for CrmExportFactory {
    fn kind(&self) -> &'static str {
        "export.crm"
    }

    fn summary(&self) -> &'static str {
        "after publishing, writes CRM import files (HubSpot, Salesforce, Zoho, generic CSV) of the customers whose segments changed"
    }

    fn example_yaml(&self) -> &'static str {
        r#"id: crm_hubspot
kind: export.crm
format: hubspot
runs: /tmp/segflow-example/_runs
path: /tmp/segflow-example/exports/crm
"#
    }

    fn build(
        &self,
        spec: &StageSpec,
        cx: &BuildContext<'_>,
    ) -> segflow_core::Result<Box<dyn Stage>> {
        let config: CrmConfig = spec.config(cx.source)?;
        published::refuse_run_tables(spec, cx, "exports the published customer_segments")?;
        let (rows, bytes) = config.format.limits();
        let lower = |mine: Option<u64>, theirs: Option<u64>, what: &str| match (mine, theirs) {
            (Some(0), _) => Err(spec.error(cx.source, format!("`{what}` must be at least 1"))),
            (Some(m), Some(t)) if m > t => Err(spec.error(
                cx.source,
                format!(
                    "`{what}: {m}` is above {}'s limit of {t}",
                    config.format.name()
                ),
            )),
            (m, t) => Ok(m.or(t)),
        };
        let path = published::folder_key(spec, cx, "path", &config.path)?;
        Ok(Box::new(CrmExport {
            format: config.format,
            runs: published::folder_key(spec, cx, "runs", &config.runs)?,
            root: storage::as_dir(&storage::join(&path, config.format.name())),
            mode: config.mode,
            max_rows: lower(config.max_rows, rows, "max_rows")?,
            max_bytes: lower(config.max_bytes, bytes, "max_bytes")?,
        }))
    }
}

/// `_state.json`: the segment_changes version the last export covered.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    segment_changes_url: String,
    segment_changes_version: u64,
    run_id: String,
    as_of: String,
}

#[async_trait]
impl Stage for CrmExport {
    fn inputs(&self) -> Vec<String> {
        Vec::new()
    }

    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }

    fn after_publish(&self) -> bool {
        true
    }

    fn describe(&self) -> Vec<String> {
        vec![format!(
            "customer_segments -> {}as_of=.../ ({}, {} customers)",
            self.root,
            self.format.name(),
            match self.mode {
                CrmMode::Changed => "changed",
                CrmMode::Full => "all",
            }
        )]
    }

    async fn fingerprint(
        &self,
        _ctx: &SessionContext,
        _run: &segflow_core::stage::RunInfo,
        _f: &mut segflow_core::fingerprint::Fingerprint,
    ) -> segflow_core::Result<()> {
        // It reads the published run and produces no table.
        Ok(())
    }

    async fn run(&self, cx: &StageContext<'_>) -> segflow_core::Result<()> {
        let ctx = cx.ctx;
        let published = Published::read(ctx, &self.runs).await?;
        let segments = published.table(ctx, "customer_segments").await?;
        let changes = published.table(ctx, "segment_changes").await?;
        let state_url = storage::join(&self.root, "_state.json");
        let state: Option<State> = storage::get_json(ctx, &state_url).await?;
        // Which customers: all, or those in the segment_changes partitions published since.
        let watermark = state
            .filter(|s| {
                s.segment_changes_url == changes.url.as_str() && self.mode == CrmMode::Changed
            })
            .map(|s| s.segment_changes_version);
        // The segment_changes partitions published since; none known: every customer.
        let partitions = match watermark {
            Some(v) if v != changes.version => changes.changed_since(ctx, v).await,
            _ => None,
        };
        // The version the rows are the changes since; none: every customer.
        let since = if partitions.is_some() {
            watermark
        } else {
            None
        };
        let changed: Option<DataFrame> = match partitions {
            None => None,
            Some(values) => Some(
                changes
                    .partition_rows(&values)
                    .and_then(|d| d.select(vec![col("customer_id").alias("changed_id")]))
                    .and_then(|d| d.distinct())
                    .map_err(cx.df_err("selecting the changed customers"))?,
            ),
        };
        if watermark == Some(changes.version) {
            // Nothing published since the last export: its folder stays as it is.
            tracing::info!(
                format = self.format.name(),
                "no segment changes since the last export"
            );
            cx.metric("rows", serde_json::json!(0));
            return Ok(());
        }
        let as_of = published::snapshot_day(cx, &segments.rows)
            .await?
            .ok_or_else(|| Error::BadData {
                stage: cx.stage_id.to_string(),
                message: "the published customer_segments has no rows".into(),
            })?;
        let rows = self.rows(cx, &published, &segments, changed).await?;
        let temp = storage::as_dir(&storage::join(
            &self.root,
            &format!("_temporary/{}", cx.run.run_id),
        ));
        let dest = storage::as_dir(&storage::join(&self.root, &format!("as_of={as_of}")));
        storage::delete_prefix(ctx, &temp).await?;
        let strategies = strategies(cx, &published).await?;
        let (files, skipped) = self.write(cx, rows, &temp, as_of, &strategies).await?;
        let mut moved = files.clone();
        let mut success = Success::new(
            "segflow.export.crm/1",
            &cx.run.run_id,
            &dest,
            "customer_segments",
            as_of,
            self.format.name(),
            &segments,
            &files,
        );
        success
            .details
            .insert("mode".into(), serde_json::json!(self.mode));
        success.details.insert(
            "since_segment_changes_version".into(),
            serde_json::json!(since),
        );
        success.details.insert(
            "limits".into(),
            serde_json::json!({ "max_rows": self.max_rows, "max_bytes": self.max_bytes }),
        );
        let mut skipped_report = serde_json::json!({ "rows": skipped.rows.len() });
        if !skipped.rows.is_empty() {
            let url = storage::join(&temp, "_skipped.csv");
            let entry = FileEntry::of(
                "_skipped.csv".into(),
                skipped.rows.len() as u64,
                &skipped.csv,
            );
            skipped_report["file"] = serde_json::json!(entry.path);
            skipped_report["sha256"] = serde_json::json!(entry.sha256);
            skipped_report["reasons"] = serde_json::json!(skipped.reasons);
            folder::put(ctx, &url, skipped.csv).await?;
            moved.push((url, entry));
        }
        success.details.insert("skipped".into(), skipped_report);
        folder::commit(ctx, &dest, &moved, &success).await?;
        storage::delete_prefix(ctx, &temp).await?;
        let state = State {
            segment_changes_url: changes.url.to_string(),
            segment_changes_version: changes.version,
            run_id: cx.run.run_id.clone(),
            as_of: as_of.to_string(),
        };
        storage::put_json(ctx, &state_url, &state, "CRM export state").await?;
        tracing::info!(
            format = self.format.name(),
            rows = success.rows,
            files = success.files.len(),
            skipped = skipped.rows.len(),
            "exported CRM files to {dest}"
        );
        cx.metric("rows", serde_json::json!(success.rows));
        cx.metric("files", serde_json::json!(success.files.len()));
        cx.metric("skipped", serde_json::json!(skipped.rows.len()));
        Ok(())
    }
}

/// Rows the CRM cannot take.
#[derive(Default)]
struct Skipped {
    rows: Vec<String>,
    reasons: BTreeMap<String, u64>,
    csv: Vec<u8>,
}

/// Segmentation -> segment -> strategy, from the published segment_catalog.
type Strategies = HashMap<String, HashMap<String, String>>;

/// The strategies of the published segment_catalog; none (and a warning) when the run
/// published none (a pipeline without a catalog, or one published before it existed).
async fn strategies(
    cx: &StageContext<'_>,
    published: &Published,
) -> segflow_core::Result<Strategies> {
    let mut out = Strategies::new();
    if !published.pointer.tables.contains_key("segment_catalog") {
        cx.warn(
            "the published run has no segment_catalog, so the strategy columns are empty; \
             add `catalog:` to the segment.rules stage and publish it (as the default pipeline does)",
        );
        return Ok(out);
    }
    let catalog = published.table(cx.ctx, "segment_catalog").await?;
    let batches = catalog
        .rows
        .select(vec![
            cast(col("segmentation"), DataType::Utf8),
            cast(col("segment"), DataType::Utf8),
            cast(col("strategy"), DataType::Utf8),
        ])
        .map_err(cx.df_err("reading segment_catalog"))?
        .collect()
        .await
        .map_err(cx.df_err("reading segment_catalog"))?;
    for b in &batches {
        let text = |i: usize| b.column(i).as_any().downcast_ref::<StringArray>().cloned();
        let (Some(seg), Some(segment), Some(strategy)) = (text(0), text(1), text(2)) else {
            continue;
        };
        for r in 0..b.num_rows() {
            if seg.is_valid(r) && segment.is_valid(r) && strategy.is_valid(r) {
                out.entry(seg.value(r).to_string())
                    .or_default()
                    .insert(segment.value(r).to_string(), strategy.value(r).to_string());
            }
        }
    }
    Ok(out)
}

impl CrmExport {
    /// customer_id, email, last_name, as_of and the segment columns as text, ordered by
    /// customer_id; only the `changed` customers when given.
    async fn rows(
        &self,
        cx: &StageContext<'_>,
        published: &Published,
        segments: &published::Table,
        changed: Option<DataFrame>,
    ) -> segflow_core::Result<DataFrame> {
        let err = |what: &'static str| cx.df_err(what);
        let customers = published.table(cx.ctx, "customers").await?;
        let has = |c: &str| customers.rows.schema().has_column_with_unqualified_name(c);
        let contact = |c: &str| {
            if has(c) {
                cast(col(c), DataType::Utf8).alias(format!("contact_{c}"))
            } else {
                // Customers staged before the contract had the column.
                lit(segflow_core::datafusion::common::ScalarValue::Utf8(None))
                    .alias(format!("contact_{c}"))
            }
        };
        let contacts = customers
            .rows
            .clone()
            .select(vec![
                col("customer_id").alias("contact_id"),
                contact("email"),
                contact("last_name"),
            ])
            .map_err(err("reading the customers' contacts"))?;
        let mut rows = segments.rows.clone();
        if let Some(changed) = changed {
            rows = rows
                .join(
                    changed,
                    JoinType::LeftSemi,
                    &["customer_id"],
                    &["changed_id"],
                    None,
                )
                .map_err(err("selecting the changed customers"))?;
        }
        let mut select = vec![
            cast(col("customer_id"), DataType::Utf8).alias("customer_id"),
            col("contact_email").alias("email"),
            col("contact_last_name").alias("last_name"),
            cast(col("as_of"), DataType::Utf8).alias("as_of"),
        ];
        for s in format::SEGMENTS {
            select.push(cast(col(*s), DataType::Utf8).alias(*s));
        }
        rows.join(
            contacts,
            JoinType::Left,
            &["customer_id"],
            &["contact_id"],
            None,
        )
        .and_then(|d| d.select(select))
        .and_then(|d| d.sort(vec![col("customer_id").sort(true, false)]))
        .map_err(err("joining segments with contacts"))
    }

    /// Writes the import files under `temp`, split at the limits; returns them (URL, entry)
    /// and the rows skipped.
    async fn write(
        &self,
        cx: &StageContext<'_>,
        rows: DataFrame,
        temp: &Url,
        as_of: chrono::NaiveDate,
        strategies: &Strategies,
    ) -> segflow_core::Result<(Vec<(Url, FileEntry)>, Skipped)> {
        use futures::StreamExt as _;
        let columns = self.format.columns();
        let required = self.format.required();
        let mut splitter = Splitter::new(
            csv_line(columns.iter().map(|(h, _)| h.as_str()))
                .map_err(|e| Error::Internal(format!("CSV header: {e}")))?,
            self.max_rows,
            self.max_bytes,
        );
        let mut skipped = Skipped {
            csv: b"customer_id,reason\n".to_vec(),
            ..Skipped::default()
        };
        let mut files = Vec::new();
        let name_file = |bytes: Vec<u8>, rows: u64, files: &mut Vec<(Url, FileEntry)>| {
            let name = format!(
                "segflow-{}-{as_of}-{:04}.csv",
                self.format.name(),
                files.len() + 1
            );
            let url = storage::join(temp, &name);
            let entry = FileEntry::of(name, rows, &bytes);
            files.push((url.clone(), entry));
            (url, bytes)
        };
        let mut stream = rows
            .execute_stream()
            .await
            .map_err(cx.df_err("reading the export rows"))?;
        let null = self.format.null();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(cx.df_err("reading the export rows"))?;
            let column = |name: &str| -> &StringArray {
                batch
                    .column_by_name(name)
                    .and_then(|a| a.as_any().downcast_ref::<StringArray>())
                    .expect("the export rows are text")
            };
            let (id, email, last, day) = (
                column("customer_id"),
                column("email"),
                column("last_name"),
                column("as_of"),
            );
            let segs: Vec<&StringArray> = format::SEGMENTS.iter().map(|s| column(s)).collect();
            for i in 0..batch.num_rows() {
                let value = |v: Value| -> Option<&str> {
                    let a = match v {
                        Value::CustomerId => id,
                        Value::Email => email,
                        Value::LastName => last,
                        Value::AsOf => day,
                        Value::Segment(s) => {
                            segs[format::SEGMENTS
                                .iter()
                                .position(|x| *x == s)
                                .expect("a segment")]
                        }
                        Value::Strategy(s) => {
                            let seg = segs[format::SEGMENTS
                                .iter()
                                .position(|x| x.strip_suffix("_segment") == Some(s))
                                .expect("a rule segmentation")];
                            if !seg.is_valid(i) {
                                return None;
                            }
                            return strategies
                                .get(s)
                                .and_then(|m| m.get(seg.value(i)))
                                .map(String::as_str)
                                .filter(|t| !t.is_empty());
                        }
                    };
                    (a.is_valid(i) && !a.value(i).is_empty()).then(|| a.value(i))
                };
                if let Some(&(_, reason)) = required.iter().find(|(v, _)| value(*v).is_none()) {
                    let customer = value(Value::CustomerId).unwrap_or_default().to_string();
                    skipped.csv.extend(
                        csv_line([customer.as_str(), reason])
                            .map_err(|e| Error::Internal(format!("CSV row: {e}")))?,
                    );
                    skipped.rows.push(customer);
                    *skipped.reasons.entry(reason.to_string()).or_default() += 1;
                    continue;
                }
                let line = csv_line(columns.iter().map(|(_, v)| value(*v).unwrap_or(null)))
                    .map_err(|e| Error::Internal(format!("CSV row: {e}")))?;
                if let Some((bytes, n)) = splitter.push(line).map_err(|m| Error::BadData {
                    stage: cx.stage_id.to_string(),
                    message: m,
                })? {
                    let (url, bytes) = name_file(bytes, n, &mut files);
                    folder::put(cx.ctx, &url, bytes).await?;
                }
            }
        }
        if let Some((bytes, n)) = splitter.finish() {
            let (url, bytes) = name_file(bytes, n, &mut files);
            folder::put(cx.ctx, &url, bytes).await?;
        }
        Ok((files, skipped))
    }
}

/// One CSV record (RFC 4180 quoting, `\n` ended).
fn csv_line<'a>(fields: impl IntoIterator<Item = &'a str>) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.write_record(fields)?;
    w.into_inner().map_err(|e| e.into_error().into())
}

/// Cuts rows into files of at most `max_rows` data rows and `max_bytes` bytes, each starting
/// with the header.
struct Splitter {
    header: Vec<u8>,
    max_rows: u64,
    max_bytes: u64,
    current: Vec<u8>,
    rows: u64,
}

impl Splitter {
    fn new(header: Vec<u8>, max_rows: Option<u64>, max_bytes: Option<u64>) -> Splitter {
        Splitter {
            header,
            max_rows: max_rows.unwrap_or(u64::MAX),
            max_bytes: max_bytes.unwrap_or(u64::MAX),
            current: Vec::new(),
            rows: 0,
        }
    }

    /// Adds a row; returns the file it finished (its bytes and rows) when the row did not fit.
    fn push(&mut self, line: Vec<u8>) -> Result<Option<(Vec<u8>, u64)>, String> {
        if (self.header.len() + line.len()) as u64 > self.max_bytes {
            return Err(format!(
                "a row of {} bytes does not fit in a file of at most {} bytes with its header",
                line.len(),
                self.max_bytes
            ));
        }
        let full = self.rows > 0
            && (self.rows + 1 > self.max_rows
                || (self.current.len() + line.len()) as u64 > self.max_bytes);
        let done = if full { self.finish() } else { None };
        if self.rows == 0 {
            self.current = self.header.clone();
        }
        self.current.extend_from_slice(&line);
        self.rows += 1;
        Ok(done)
    }

    /// The file being filled, if it has rows.
    fn finish(&mut self) -> Option<(Vec<u8>, u64)> {
        if self.rows == 0 {
            return None;
        }
        let rows = std::mem::take(&mut self.rows);
        Some((std::mem::take(&mut self.current), rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_yaml_builds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let stage = segflow_core::stage::check_example(&CrmExportFactory, &root).unwrap();
        assert!(stage.after_publish());
        assert!(stage.describe()[0].contains("crm/hubspot/as_of="));
    }

    #[test]
    fn files_split_at_rows_and_bytes_each_with_the_header() {
        let mut s = Splitter::new(b"h\n".to_vec(), Some(2), Some(10));
        let mut done = Vec::new();
        for line in ["a\n", "b\n", "c\n", "dddd\n", "e\n"] {
            done.extend(s.push(line.as_bytes().to_vec()).unwrap());
        }
        done.extend(s.finish());
        let files: Vec<(String, u64)> = done
            .into_iter()
            .map(|(b, n)| (String::from_utf8(b).unwrap(), n))
            .collect();
        assert_eq!(
            files,
            [
                ("h\na\nb\n".to_string(), 2),
                ("h\nc\ndddd\n".to_string(), 2),
                ("h\ne\n".to_string(), 1)
            ]
        );
        let mut s = Splitter::new(b"header\n".to_vec(), None, Some(8));
        assert!(s.push(b"toolong\n".to_vec()).is_err());
    }

    #[test]
    fn csv_lines_quote_what_needs_it() {
        assert_eq!(
            csv_line(["a", "b,c", "O\"Brien", ""]).unwrap(),
            b"a,\"b,c\",\"O\"\"Brien\",\n".to_vec()
        );
    }
}
