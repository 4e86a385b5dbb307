//! The `Stage` trait, its factories, and the registry that maps a YAML `kind` to a factory.
//!
//! A kind is a pair, as in Vector: a serde config type (`RulesConfig`) and the runtime type it
//! builds (`Rules`). Stage crates expose `pub fn register(reg: &mut Registry)`; the CLI calls
//! one per crate, so the list of kinds is visible in one place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use datafusion::prelude::{DataFrame, SessionContext};
use url::Url;

use crate::error::{Error, Result};
use crate::publish::{PublishRequest, WrittenFiles};
use crate::spec::{SpecSource, StageSpec};
use crate::table::{self, TableInfo};
use crate::vars::Vars;

/// A runnable stage, built from one `stages:` entry.
#[async_trait]
pub trait Stage: Send + Sync + std::fmt::Debug {
    /// Logical tables this stage reads.
    fn inputs(&self) -> Vec<String>;
    /// Logical tables this stage produces (materialized through [`StageContext::materialize`]).
    fn outputs(&self) -> Vec<String>;
    /// Lines `segflow plan` prints under the stage: its SQL file, its source, its rules.
    fn describe(&self) -> Vec<String> {
        Vec::new()
    }
    /// What `segflow validate` warns about: the pipeline runs, but something is missing that
    /// readers will want (a segment without a description).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
    async fn run(&self, cx: &StageContext<'_>) -> Result<()>;
    /// Adds to `f` what the stage's tables depend on besides its YAML keys (vars expanded) and
    /// its input tables, which the runner adds itself: the text of the files it was built
    /// from (a SQL file, a contract), and the state of what it reads outside the run (its
    /// input files' listing, a Delta table's version). `segflow run --resume` reuses a failed
    /// run's tables only where the fingerprint is unchanged ([`crate::fingerprint`]), so a
    /// part left out here is a stale table reused.
    async fn fingerprint(
        &self,
        ctx: &SessionContext,
        run: &RunInfo,
        f: &mut crate::fingerprint::Fingerprint,
    ) -> Result<()>;
    /// What the stage will ask to publish, when that is known before the run (an export's
    /// tables): such a run table is written straight into its Delta table (write once).
    fn publish_targets(&self) -> Vec<PublishRequest> {
        Vec::new()
    }
    /// Whether the stage acts on what the run published rather than on run tables (a sync to
    /// a warehouse, export files): such a stage takes no input or output table, runs after
    /// the run's last commit and its `_runs/_published.json` ([`crate::pointer`]), in file
    /// order, and reads the tables at the versions the pointer names. Its failure fails the
    /// run, whose tables stay published; rerunning it alone is the sync pipeline's job.
    fn after_publish(&self) -> bool {
        false
    }
}

/// What a factory gets besides the stage's own spec.
#[derive(Debug)]
pub struct BuildContext<'a> {
    pub source: &'a SpecSource,
    /// Directory of the pipeline file, for paths in the YAML that are relative to it.
    pub pipeline_dir: &'a Path,
    /// Directory that `sql:` paths are relative to.
    pub sql_dir: &'a Path,
    pub vars: &'a Vars,
}

impl BuildContext<'_> {
    /// Resolves a path written in the pipeline file against the pipeline's directory.
    pub fn relative_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.pipeline_dir.join(p)
        }
    }
}

/// Builds stages of one kind.
pub trait StageFactory: Send + Sync {
    /// `<area>.<name>`, the value of `kind:` in YAML.
    fn kind(&self) -> &'static str;
    /// One line for `segflow stages`.
    fn summary(&self) -> &'static str;
    /// A complete `stages:` entry using this kind; a test checks that it builds.
    fn example_yaml(&self) -> &'static str;
    fn build(&self, spec: &StageSpec, cx: &BuildContext<'_>) -> Result<Box<dyn Stage>>;
}

/// Every stage kind the binary knows.
#[derive(Default)]
pub struct Registry {
    factories: BTreeMap<&'static str, Box<dyn StageFactory>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind. Registering the same kind twice is a programming error.
    pub fn register(&mut self, factory: impl StageFactory + 'static) {
        let kind = factory.kind();
        let previous = self.factories.insert(kind, Box::new(factory));
        assert!(previous.is_none(), "stage kind `{kind}` registered twice");
    }

    pub fn get(&self, kind: &str) -> Option<&dyn StageFactory> {
        self.factories.get(kind).map(|f| f.as_ref())
    }

    pub fn kinds(&self) -> Vec<String> {
        self.factories.keys().map(|k| k.to_string()).collect()
    }

