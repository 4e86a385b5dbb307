//! segflow-ingest: stages that bring raw CRM exports into a run as typed tables.
//!
//! Each input table has a contract ([`contract`]): its columns, their types and nullability,
//! ranges and accepted values, its keys and foreign keys. `ingest.csv`, `ingest.ndjson` and
//! `ingest.parquet` read files with a line-aware reader per format, run by one leaf plan
//! (`source`), that types and checks every field as it reads it (`row_checks`), look the keys
//! up (duplicates, foreign keys: `validate`), and split the rows: good ones into the output
//! table, bad ones, with file, line, reason and raw text, into a quarantine table
//! (`file_stage`). Only the quarantined rows' text is kept: a row a later check (keys,
//! references) quarantines has its text read again from the file by offset ([`raw_text`]).
//! Nothing is dropped silently, and a file that is mostly bad fails the stage. `ingest.delta`
//! ([`delta_source`]) reads a table segflow published earlier, such as the segment history.
#![warn(missing_docs)]

pub mod contract;
pub mod delta_source;
pub mod file_stage;
mod formats;
pub mod incremental;
mod key_hash;
mod key_set;
mod raw_text;
mod row_checks;
mod source;
mod validate;
pub mod wire;

/// Registers this crate's kinds.
pub fn register(reg: &mut segflow_core::Registry) {
    use file_stage::{IngestFactory, SourceFormat};
    for format in [
        SourceFormat::Csv,
        SourceFormat::Ndjson,
        SourceFormat::Parquet,
    ] {
        reg.register(IngestFactory(format));
    }
    reg.register(delta_source::DeltaSourceFactory);
}
