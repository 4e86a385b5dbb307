//! An NDJSON source (one JSON object per line) with the same columns as the CSV reader:
//! file, line, the line's text, each row's first problem, then the contract's columns, typed.
//!
//! A contract column is read from the key of its name (or the one `columns:` maps it from);
//! a dotted name such as `user.id` reaches into nested objects when no key has that exact
//! name. A value becomes text the way it is written: strings as they are, numbers in their JSON
//! form, `true`/`false`, objects and arrays as JSON; `null`, a missing key and `""` are null.
//! So typing and checks are the same as for CSV ([`crate::row_checks`]). A line that is
//! not a JSON object is a `bad_json` row, a line that is not UTF-8 an `invalid_utf8` row; blank
//! lines are skipped (and counted, so line numbers stay true).

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::sync::{Arc, Mutex};

use object_store::ObjectStore;
use segflow_core::datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use segflow_core::datafusion::error::{DataFusionError, Result as DfResult};
use segflow_core::datafusion::physical_plan::SendableRecordBatchStream;
use serde_json::Value;
use url::Url;

use super::input::{self, BatchSender, InputReader};
use super::rows::{Problem, Raw, RowBuffer};
use super::{FileSource, FormatReader, Reading};
use crate::row_checks::RowChecks;

/// Lines read to learn a file's keys before the stage runs.
const SAMPLE_LINES: u64 = 1000;

/// Keys the records have beyond the contract's, per file; or, with `fail`, an error at the
/// first one.
#[derive(Debug, Clone, Default)]
pub struct ExtraKeys {
    pub fail: bool,
    seen: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
    /// Also warn in this process's log: a scan that runs on an executor, where the stage
    /// that would report them is in another process.
    log: bool,
}

impl ExtraKeys {
    pub fn new(fail: bool) -> Self {
        ExtraKeys {
            fail,
            seen: Default::default(),
            log: false,
        }
    }

    /// The same, also warning in this process's log.
    pub fn reporting(mut self) -> Self {
        self.log = true;
        self
    }

    /// `(file, keys)` for every file that had keys the contract does not name.
    pub fn take(&self) -> BTreeMap<String, BTreeSet<String>> {
        std::mem::take(&mut *self.seen.lock().expect("not poisoned"))
    }
}

/// The NDJSON reader: one partition per file.
#[derive(Debug)]
pub(crate) struct NdjsonReader;

impl FormatReader for NdjsonReader {
    fn read(
        &self,
        file: &FileSource,
        _part: usize,
        reading: &Reading,
    ) -> SendableRecordBatchStream {
        let checks = reading.checks.clone();
        let extra_keys = reading.extra_keys.clone();
        let owned = file.clone();
        input::parse_blocking(
            checks.schema().clone(),
            reading.store.clone(),
            file,
            None,
            false,
            move |input, out| parse(input, out, &checks, &owned, &extra_keys),
        )
    }
}

/// A JSON value as the text the typing expressions read; `None` for null.
fn text(value: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.as_str().into()),
        Value::Bool(b) => Some(if *b { "true" } else { "false" }.into()),
        Value::Number(n) => Some(n.to_string().into()),
        Value::Array(_) | Value::Object(_) => Some(value.to_string().into()),
    }
}

/// The value at `name`: the key of that name, else the dotted path into nested objects.
fn lookup<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = obj.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut v = obj.get(parts.next()?)?;
    for part in parts {
        v = v.as_object()?.get(part)?;
    }
    Some(v)
}

/// Every key of the object, and the dotted path of every key in nested objects.
fn paths(obj: &serde_json::Map<String, Value>, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in obj {
        let path = format!("{prefix}{k}");
        if !out.contains(&path) {
            out.push(path.clone());
        }
        if let Value::Object(inner) = v {
            paths(inner, &format!("{path}."), out);
        }
    }
}

/// The line's object, or why it is not one.
fn object(line: &[u8]) -> Result<serde_json::Map<String, Value>, Problem> {
    let text = std::str::from_utf8(line).map_err(|_| Problem {
        code: "invalid_utf8",
        column: None,
        message: "is not valid UTF-8".into(),
    })?;
    serde_json::from_str(text).map_err(|e| Problem {
        code: "bad_json",
        column: None,
        message: format!("is not a JSON object: {e}"),
    })
}

