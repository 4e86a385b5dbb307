//! DataFusion session set-up: one place decides how every stage's SQL runs.
//!
//! Stages receive a plain `SessionContext` and never build their own. The embedded engine's
//! context is built here; a distributed one (Ballista, `segflow-distributed`) starts from the
//! same [`config`] and swaps the query planner for one that sends plans to a cluster. What a
//! stage may need to know about the difference is in [`EngineInfo`].

use std::sync::{Arc, Mutex};

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{Error, Result};
use crate::write::SegflowQueryPlanner;

/// How the session is sized.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Partitions (threads) per query; default: the number of cores.
    pub target_partitions: Option<usize>,
    /// Memory for query execution; operators that can spill do so past it. Default: no limit.
    pub memory_limit_bytes: Option<usize>,
}

/// Where a session's plans run, for the stages and the run manifest.
#[derive(Debug)]
pub struct EngineInfo {
    /// `local`, or the cluster the plans go to (`ballista://host:port`).
    pub name: String,
    /// Plans run in other processes: data this process holds in memory must be written to
    /// storage before a plan can read it, and a plan's in-process hooks see nothing.
    pub distributed: bool,
    /// What this process sends the engine stays on this machine, or travels encrypted: the
    /// pipeline's storage secrets may go with a job ([`crate::storage::configure`]).
    pub private_channel: bool,
    /// The cluster's ids of the jobs run since the runner last took them.
    jobs: Mutex<Vec<String>>,
}

impl EngineInfo {
    /// The embedded engine: plans run in this process.
    pub fn local() -> Self {
        Self::new("local", false)
    }

    pub fn new(name: impl Into<String>, distributed: bool) -> Self {
        EngineInfo {
            name: name.into(),
            distributed,
            private_channel: true,
            jobs: Mutex::new(Vec::new()),
        }
    }

    /// The same, with [`EngineInfo::private_channel`] as given.
    pub fn with_private_channel(mut self, private: bool) -> Self {
        self.private_channel = private;
        self
    }

    /// Notes a job the engine ran (its id on the cluster).
    pub fn record_job(&self, id: String) {
        self.jobs.lock().expect("jobs lock").push(id);
    }

    /// The jobs recorded since the last call.
    pub fn take_jobs(&self) -> Vec<String> {
        std::mem::take(&mut *self.jobs.lock().expect("jobs lock"))
    }
}

/// The engine `ctx` runs its plans on: [`EngineInfo::local`] unless its builder said otherwise.
pub fn engine(ctx: &SessionContext) -> Arc<EngineInfo> {
    ctx.state_ref()
        .read()
        .config()
        .get_extension::<EngineInfo>()
        .unwrap_or_else(|| Arc::new(EngineInfo::local()))
}

/// The configuration of a run's session. DataFusion's own options can be set by their
/// environment variables (`DATAFUSION_EXECUTION_BATCH_SIZE=16384`,
/// `DATAFUSION_OPTIMIZER_REPARTITION_FILE_MIN_SIZE`, ...), as in DataFusion's CLI; `options`
/// override them.
pub fn config(options: &SessionOptions) -> Result<SessionConfig> {
    let mut config = SessionConfig::from_env()
        .map_err(|source| Error::Config {
            setting: "a DATAFUSION_* environment variable".into(),
            source,
        })?
        .with_information_schema(true)
        .with_option_extension(crate::storage::StorageOptions::default())
        .with_extension(Arc::new(EngineInfo::local()));
    if let Some(n) = options.target_partitions {
        config = config.with_target_partitions(n.max(1));
    }
    Ok(config)
}

/// The runtime of a run's session: its memory pool.
pub fn runtime(options: &SessionOptions) -> Result<Arc<RuntimeEnv>> {
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = options.memory_limit_bytes {
        runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
    }
    runtime
        .build_arc()
        .map_err(|e| Error::Internal(format!("building the DataFusion runtime: {e}")))
}

/// A session on the embedded engine: plans run in this process, with segflow's plan nodes.
pub fn new_session(options: &SessionOptions) -> Result<SessionContext> {
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config(options)?)
        .with_runtime_env(runtime(options)?)
        .with_query_planner(Arc::new(SegflowQueryPlanner))
        .build();
    Ok(SessionContext::new_with_state(state))
}
