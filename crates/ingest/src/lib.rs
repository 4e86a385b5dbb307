//! segflow-ingest: stages that bring raw CRM exports into a run as typed tables.
//!
//! Each input table has a contract ([`contract`]): its columns, their types and nullability,
//! its keys and accepted values. `ingest.csv` reads a CSV file with DataFusion's parallel reader
//! (every column as text), casts each column to its contract type in one vectorized projection,
//! and checks the contract's keys and values on the result. A value that does not parse fails
//! the stage with the file, line and column of the first offenders, found by re-reading the file
//! only on that error path so the normal path stays one pass.
#![warn(missing_docs)]

pub mod contract;
pub mod csv_stage;
mod diagnose;

/// Registers this crate's kinds.
pub fn register(reg: &mut segflow_core::Registry) {
    reg.register(csv_stage::CsvIngestFactory);
}
