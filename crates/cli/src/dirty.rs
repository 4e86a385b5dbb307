//! `segflow generate --dirty FRACTION`: corrupts that fraction of the generated rows in the ways
//! real CRM exports go wrong, and lists every row the contracts must reject in
//! `corrupted_rows.csv` (`table_name,line_number,reason`), so tests can check that quarantine is
//! exact.
//!
//! Runs after the clean files are written, one file at a time, so the clean generator (and
//! every clean row) is unchanged by it. A corrupted customer row takes its customer out of the
//! accepted table, so that customer's orders, events and survey answers are listed too, with
//! reason `unknown_customer`, unless they are corrupted themselves (a row's own problem is
//! reported first, as ingest does).

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One way to break a row: its reason code and the edit.
#[derive(Clone, Copy)]
struct Corruption {
    reason: &'static str,
    edit: Edit,
}

#[derive(Clone, Copy)]
enum Edit {
    /// Replace field `i` with this text.
    Set(usize, &'static str),
    /// Append invalid UTF-8 bytes to field `i`.
    InvalidUtf8(usize),
    /// Drop the last field.
    DropField,
    /// Write the row twice; the copy is the bad one.
    Duplicate,
}

const fn c(reason: &'static str, edit: Edit) -> Corruption {
    Corruption { reason, edit }
}

/// Per table: its file, the field holding the customer id, and the ways to break its rows.
const TABLES: [(&str, &str, usize, &[Corruption]); 4] = [
    (
        "customers",
        "customers.csv",
        0,
        &[
            c("missing_key", Edit::Set(0, "")),
            c("duplicate_key", Edit::Duplicate),
            c("bad_date", Edit::Set(1, "2023-02-30")),
            c("not_accepted", Edit::Set(3, "Q")),
            c("bad_number", Edit::Set(7, "12k")),
            c("out_of_range", Edit::Set(7, "-5")),
            c("bad_boolean", Edit::Set(8, "maybe")),
            c("column_count", Edit::DropField),
            c("invalid_utf8", Edit::InvalidUtf8(6)),
        ],
    ),
    (
        "orders",
        "orders.csv",
        1,
        &[
            c("missing_key", Edit::Set(0, "")),
            c("duplicate_key", Edit::Duplicate),
            c("unknown_customer", Edit::Set(1, "C99999999X")),
            c("bad_timestamp", Edit::Set(2, "2026-13-01T10:00:00Z")),
            c("bad_timestamp", Edit::Set(2, "31/12/2025 10:00")),
            c("bad_number", Edit::Set(3, "N/A")),
            c("out_of_range", Edit::Set(3, "5000000.00")),
            c("out_of_range", Edit::Set(2, "2099-01-01T00:00:00Z")),
            c("not_accepted", Edit::Set(6, "fax")),
            c("column_count", Edit::DropField),
            c("invalid_utf8", Edit::InvalidUtf8(5)),
        ],
    ),
    (
        "events",
        "events.csv",
        0,
        &[
            c("missing_value", Edit::Set(0, "")),
            c("unknown_customer", Edit::Set(0, "C99999999X")),
            c("bad_timestamp", Edit::Set(1, "yesterday")),
            c("not_accepted", Edit::Set(2, "click")),
            c("out_of_range", Edit::Set(1, "2099-06-01T12:00:00Z")),
            c("column_count", Edit::DropField),
            c("invalid_utf8", Edit::InvalidUtf8(2)),
        ],
    ),
    (
        "survey_responses",
        "survey_responses.csv",
        0,
        &[
            c("unknown_customer", Edit::Set(0, "C99999999X")),
            c("bad_date", Edit::Set(1, "2025/05/18")),
            c("not_accepted", Edit::Set(2, "cooking")),
            c("out_of_range", Edit::Set(3, "7")),
            c("out_of_range", Edit::Set(1, "2099-01-01")),
            c("bad_number", Edit::Set(3, "high")),
            c("column_count", Edit::DropField),
        ],
    ),
];

/// Counts of what was corrupted, for the summary line.
pub struct Report {
    pub corrupted: u64,
    pub cascaded: u64,
}

/// Corrupts `fraction` of the rows of the four files in `dir`, in place.
pub fn corrupt(dir: &Path, fraction: f64, seed: u64) -> Result<Report> {
    let list_path = dir.join("corrupted_rows.csv");
    let mut list = std::io::BufWriter::new(
        std::fs::File::create(&list_path)
            .with_context(|| format!("creating {}", list_path.display()))?,
    );
    writeln!(list, "table_name,line_number,reason")?;
    let mut rejected_customers: HashSet<Vec<u8>> = HashSet::new();
    let mut report = Report {
        corrupted: 0,
        cascaded: 0,
    };
    for (i, (table, file, customer_field, corruptions)) in TABLES.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0d1e_7a5e ^ (i as u64) << 32);
        let path = dir.join(file);
        let tmp = dir.join(format!(".{file}.dirty"));
        let input = std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?,
        );
        let mut out = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
        );
        let mut out_line = 0u64;
        for (n, line) in input.split(b'\n').enumerate() {
            let line = line?;
            out_line += 1;
            if n == 0 {
                out.write_all(&line)?;
                out.write_all(b"\n")?;
                continue;
            }
            let mut fields = split(&line)?;
            let customer = fields.get(*customer_field).cloned().unwrap_or_default();
            let cascades = i > 0 && rejected_customers.contains(&customer);
            let corruption = (rng.random::<f64>() < fraction)
                .then(|| corruptions[rng.random_range(0..corruptions.len())]);
            if matches!(corruption.map(|c| c.edit), None | Some(Edit::Duplicate)) {
                // The original row is written as it is: good, unless its customer was rejected.
                out.write_all(&line)?;
                out.write_all(b"\n")?;
                if cascades {
                    writeln!(list, "{table},{out_line},unknown_customer")?;
                    report.cascaded += 1;
                }
            }
            let Some(corruption) = corruption else {
                continue;
            };
            report.corrupted += 1;
            match corruption.edit {
                Edit::Set(f, text) => fields[f] = text.as_bytes().to_vec(),
                Edit::InvalidUtf8(f) => fields[f].extend_from_slice(b"\xff\xfe"),
                Edit::DropField => {
                    fields.pop();
                }
                Edit::Duplicate => {}
            }
            if let Edit::Duplicate = corruption.edit {
                // The copy that follows the original is the duplicate.
                out_line += 1;
                out.write_all(&line)?;
            } else {
                out.write_all(&join(&fields)?)?;
                if i == 0 {
                    rejected_customers.insert(customer);
                }
            }
            out.write_all(b"\n")?;
            writeln!(list, "{table},{out_line},{}", corruption.reason)?;
        }
        out.flush()?;
        drop(out);
        std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    }
    list.flush()?;
    Ok(report)
}

fn split(line: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line);
    let mut record = csv::ByteRecord::new();
    reader.read_byte_record(&mut record)?;
    Ok(record.iter().map(<[u8]>::to_vec).collect())
}

fn join(fields: &[Vec<u8>]) -> Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // An empty single field would be written as `""`; it is a row with one empty field.
    w.write_record(fields)?;
    let mut bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join_round_trip_quoted_fields() {
        let line = b"C1,\"Washington, D.C.\",x";
        let fields = split(line).unwrap();
        assert_eq!(fields[1], b"Washington, D.C.");
        assert_eq!(join(&fields).unwrap(), line);
    }

    #[test]
    fn corruption_field_indexes_fit_the_headers() {
        let widths = [9, 8, 4, 4];
        for ((table, _, customer, corruptions), width) in TABLES.iter().zip(widths) {
            assert!(*customer < width, "{table}");
            for c in *corruptions {
                if let Edit::Set(f, _) | Edit::InvalidUtf8(f) = c.edit {
                    assert!(f < width, "{table}: {}", c.reason);
                }
            }
        }
    }
}