fn parse(
    input: InputReader,
    out: &BatchSender,
    checks: &Arc<RowChecks>,
    file: &FileSource,
    extra_keys: &ExtraKeys,
) -> DfResult<()> {
    let mut lines = Lines::new(input);
    // A top-level key is wanted when a column reads it or a path into it.
    let wanted: BTreeSet<&str> = file
        .names
        .iter()
        .flat_map(|n| [n.as_str(), n.split('.').next().unwrap_or(n)])
        .collect();
    let mut extra = BTreeSet::new();
    let mut rows = RowBuffer::new(checks, &file.url);
    let io_err = |e: std::io::Error| DataFusionError::External(format!("{}: {e}", file.url).into());
    while let Some((line, bytes)) = lines.next_record().map_err(io_err)? {
        let raw = String::from_utf8_lossy(bytes);
        match object(bytes) {
            Err(problem) => rows.push_problem(line, &raw, None, problem),
            Ok(obj) => {
                for key in obj.keys() {
                    if !wanted.contains(key.as_str()) && !extra.contains(key) {
                        if extra_keys.fail {
                            return Err(DataFusionError::External(
                                format!(
                                    "{}:{line}: key `{key}` is not a column of the contract (extra_columns: fail); \
                                     map it with `columns:`, add it to the contract, or set `extra_columns: ignore`",
                                    file.url
                                )
                                .into(),
                            ));
                        }
                        extra.insert(key.clone());
                    }
                }
                let values: Vec<_> = file
                    .names
                    .iter()
                    .map(|n| lookup(&obj, n).and_then(text))
                    .collect();
                rows.push(line, Raw::Text(&raw), &values);
            }
        }
        if rows.full() {
            let batch = rows.take()?.expect("a full batch");
            if out.blocking_send(Ok(batch)).is_err() {
                return Ok(()); // the consumer stopped reading
            }
        }
    }
    if let Some(batch) = rows.take()? {
        let _ = out.blocking_send(Ok(batch));
    }
    if !extra.is_empty() {
        if extra_keys.log {
            tracing::warn!(
                "{}: ignoring keys the contract does not have: {}",
                file.url,
                extra.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        extra_keys
            .seen
            .lock()
            .expect("not poisoned")
            .entry(file.url.to_string())
            .or_default()
            .extend(extra);
    }
    Ok(())
}

/// The keys (and dotted paths into nested objects) of the file's first records, in the order
/// they first appear: what the stage checks against the contract before reading, so a
/// required column no record has fails early.
pub async fn sample_keys(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
    compression: FileCompressionType,
) -> Result<Vec<String>, String> {
    input::read_start(store, url, compression, |input| {
        let mut lines = Lines::new(input);
        let mut keys: Vec<String> = Vec::new();
        let (mut last_line, mut objects) = (0, 0);
        let mut first_error = None;
        while last_line < SAMPLE_LINES {
            let Some((line, bytes)) = lines.next_record().map_err(|e| e.to_string())? else {
                break;
            };
            last_line = line;
            match object(bytes) {
                Ok(obj) => {
                    objects += 1;
                    paths(&obj, "", &mut keys);
                }
                Err(p) => {
                    first_error.get_or_insert(format!("line {line} {}", p.message));
                }
            }
        }
        if objects == 0 {
            return Err(match first_error {
                Some(e) => format!("no JSON object in its first {last_line} lines; {e}"),
                None => "the file is empty: it has no records".to_string(),
            });
        }
        Ok(keys)
    })
    .await
}

/// The file's non-blank lines, each with its 1-based line number (blank lines count).
struct Lines {
    input: std::io::BufReader<InputReader>,
    buf: Vec<u8>,
    line: u64,
}

impl Lines {
    fn new(input: InputReader) -> Self {
        Lines {
            input: std::io::BufReader::with_capacity(1 << 16, input),
            buf: Vec::new(),
            line: 0,
        }
    }

    /// The next non-blank line, without its line ending; `None` at the end of the file.
    fn next_record(&mut self) -> std::io::Result<Option<(u64, &[u8])>> {
        loop {
            self.buf.clear();
            if self.input.read_until(b'\n', &mut self.buf)? == 0 {
                return Ok(None);
            }
            self.line += 1;
            if !self.buf.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some((self.line, super::csv::trim_newline(&self.buf))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_the_text_typing_reads() {
        let obj = object(br#"{"a":"x","b":12.50,"c":true,"d":null,"e":[1,2],"f":""}"#).unwrap();
        let t = |k: &str| obj.get(k).and_then(text).map(|c| c.into_owned());
        assert_eq!(t("a").as_deref(), Some("x"));
        assert_eq!(t("b").as_deref(), Some("12.5"));
        assert_eq!(t("c").as_deref(), Some("true"));
        assert_eq!(t("d"), None);
        assert_eq!(t("e").as_deref(), Some("[1,2]"));
        assert_eq!(t("f").as_deref(), Some(""));
        assert_eq!(t("missing"), None);
    }

    #[test]
    fn dotted_names_reach_into_nested_objects() {
        let obj = object(br#"{"user":{"id":7,"geo":{"city":"Lyon"}},"a.b":1}"#).unwrap();
        assert_eq!(lookup(&obj, "user.id"), Some(&Value::from(7)));
        assert_eq!(lookup(&obj, "user.geo.city"), Some(&Value::from("Lyon")));
        assert_eq!(lookup(&obj, "a.b"), Some(&Value::from(1)));
        assert_eq!(lookup(&obj, "user.name"), None);
        let mut keys = Vec::new();
        paths(&obj, "", &mut keys);
        assert_eq!(
            keys,
            ["a.b", "user", "user.geo", "user.geo.city", "user.id"]
        );
    }

    #[test]
    fn non_objects_and_bad_bytes_are_problems() {
        assert_eq!(object(b"[1,2]").err().unwrap().code, "bad_json");
        assert_eq!(object(b"{\"a\":").err().unwrap().code, "bad_json");
        assert_eq!(
            object(b"{\"a\":\"\xff\"}").err().unwrap().code,
            "invalid_utf8"
        );
    }

    proptest::proptest! {
        /// Any line: an object, or a problem with its code; dotted lookups and key paths of
        /// any object never panic.
        #[test]
        fn prop_any_line_is_an_object_or_a_problem(
            line in proptest::collection::vec(proptest::num::u8::ANY, 0..120),
            json in "\\{(\"[a-z.]{0,4}\":(\\{\"[a-z]\":[0-9]\\}|\"[^\"\\\\]{0,4}\"|[0-9.e-]{1,5}|null|true|\\[\\]),?){0,5}\\}",
            name in "[a-z.]{0,6}",
        ) {
            for bytes in [&line[..], json.as_bytes()] {
                match object(bytes) {
                    Ok(obj) => {
                        let _ = lookup(&obj, &name).and_then(text);
                        let mut keys = Vec::new();
                        paths(&obj, "", &mut keys);
                    }
                    Err(p) => proptest::prop_assert!(
                        ["bad_json", "invalid_utf8"].contains(&p.code),
                        "{}", p.code
                    ),
                }
            }
        }
    }
}
