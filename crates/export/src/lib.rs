//! segflow-export: stages that publish a run's tables for readers outside segflow.
//!
//! Exporting is a request, not a write: a stage here names which run tables go where, and the
//! runner publishes them only after every stage and check of the run has passed (see
//! `segflow_core::publish`). `export.delta` publishes Delta Lake tables, readable by DuckDB,
//! Spark, Polars, Trino and the warehouses.
#![warn(missing_docs)]

pub mod delta;

/// Registers this crate's kinds.
pub fn register(reg: &mut segflow_core::Registry) {
    reg.register(delta::DeltaExportFactory);
}
