//! segflow-export: stages that publish a run's tables for readers outside segflow.
//!
//! Exporting is a request, not a write: `export.delta` names which run tables go where, and
//! the runner publishes them only after every stage and check of the run has passed (see
//! `segflow_core::publish`); they are Delta Lake tables, readable by DuckDB, Spark, Polars,
//! Trino and the warehouses. The other exports act on what a run published, after it did
//! ([`segflow_core::Stage::after_publish`]), reading every table at the version the run
//! pointer names: `export.postgres` syncs tables to PostgreSQL, `export.files` writes Parquet
//! or CSV copies with a `_SUCCESS` manifest, `export.crm` CRM import files, `export.report` a
//! self-contained HTML report.
#![warn(missing_docs)]

pub mod crm;
pub mod delta;
pub mod error;
pub mod files;
pub mod folder;
pub mod postgres;
pub mod published;
pub mod report;

/// Registers this crate's kinds.
pub fn register(reg: &mut segflow_core::Registry) {
    reg.register(crm::CrmExportFactory);
    reg.register(delta::DeltaExportFactory);
    reg.register(files::FilesExportFactory);
    reg.register(postgres::PostgresExportFactory);
    reg.register(report::ReportExportFactory);
}