    pub fn factories(&self) -> impl Iterator<Item = &dyn StageFactory> {
        self.factories.values().map(|f| f.as_ref())
    }
}

/// Builds a factory's `example_yaml` against the repository's `sql/` directory. Each stage crate
/// calls this from a unit test, so the documented examples always build.
pub fn check_example(factory: &dyn StageFactory, repo_root: &Path) -> Result<Box<dyn Stage>> {
    build_yaml(factory, repo_root, factory.example_yaml())
}

/// Builds one stage from its YAML (as in a pipeline's `stages:` list) against the repository's
/// `pipelines/` and `sql/` directories: for unit tests of a factory's checks.
pub fn build_yaml(
    factory: &dyn StageFactory,
    repo_root: &Path,
    text: &str,
) -> Result<Box<dyn Stage>> {
    let file = repo_root.join("pipelines/examples/<example>.yaml");
    let text = text.to_string();
    let spec: StageSpec = crate::yaml::from_str(&file, &text)?;
    assert_eq!(
        spec.kind,
        factory.kind(),
        "the YAML of `{}` uses another kind",
        factory.kind()
    );
    let source = SpecSource { file, text };
    let vars = Vars::default();
    factory.build(
        &spec,
        &BuildContext {
            source: &source,
            pipeline_dir: &repo_root.join("pipelines"),
            sql_dir: &repo_root.join("sql"),
            vars: &vars,
        },
    )
}

/// Facts about the run that stages may record (Delta commit info, output columns).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunInfo {
    pub run_id: String,
    pub pipeline: String,
    pub pipeline_file: PathBuf,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub vars: Vars,
    /// `--full-refresh`: incremental stages rebuild their outputs from every input file
    /// instead of adding the new ones.
    pub full_refresh: bool,
}

/// Receives progress while a run goes on; the CLI draws it.
pub trait Observer: Send + Sync {
    /// The run has its id; nothing has been read yet.
    fn run_started(&self, _run: &RunInfo) {}
    fn stage_started(&self, _stage: &str, _kind: &str) {}
    /// Rows written so far by the stage's current output.
    fn rows(&self, _stage: &str, _rows: u64) {}
    fn stage_finished(&self, _report: &crate::manifest::StageReport) {}
    fn publish_started(&self, _table: &str, _url: &Url) {}
    fn published(&self, _published: &crate::manifest::PublishReport) {}
    fn warning(&self, _stage: &str, _message: &str) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

/// What a stage can do while it runs.
pub struct StageContext<'a> {
    pub ctx: &'a SessionContext,
    pub stage_id: &'a str,
    pub run: &'a RunInfo,
    pub(crate) work: &'a Url,
    pub(crate) observer: &'a dyn Observer,
    pub(crate) tables: &'a Mutex<BTreeMap<String, TableInfo>>,
    pub(crate) publishes: Mutex<Vec<PublishRequest>>,
    pub(crate) metrics: Mutex<BTreeMap<String, serde_json::Value>>,
    /// Run tables some stage will publish, known before the run: written into their table.
    pub(crate) targets: &'a BTreeMap<String, PublishRequest>,
    /// Run tables written into their Delta table, for the publish step to commit.
    pub(crate) written: &'a Mutex<BTreeMap<String, WrittenFiles>>,
    /// The processes that wrote the stage's files (`local`, or executors' ids).
    pub(crate) workers: Mutex<std::collections::BTreeSet<String>>,
}

