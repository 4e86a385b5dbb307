//! Rows read from one file, a batch at a time: each record's fields as text, then typed and
//! checked against the contract a whole batch at once ([`RowChecks::check`]).

use std::sync::Arc;

use segflow_core::datafusion::arrow::array::{
    ArrayRef, DictionaryArray, Int32Array, Int64Builder, RecordBatch, StringArray, StringBuilder,
};
use segflow_core::datafusion::arrow::datatypes::Int32Type;
use segflow_core::datafusion::error::Result as DfResult;
use url::Url;

use super::BATCH_ROWS;
use crate::row_checks::RowChecks;

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
    /// The file's URL, the one value of every batch's [`SOURCE_FILE`](super::SOURCE_FILE) dictionary.
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
