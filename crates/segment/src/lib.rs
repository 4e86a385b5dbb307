//! segflow-segment: stages that assign customers to segments.
//!
//! A rule segmentation ([`rules`]) is data, not code: a name, ordered rules (a segment name and a
//! SQL predicate over the input table's columns) and a default segment. The first rule that
//! matches wins, so every row gets exactly one segment. The rules compile into one DataFusion
//! `CASE` expression, which keeps the stage a plain DataFusion plan. RFM, demographic,
//! geographic and psychographic segmentations are all this one kind with different rules.
//!
//! Clusters ([`kmeans`]) are the data-driven counterpart: k-means over transformed features,
//! each pass over the data a DataFusion aggregate, deterministic for a seed whatever the number
//! of threads.
#![warn(missing_docs)]

pub mod kmeans;
pub mod rules;

/// Registers this crate's kinds.
pub fn register(reg: &mut segflow_core::Registry) {
    reg.register(rules::RulesFactory);
    reg.register(kmeans::KMeansFactory);
}
