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

    /// A DataFusion setting (a `DATAFUSION_*` variable) that DataFusion refused.
    #[error("{setting} is not a valid DataFusion setting; fix or unset it")]
    Config {
        setting: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    /// Another run holds the output's lease, or this run lost it.
    #[error("{message}")]
    Lease { message: String },

    #[error("publishing `{table}` to {url} (the table keeps its previous version)")]
    Publish {
        table: String,
        url: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },

    /// A stage failed talking to a system outside segflow (a warehouse, a CRM's files): the
    /// stage's crate says what failed and what a scheduler can do about it.
    #[error("stage `{stage}`: {message}")]
    External {
        stage: String,
        message: String,
        class: ErrorClass,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    #[error("run cancelled")]
    Cancelled,

    /// `run --resume RUN_ID` names a run that cannot be resumed.
    #[error("cannot resume run {run_id}: {message}")]
    Resume { run_id: String, message: String },

    /// A broken invariant inside segflow: not the user's fault.
    #[error(
        "internal error: {0}. This is a bug in segflow; please report it with the pipeline file"
    )]
    Internal(String),
}

/// What a scheduler can do about a failed run; each class is an exit code of `segflow run`
/// (docs/scheduling.md). Classes come from the error's type and its sources' types, never from
/// its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The run failed for another reason (a bug, a full disk, a refused permission). Exit 1.
    Failed,
    /// The pipeline, its SQL, a var or a setting is invalid; found before data was read. Exit 2.
    Invalid,
    /// The data failed a check (a contract threshold, a stage check, a fit that did not
    /// converge): rerunning on the same input cannot help. Exit 3.
    Data,
    /// Storage or the network failed after retries, or another run holds the output's lease:
    /// rerunning later can help. Exit 4.
    Transient,
    /// The run was interrupted (SIGINT, SIGTERM). Exit 130.
    Interrupted,
}

impl ErrorClass {
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorClass::Failed => 1,
            ErrorClass::Invalid => 2,
            ErrorClass::Data => 3,
            ErrorClass::Transient => 4,
            ErrorClass::Interrupted => 130,
        }
    }
}

impl Error {
    /// The error's class, from its variant and, for library errors, its source's type.
    pub fn class(&self) -> ErrorClass {
        match self {
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
            | Error::Config { .. }
            | Error::Resume { .. } => ErrorClass::Invalid,
            // SQL that DataFusion cannot plan (a stage's file, a `where:`) is a pipeline
            // error; a query that fails while running is classed by what failed.
            Error::Sql { source, .. } | Error::DataFusion { source, .. } => {
                match df_class(source) {
                    ErrorClass::Failed if is_plan_error(source) => ErrorClass::Invalid,
                    c => c,
                }
            }
            Error::BadData { .. } | Error::CheckFailed { .. } => ErrorClass::Data,
            Error::InputNotFound { .. } => ErrorClass::Failed,
            Error::Storage { source, .. } => {
                source.as_ref().map_or(ErrorClass::Transient, store_class)
            }
            Error::Lease { .. } => ErrorClass::Transient,
            Error::Publish { source, .. } => delta_class(source),
            Error::External { class, .. } => *class,
            Error::Cancelled => ErrorClass::Interrupted,
            Error::Internal(_) => ErrorClass::Failed,
        }
    }
}

/// An object store error's class: what retrying may fix (the store answered 5xx or not at
/// all, a conditional write lost a race) against what it cannot (a missing object, a
/// refused credential, a bad URL).
pub fn store_class(e: &object_store::Error) -> ErrorClass {
    use object_store::Error as E;
    match e {
        E::NotFound { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. } => ErrorClass::Failed,
        E::Precondition { .. } | E::AlreadyExists { .. } | E::NotModified { .. } => {
            ErrorClass::Transient
        }
        E::Generic { source, .. } => io_class(source.as_ref()).unwrap_or(ErrorClass::Transient),
        _ => ErrorClass::Transient,
    }
}

