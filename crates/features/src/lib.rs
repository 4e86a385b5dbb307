//! segflow-features: feature-engineering stages.
//!
//! Features are SQL: one query per file under `sql/`, run by DataFusion over the run's tables.
//! This crate owns the `features.sql` kind, which turns such a file into a stage; the queries
//! themselves (`sql/features/*.sql`) are the feature library. SQL keeps features reviewable by
//! analysts, testable as golden files, and runnable by any DataFusion engine, Ballista included.
//! Predicted value is the exception SQL cannot express: the `features.clv` kind fits the BG/NBD
//! and Gamma-Gamma models to a SQL summary of each customer's purchases (`src/clv/`).
#![warn(missing_docs)]

mod clv;
mod sql_stage;

pub use clv::stage::{Clv, ClvConfig};
pub use sql_stage::{SqlStage, SqlStageConfig};

/// Registers this crate's kinds.
pub fn register(reg: &mut segflow_core::Registry) {
    reg.register(sql_stage::SqlStageFactory);
    reg.register(clv::stage::ClvFactory);
}
