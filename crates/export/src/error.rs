//! What the exports that leave segflow (a warehouse, export files, CRM files) can fail with,
//! and what a scheduler can do about each ([`ErrorClass`]).

use segflow_core::ErrorClass;

/// A failed sync or export. Messages name the database by host, port and name, never its
/// password: the URL itself is never printed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The connection settings do not parse, or name something segflow cannot use.
    #[error("{0}")]
    Settings(String),

    /// PostgreSQL refused or failed a statement, or the connection to it.
    #[error("{target}: {context}: {message}")]
    Postgres {
        /// `host:port/database as user`.
        target: String,
        /// What segflow was doing (`connecting`, `COPY into segflow.customer_segments`).
        context: String,
        /// The server's message with its detail and hint, or the client's.
        message: String,
        /// What a scheduler can do about it.
        class: ErrorClass,
        /// The client's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A published table does not fit its target (a column type without a PostgreSQL
    /// equivalent, an existing table with other types, duplicate keys).
    #[error("{0}")]
    Mismatch(String),

    /// segflow's own tables (the published ones, export files) failed to read or write.
    #[error(transparent)]
    Core(#[from] segflow_core::Error),
}

impl ExportError {
    /// What a scheduler can do: retry later (the server was unreachable, restarting, or the
    /// transaction lost a race), or not (bad settings, refused credentials or privileges,
    /// data that does not fit).
    pub fn class(&self) -> ErrorClass {
        match self {
            ExportError::Settings(_) => ErrorClass::Invalid,
            ExportError::Postgres { class, .. } => *class,
            ExportError::Mismatch(_) => ErrorClass::Failed,
            ExportError::Core(e) => e.class(),
        }
    }

    /// The error as the runner reports it, for stage `stage`.
    pub fn into_core(self, stage: &str) -> segflow_core::Error {
        match self {
            ExportError::Core(e) => e,
            e => segflow_core::Error::External {
                stage: stage.to_string(),
                message: e.to_string(),
                class: e.class(),
                source: Some(Box::new(e)),
            },
        }
    }
}

/// This crate's results.
pub type Result<T, E = ExportError> = std::result::Result<T, E>;
