//! The one error type of segflow-core.
//!
//! Variants follow the life of a run: loading the spec (`Spec`, `UnknownKind`, ...), resolving it
//! into a plan (`Cycle`, `DanglingInput`, `MissingParam`, ...), running it (`Sql`, `InputNotFound`,
//! `CheckFailed`, ...) and publishing (`Publish`). Every message names where the problem is and
//! ends with what to do about it.

use std::path::PathBuf;

/// A position in a text file, 1-based, as editors show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// `file:line:column` when the position is known, `file` otherwise.
pub fn at(file: &std::path::Path, location: Option<Location>) -> String {
    match location {
        Some(l) => format!("{}:{l}", file.display()),
        None => file.display().to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The YAML does not parse, or does not have the shape of a pipeline.
    #[error("{}: {message}", at(file, *location))]
    Spec {
        file: PathBuf,
        location: Option<Location>,
        message: String,
    },

    #[error(
        "{}: stage `{stage}` has unknown kind `{kind}`; the registered kinds are: {}",
        at(file, *location), known.join(", ")
    )]
    UnknownKind {
        file: PathBuf,
        location: Option<Location>,
        stage: String,
        kind: String,
        known: Vec<String>,
    },

    #[error("{}: {message}", file.display())]
    Invalid { file: PathBuf, message: String },

    #[error(
        "{}: the stages form a cycle: {}; an output cannot feed a stage it depends on, so break the loop",
        file.display(), cycle.join(" -> ")
    )]
    Cycle { file: PathBuf, cycle: Vec<String> },

    #[error(
        "{}: stage `{stage}` reads table `{table}`, which no stage produces; tables produced: {}",
        file.display(), if produced.is_empty() { "(none)".to_string() } else { produced.join(", ") }
    )]
    DanglingInput {
        file: PathBuf,
        stage: String,
        table: String,
        produced: Vec<String>,
    },

    #[error(
        "{}: `${{{name}}}` is not a pipeline var; declare it under `vars:` or pass --var {name}=VALUE (vars: {})",
        file.display(), if known.is_empty() { "(none)".to_string() } else { known.join(", ") }
    )]
    UnknownVar {
        file: PathBuf,
        name: String,
        known: Vec<String>,
    },

    #[error("var `{name}`: {message}")]
    BadVar { name: String, message: String },

    #[error(
        "stage `{stage}`: {} uses `${name}` but {} does not set it; add it under the stage's `params`",
        sql.display(), pipeline.display()
    )]
    MissingParam {
        pipeline: PathBuf,
        stage: String,
        sql: PathBuf,
        name: String,
    },

    #[error(
        "stage `{stage}`: param `{name}` is set in {} but {} never uses `${name}`; remove it or use it",
        pipeline.display(), sql.display()
    )]
    UnusedParam {
        pipeline: PathBuf,
        stage: String,
        sql: PathBuf,
        name: String,
    },

    /// DataFusion rejected a stage's SQL, at planning or execution.
    #[error("stage `{stage}`: {}: {}", sql.display(), df_message(source))]
    Sql {
        stage: String,
        sql: PathBuf,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    /// DataFusion failed outside a SQL file (a scan, a write, a plan built in code).
    #[error("stage `{stage}`: {context}: {}", df_message(source))]
    DataFusion {
        stage: String,
        context: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    #[error("stage `{stage}`: input not found: {url}; check the path, or set it with --var")]
    InputNotFound { stage: String, url: String },

    /// A stage found something wrong with the data it read.
    #[error("stage `{stage}`: {message}")]
    BadData { stage: String, message: String },

    #[error("{location}: {message}")]
    Storage {
        location: String,
        message: String,
        #[source]
        source: Option<object_store::Error>,
    },

    #[error("stage `{stage}`: check `{check}` failed on table `{table}`: {message}")]
    CheckFailed {
        stage: String,
        table: String,
        check: String,
        message: String,
    },

    #[error("publishing `{table}` to {url}: {source}; the table keeps its previous version")]
    Publish {
        table: String,
        url: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },

    #[error("run cancelled")]
    Cancelled,

    /// A broken invariant inside segflow: not the user's fault.
    #[error(
        "internal error: {0}. This is a bug in segflow; please report it with the pipeline file"
    )]
    Internal(String),
}

impl Error {
    /// True when the problem is in the pipeline definition (YAML, SQL files, vars), found before
    /// any data was read. The CLI gives these their own exit code.
    pub fn is_spec_error(&self) -> bool {
        matches!(
            self,
            Error::ReadFile { .. }
                | Error::Spec { .. }
                | Error::UnknownKind { .. }
                | Error::Invalid { .. }
                | Error::Cycle { .. }
                | Error::DanglingInput { .. }
                | Error::UnknownVar { .. }
                | Error::BadVar { .. }
                | Error::MissingParam { .. }
                | Error::UnusedParam { .. }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A DataFusion error's text for a person. Errors that segflow's own readers raise (a file and
/// line, what is wrong) travel as `External` and read better without DataFusion's
/// "External error: " prefix.
pub(crate) fn df_message(e: &datafusion::error::DataFusionError) -> String {
    // The root past DataFusion's wrappers (shared across partitions, through Arrow).
    match e.find_root() {
        datafusion::error::DataFusionError::External(inner) => inner.to_string(),
        _ => e.to_string(),
    }
}