impl StageContext<'_> {
    /// Writes `df` as the run's table `name` and registers it for the stages that follow.
    /// Tables live under the run's work prefix until the run ends; publishing them is a
    /// separate step (see [`crate::publish`]).
    /// A table that a later stage appends to a Delta table, or overwrites it with, is written
    /// into that table's location instead, and only committed there when the run passes.
    pub async fn materialize(&self, name: &str, df: DataFrame) -> Result<TableInfo> {
        self.materialize_for(name, df, self.targets.get(name)).await
    }

    /// [`StageContext::materialize`] for a table this stage will publish with `request`
    /// (through [`StageContext::publish`]): written into the Delta table when the request
    /// allows ([`crate::publish::writes_directly`]), else as a run table.
    pub async fn materialize_published(
        &self,
        name: &str,
        df: DataFrame,
        request: &PublishRequest,
    ) -> Result<TableInfo> {
        self.materialize_for(name, df, Some(request)).await
    }

    async fn materialize_for(
        &self,
        name: &str,
        df: DataFrame,
        target: Option<&PublishRequest>,
    ) -> Result<TableInfo> {
        let destination = match target {
            Some(r) if crate::publish::writes_directly(r) => {
                table::Destination::Delta(&r.url, &r.partition_by)
            }
            _ => table::Destination::Work,
        };
        let (info, written) = table::materialize(self, name, df, destination).await?;
        self.record(info.clone(), written);
        Ok(info)
    }

    /// Writes `df` as two run tables in one pass: its rows where column `split.by` is true
    /// as the first, the others as the second ([`table::Split`]). The first is written into
    /// its Delta table when `publish` (its publish request, as for
    /// [`StageContext::materialize_published`]) allows; the second is a run table.
    pub async fn materialize_split(
        &self,
        df: DataFrame,
        split: table::Split,
        publish: Option<&PublishRequest>,
    ) -> Result<table::SplitTables> {
        let target = publish.or_else(|| self.targets.get(&split.first.0));
        let destination = match target {
            Some(r) if crate::publish::writes_directly(r) => {
                table::Destination::Delta(&r.url, &r.partition_by)
            }
            _ => table::Destination::Work,
        };
        let (tables, [a, b]) = table::materialize_split(self, df, split, destination).await?;
        self.record(tables.first.clone(), a);
        self.record(tables.second.clone(), b);
        Ok(tables)
    }

    /// Registers batches this stage computed in memory (`partitions`, of `schema`) as run
    /// table `name`: as they are when plans run in this process, written to the run's work
    /// prefix first when they run on a cluster ([`crate::session::EngineInfo::distributed`]).
    pub async fn materialize_batches(
        &self,
        name: &str,
        schema: arrow::datatypes::SchemaRef,
        partitions: Vec<Vec<arrow::array::RecordBatch>>,
    ) -> Result<TableInfo> {
        let info = table::materialize_batches(self, name, schema, partitions).await?;
        self.record(info.clone(), None);
        Ok(info)
    }

    /// Where this run's plans run.
    pub fn engine(&self) -> std::sync::Arc<crate::session::EngineInfo> {
        crate::session::engine(self.ctx)
    }

    /// Notes the processes that wrote this stage's files.
    pub(crate) fn record_workers<'w>(&self, workers: impl Iterator<Item = &'w str>) {
        let mut all = self.workers.lock().expect("workers lock");
        for w in workers {
            if !all.contains(w) {
                all.insert(w.to_string());
            }
        }
    }

    /// Forgets run table `name` and deletes its files: the files written for it into a Delta
    /// table, which no commit will name now, or its directory under the run's work prefix.
    /// For a stage that wrote a table and then builds it another way: a rewrite with fewer
    /// partitions would otherwise leave the first write's other files in the table.
    pub async fn discard(&self, name: &str) -> Result<()> {
        use object_store::ObjectStoreExt;
        let written = self.written.lock().expect("written lock").remove(name);
        let info = self.tables.lock().expect("tables lock").remove(name);
        let files = match (written, info) {
            (Some(w), _) => w.file_urls()?,
            (None, Some(info)) if info.url.as_str().starts_with(self.work_dir().as_str()) => {
                crate::storage::list_files(self.ctx, &info.url)
                    .await?
                    .into_iter()
                    .map(|f| f.url)
                    .collect()
            }
            _ => Vec::new(),
        };
        for url in files {
            let store = crate::storage::store_for(self.ctx, &url)?;
            let path = crate::storage::store_path(&url)?;
            store.delete(&path).await.map_err(|e| Error::Storage {
                location: url.to_string(),
                message: format!("cannot delete a file of discarded table `{name}`"),
                source: Some(e),
            })?;
        }
        self.ctx
            .deregister_table(name)
            .map_err(self.df_err(format!("discarding table `{name}`")))?;
        Ok(())
    }

    /// Remembers a table written, and the files written for it into a Delta table.
    fn record(&self, info: TableInfo, written: Option<WrittenFiles>) {
        let name = info.name.clone();
        let mut all = self.written.lock().expect("written lock");
        match written {
            Some(w) => all.insert(name.clone(), w),
            // Rewritten as a run table: an earlier direct write of the name no longer counts.
            None => all.remove(&name),
        };
        drop(all);
        self.tables.lock().expect("tables lock").insert(name, info);
    }

    /// A table produced earlier in the run.
    pub async fn table(&self, name: &str) -> Result<DataFrame> {
        self.ctx
            .table(name)
            .await
            .map_err(|source| Error::DataFusion {
                stage: self.stage_id.to_string(),
                context: format!("reading table `{name}`"),
                source,
            })
    }

    /// Rows of a table produced earlier in the run.
    pub fn rows_of(&self, name: &str) -> Option<u64> {
        self.tables
            .lock()
            .expect("tables lock")
            .get(name)
            .map(|t| t.rows)
    }

    /// Asks the runner to publish a table once every stage and check has passed.
    pub fn publish(&self, request: PublishRequest) {
        self.publishes.lock().expect("publishes lock").push(request);
    }

    /// A figure for the run summary and manifest (e.g. rows per segment).
    pub fn metric(&self, key: &str, value: serde_json::Value) {
        self.metrics
            .lock()
            .expect("metrics lock")
            .insert(key.to_string(), value);
    }

    pub fn warn(&self, message: &str) {
        tracing::warn!(stage = self.stage_id, "{message}");
        self.observer.warning(self.stage_id, message);
    }

    pub(crate) fn report_rows(&self, rows: u64) {
        self.observer.rows(self.stage_id, rows);
    }

    pub(crate) fn work_dir(&self) -> &Url {
        self.work
    }

    /// Wraps a DataFusion error with this stage's id.
    pub fn df_err(
        &self,
        context: impl Into<String>,
    ) -> impl FnOnce(datafusion::error::DataFusionError) -> Error + '_ {
        let context = context.into();
        move |source| Error::DataFusion {
            stage: self.stage_id.to_string(),
            context,
            source,
        }
    }
}