/// The class of an I/O error found among an error's sources, if one is there: network
/// failures and timeouts are transient, the rest (a full disk, a refused permission) not.
fn io_class(e: &(dyn std::error::Error + 'static)) -> Option<ErrorClass> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return Some(match io.kind() {
                K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::NotConnected
                | K::BrokenPipe
                | K::TimedOut
                | K::Interrupted
                | K::UnexpectedEof => ErrorClass::Transient,
                _ => ErrorClass::Failed,
            });
        }
        next = e.source();
    }
    None
}

/// A DataFusion error's class, from the error it wraps.
pub fn df_class(e: &datafusion::error::DataFusionError) -> ErrorClass {
    use datafusion::error::DataFusionError as D;
    match e {
        D::ObjectStore(e) => store_class(e),
        D::IoError(e) => io_class(e).unwrap_or(ErrorClass::Failed),
        D::Configuration(_) => ErrorClass::Invalid,
        D::Context(_, inner) => df_class(inner),
        D::Shared(inner) => df_class(inner),
        D::Diagnostic(_, inner) => df_class(inner),
        D::Collection(errors) => errors.first().map_or(ErrorClass::Failed, df_class),
        D::External(inner) => external_class(inner.as_ref()),
        D::ArrowError(inner, _) => match inner.as_ref() {
            arrow::error::ArrowError::ExternalError(e) => external_class(e.as_ref()),
            arrow::error::ArrowError::IoError(_, e) => io_class(e).unwrap_or(ErrorClass::Failed),
            _ => ErrorClass::Failed,
        },
        _ => ErrorClass::Failed,
    }
}

