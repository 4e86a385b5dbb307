//! DataFusion session set-up: one place decides how every stage's SQL runs.
//!
//! Stages receive a plain `SessionContext` and never build their own, so the same stages can run
//! on a distributed context (Ballista) built here instead.

use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{Error, Result};

/// How the session is sized.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Partitions (threads) per query; default: the number of cores.
    pub target_partitions: Option<usize>,
    /// Memory for query execution; operators that can spill do so past it. Default: no limit.
    pub memory_limit_bytes: Option<usize>,
}

/// A session for a run. DataFusion's own options can be set by their environment variables
/// (`DATAFUSION_EXECUTION_BATCH_SIZE=16384`, `DATAFUSION_OPTIMIZER_REPARTITION_FILE_MIN_SIZE`,
/// ...), as in DataFusion's CLI; `options` override them.
pub fn new_session(options: &SessionOptions) -> Result<SessionContext> {
    let mut config = SessionConfig::from_env()
        .map_err(|e| Error::Internal(format!("reading DATAFUSION_* settings: {e}")))?
        .with_information_schema(true);
    if let Some(n) = options.target_partitions {
        config = config.with_target_partitions(n.max(1));
    }
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = options.memory_limit_bytes {
        runtime = runtime.with_memory_pool(std::sync::Arc::new(FairSpillPool::new(limit)));
    }
    let runtime = runtime
        .build_arc()
        .map_err(|e| Error::Internal(format!("building the DataFusion runtime: {e}")))?;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}
