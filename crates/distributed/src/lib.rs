//! segflow-distributed: the same pipelines on a DataFusion Ballista cluster.
//!
//! A run on a cluster is the run on the embedded engine with another `SessionContext`
//! ([`client::connect`]): stages build the same DataFusion plans, and each plan goes to
//! Ballista's scheduler, which cuts it into stages and hands the tasks to executors. What
//! makes segflow's plans travel is here:
//!
//! - [`codec`]: a logical and a physical extension codec, over Ballista's own, for segflow's
//!   plan nodes (the ingest's scan, the writer), in-memory tables and functions (the key
//!   checks, the k-means pass and assignment, with their state);
//! - [`cluster`]: `segflow scheduler` and `segflow executor`, Ballista's scheduler and
//!   executor with those codecs, segflow's planner and object stores built from each job's
//!   settings;
//! - [`client`]: the session a run uses, and the note of each Ballista job it ran;
//! - [`broadcast`]: the scheduler's guard against broadcasting a join that answers for its
//!   build side's unmatched rows (every task would answer again).
//!
//! Jobs use Ballista's static planner, not its adaptive one (AQE, Ballista's default): with
//! AQE, the default pipeline's `customer_features` came out with 799 and 2,191 rows for 299
//! customers in two of three runs (customers repeated), where the static planner gave 299 in
//! every run. The session asks for the static planner with each job
//! (`ballista.planner.adaptive.enabled = false`).
//!
//! The main design choice: every stage output is written by the executors that computed it
//! (`segflow_core::write`), and only the list of its files comes back to the client, which
//! registers exactly those files as the run table, or commits exactly their Add actions to a
//! Delta table. A retried task's earlier files are never named, so a retry cannot duplicate
//! rows, and a failed job leaves nothing published.

pub mod broadcast;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod error;

pub use client::{ClusterUrl, connect};
pub use cluster::{ExecutorOptions, SchedulerOptions, run_executor, run_scheduler, standalone};
pub use error::{Error, Result};