/// An error a DataFusion operator carried: segflow's own (a reader's bad data, a check) keep
/// their class, a store's or a DataFusion error inside is classed as itself.
fn external_class(e: &(dyn std::error::Error + Send + Sync + 'static)) -> ErrorClass {
    if let Some(e) = e.downcast_ref::<Error>() {
        return e.class();
    }
    if let Some(e) = e.downcast_ref::<datafusion::error::DataFusionError>() {
        return df_class(e);
    }
    if let Some(e) = e.downcast_ref::<object_store::Error>() {
        return store_class(e);
    }
    if let Some(e) = e.downcast_ref::<deltalake::DeltaTableError>() {
        return delta_class(e);
    }
    io_class(e).unwrap_or(ErrorClass::Failed)
}

fn is_plan_error(e: &datafusion::error::DataFusionError) -> bool {
    use datafusion::error::DataFusionError as D;
    matches!(
        e.find_root(),
        D::Plan(_) | D::SQL(..) | D::SchemaError(..) | D::NotImplemented(_)
    )
}

/// A Delta error's class: a store failure or a commit that lost its race can go another way
/// on a rerun.
pub fn delta_class(e: &deltalake::DeltaTableError) -> ErrorClass {
    use deltalake::DeltaTableError as E;
    match e {
        E::ObjectStore { source } => store_class(source),
        E::VersionAlreadyExists(_) => ErrorClass::Transient,
        E::Transaction { source } => {
            use deltalake::kernel::transaction::TransactionError as T;
            match source {
                T::ObjectStore { source } => store_class(source),
                T::VersionAlreadyExists(_) | T::CommitConflict(_) | T::MaxCommitAttempts(_) => {
                    ErrorClass::Transient
                }
                _ => ErrorClass::Failed,
            }
        }
        E::Io { source } => io_class(source).unwrap_or(ErrorClass::Failed),
        E::Arrow {
            source: arrow::error::ArrowError::ExternalError(e),
        } => external_class(e.as_ref()),
        _ => ErrorClass::Failed,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources, as one line: `what failed: why: why deeper`. The one way segflow
/// prints an error (the CLI, the manifest). A source whose text the line already holds is
/// left out (a DataFusion error is shown by its root's text).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = match e.downcast_ref::<datafusion::error::DataFusionError>() {
        Some(df) => df_message(df),
        None => e.to_string(),
    };
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        let shown = inner
            .downcast_ref::<datafusion::error::DataFusionError>()
            .is_some_and(|df| s.contains(&df_message(df)));
        if !shown && !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

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

#[cfg(test)]
mod tests {
    use datafusion::error::DataFusionError;

    use super::*;

    fn store_error(kind: std::io::ErrorKind) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::new(kind, "the wire")),
        }
    }

    fn in_stage(source: DataFusionError) -> Error {
        Error::DataFusion {
            stage: "s".into(),
            context: "scanning".into(),
            source,
        }
    }

    #[test]
    fn classes_come_from_types_and_sources() {
        let bad = || Error::BadData {
            stage: "s".into(),
            message: "too many bad rows".into(),
        };
        let cases = [
            (bad(), ErrorClass::Data),
            // segflow's own error travelling through DataFusion keeps its class.
            (
                in_stage(DataFusionError::External(Box::new(bad()))),
                ErrorClass::Data,
            ),
            (
                in_stage(DataFusionError::ObjectStore(Box::new(store_error(
                    std::io::ErrorKind::ConnectionReset,
                )))),
                ErrorClass::Transient,
            ),
            (
                in_stage(
                    DataFusionError::ObjectStore(Box::new(object_store::Error::NotFound {
                        path: "x".into(),
                        source: "gone".into(),
                    }))
                    .context("reading x"),
                ),
                ErrorClass::Failed,
            ),
            (
                in_stage(DataFusionError::Shared(std::sync::Arc::new(
                    DataFusionError::IoError(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "slow",
                    )),
                ))),
                ErrorClass::Transient,
            ),
            (
                in_stage(DataFusionError::Plan("no column x".into())),
                ErrorClass::Invalid,
            ),
            (
                in_stage(DataFusionError::Execution("overflow".into())),
                ErrorClass::Failed,
            ),
            (
                Error::Config {
                    setting: "DATAFUSION_EXECUTION_BATCH_SIZE".into(),
                    source: DataFusionError::Configuration("not a number".into()),
                },
                ErrorClass::Invalid,
            ),
            (
                Error::Publish {
                    table: "t".into(),
                    url: "s3://b/t".into(),
                    source: Box::new(deltalake::DeltaTableError::VersionAlreadyExists(3)),
                },
                ErrorClass::Transient,
            ),
            (
                Error::Storage {
                    location: "s3://b/x".into(),
                    message: "cannot write".into(),
                    source: Some(object_store::Error::Unauthenticated {
                        path: "x".into(),
                        source: "bad key".into(),
                    }),
                },
                ErrorClass::Failed,
            ),
            (
                Error::Lease {
                    message: "held".into(),
                },
                ErrorClass::Transient,
            ),
            (Error::Cancelled, ErrorClass::Interrupted),
        ];
        for (e, class) in cases {
            assert_eq!(e.class(), class, "{e:?}");
        }
    }

    #[test]
    fn a_chain_shows_every_source_once() {
        let e = Error::Storage {
            location: "s3://b/x".into(),
            message: "cannot write the run manifest".into(),
            source: Some(store_error(std::io::ErrorKind::ConnectionReset)),
        };
        let line = chain(&e);
        assert_eq!(line.matches("the wire").count(), 1, "{line}");
        assert!(
            line.starts_with("s3://b/x: cannot write the run manifest: "),
            "{line}"
        );
        // A DataFusion error shows its root's text, not DataFusion's wrappers.
        let df = in_stage(DataFusionError::External(Box::new(Error::BadData {
            stage: "ingest".into(),
            message: "orders.csv:6: bad amount".into(),
        })));
        let line = chain(&df);
        assert_eq!(line.matches("orders.csv:6").count(), 1, "{line}");
        assert!(!line.contains("External error"), "{line}");
    }
}
