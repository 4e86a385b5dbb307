//! The errors of running on a cluster.

use segflow_core::ErrorClass;

/// What went wrong reaching, running or serving a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--engine` (or `engine:`, `SEGFLOW_ENGINE`) does not name an engine.
    #[error("engine `{engine}`: {message}")]
    Engine { engine: String, message: String },

    /// The scheduler did not answer.
    #[error(
        "cannot reach the Ballista scheduler at {cluster} ({message}); is `segflow scheduler` running there, and reachable from here?"
    )]
    Connect { cluster: String, message: String },

    /// A scheduler or executor could not listen where it was told to.
    #[error("cannot listen on {address}; choose another address or port")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },

    /// Ballista failed (starting a scheduler or an executor, or running a job).
    #[error("Ballista: {0}")]
    Ballista(#[from] ballista_core::error::BallistaError),

    /// Setting up the session failed.
    #[error(transparent)]
    Segflow(#[from] segflow_core::Error),

    #[error(transparent)]
    DataFusion(#[from] segflow_core::datafusion::error::DataFusionError),
}

impl Error {
    /// The error's class (segflow's exit codes): an engine that does not parse is invalid, a
    /// scheduler that does not answer may answer later.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Engine { .. } => ErrorClass::Invalid,
            Error::Connect { .. } => ErrorClass::Transient,
            Error::Bind { .. } | Error::Ballista(_) => ErrorClass::Failed,
            Error::Segflow(e) => e.class(),
            Error::DataFusion(e) => segflow_core::error::df_class(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
