use std::net::SocketAddr;
use std::path::PathBuf;

use segflow_core::ErrorClass;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option or the token configuration is not usable; the message says what to change.
    #[error("{0}")]
    Config(String),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the Flight SQL server stopped: {0}")]
    Transport(#[source] tonic::transport::Error),
    #[error(transparent)]
    Core(#[from] segflow_core::Error),
}

impl Error {
    /// The exit code's class (docs/scheduling.md).
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Config(_) | Error::Read { .. } => ErrorClass::Invalid,
            // The port is taken or the network failed: starting again later can help.
            Error::Listen { .. } | Error::Transport(_) => ErrorClass::Transient,
            Error::Core(e) => e.class(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
