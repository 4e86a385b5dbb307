//! segflow-core: the pipeline model and the engine that runs it.
//!
//! This crate owns everything a stage needs and nothing a stage does: the pipeline spec as
//! written in YAML ([`spec`]), its resolution into a checked [`plan::Plan`], the [`stage::Stage`]
//! trait and the [`stage::Registry`] that maps a YAML `kind` to a factory, SQL files with named
//! parameters ([`sql`]), locations and object stores ([`storage`]), the DataFusion session
//! ([`session`]), run tables ([`table`]), data checks ([`checks`]), the publish protocol
//! ([`publish`]) and run manifests ([`manifest`], with peaks of resident memory from
//! [`resident`]). The stage kinds themselves live in the `segflow-ingest`, `-features`,
//! `-segment` and `-export` crates, which depend on this one and never on each other; the
//! `segflow` CLI is the only crate that knows them all.
//!
//! The decision a newcomer asks about: every stage output is materialized as Parquet under the
//! run's own prefix, and only published, as a Delta Lake commit, once every stage and check of
//! the run has passed. Object stores have no atomic directory rename; a Delta commit is the
//! atomic step, so a failed or killed run never leaves a half-written output visible. Every
//! stage is a DataFusion plan (SQL or DataFrame) over those tables, which keeps the same pipeline
//! runnable on DataFusion Ballista when one machine is outgrown.

pub mod checks;
pub mod comments;
pub mod error;
pub mod files;
pub mod fingerprint;
pub mod lease;
pub mod manifest;
pub mod plan;
pub mod pointer;
pub mod publish;
pub mod resident;
pub mod resume;
pub mod runner;
pub mod session;
pub mod spec;
pub mod sql;
pub mod stage;
pub mod storage;
pub mod table;
pub mod vars;
pub mod write;
pub mod yaml;

pub use error::{Error, ErrorClass, Result};
pub use plan::Plan;
pub use stage::{BuildContext, Registry, Stage, StageContext, StageFactory};

/// Re-exported so stage crates use the exact DataFusion and Delta versions the core is built on.
pub use datafusion;
pub use deltalake;
