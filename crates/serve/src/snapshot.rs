//! What a query reads: the tables of the run `_published.json` names, each at the Delta version
//! the pointer gives it, never a mix of two runs.
//!
//! Every query first looks at the pointer's metadata (a `HEAD`: a `stat` on local files). When
//! it changed, the new pointer's tables are opened at their versions and become the snapshot
//! later queries read; a query already running keeps the snapshot it started on, whose files
//! stay until `segflow vacuum` (7 days by default). Tables are served as what they were at that
//! version: their Parquet files, listed once when the snapshot is loaded.
//!
//! If loading a new pointer's tables fails (a table removed by hand), the previous snapshot
//! stays served, the failure is logged, and the next query tries again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _};
use segflow_core::datafusion::arrow::datatypes::SchemaRef;
use segflow_core::datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider, SchemaProvider,
};
use segflow_core::datafusion::prelude::SessionContext;
use segflow_core::{pointer, publish, storage};
use url::Url;

use crate::query::QueryLog;
use segflow_core::comments::Comments;

/// The catalog and schema every table is served under: `segflow.public.<table>`.
pub const CATALOG: &str = "segflow";
pub const SCHEMA: &str = "public";

/// How many earlier snapshots stay available to tickets issued before a new run published
/// (a client's GetFlightInfo and DoGet are two calls).
const KEPT: usize = 4;

/// One run's tables, as queries read them.
#[derive(Debug)]
pub struct Snapshot {
    /// Names the snapshot in tickets: the pointer's run and publish time.
    pub key: String,
    /// The run that wrote the pointer (`None` before the first publish).
    pub run_id: Option<String>,
    pub tables: Vec<ServedTable>,
    pub catalogs: Arc<dyn CatalogProviderList>,
}

#[derive(Debug, Clone)]
pub struct ServedTable {
    pub name: String,
    /// The table's columns, each with its contract comment in the field metadata.
    pub schema: SchemaRef,
}

impl Snapshot {
    fn empty() -> Snapshot {
        Snapshot {
            key: "none".into(),
            run_id: None,
            tables: Vec::new(),
            catalogs: catalog_list(MemorySchemaProvider::new()),
        }
    }
}

pub(crate) fn catalog_list(schema: MemorySchemaProvider) -> Arc<dyn CatalogProviderList> {
    let catalog = MemoryCatalogProvider::new();
    catalog
        .register_schema(SCHEMA, Arc::new(schema))
        .expect("a memory catalog takes schemas");
    let list = MemoryCatalogProviderList::new();
    list.register_catalog(CATALOG.into(), Arc::new(catalog));
    Arc::new(list)
}

/// The pointer's identity as stored: a new publish changes it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    e_tag: Option<String>,
    last_modified: DateTime<Utc>,
    size: u64,
}

impl From<&ObjectMeta> for Seen {
    fn from(m: &ObjectMeta) -> Self {
        Seen {
            e_tag: m.e_tag.clone(),
            last_modified: m.last_modified,
            size: m.size,
        }
    }
}

struct Cache {
    seen: Option<Seen>,
    current: Arc<Snapshot>,
    recent: VecDeque<Arc<Snapshot>>,
}

/// The published tables of one output, following its pointer.
pub struct Published {
    ctx: SessionContext,
    runs: Url,
    store: Arc<dyn ObjectStore>,
    path: object_store::path::Path,
    comments: Comments,
    log: Arc<dyn QueryLog>,
    cache: Mutex<Cache>,
    /// One load at a time: queries that find the pointer changed wait for the one loading it.
    loading: tokio::sync::Mutex<()>,
}

/// What went wrong reading the pointer or a table; queries get it as `UNAVAILABLE`.
pub type LoadError = segflow_core::Error;

impl Published {
    /// Follows `<runs>/_published.json`, reading through `ctx`'s object stores; tells `log`
    /// when it starts serving a run.
    pub fn new(
        ctx: SessionContext,
        runs: Url,
        log: Arc<dyn QueryLog>,
    ) -> Result<Published, LoadError> {
        let url = pointer::location(&runs);
        let store = storage::store_for(&ctx, &url)?;
        let path = storage::store_path(&url)?;
        Ok(Published {
            ctx,
            runs,
            store,
            path,
            comments: Comments::contract(),
            log,
            cache: Mutex::new(Cache {
                seen: None,
                current: Arc::new(Snapshot::empty()),
                recent: VecDeque::new(),
            }),
            loading: tokio::sync::Mutex::new(()),
        })
    }

    /// The snapshot of the latest finished publish.
    pub async fn current(&self) -> Result<Arc<Snapshot>, LoadError> {
        let seen = self.look().await?;
        if let Some(s) = self.cached_if(&seen) {
            return Ok(s);
        }
        let _one = self.loading.lock().await;
        // Another query may have loaded it while this one waited.
        if let Some(s) = self.cached_if(&seen) {
            return Ok(s);
        }
        let Some(seen) = seen else {
            return Ok(self.cache.lock().expect("snapshot cache").current.clone());
        };
        match self.load().await {
            Ok(snapshot) => {
                let snapshot = Arc::new(snapshot);
                let mut cache = self.cache.lock().expect("snapshot cache");
                let old = std::mem::replace(&mut cache.current, snapshot.clone());
                let new_run = old.run_id != snapshot.run_id;
                if old.run_id.is_some() {
                    cache.recent.push_front(old);
                    cache.recent.truncate(KEPT);
                }
                cache.seen = Some(seen);
                drop(cache);
                if let Some(run) = &snapshot.run_id
                    && new_run
                {
                    self.log.serving(run, snapshot.tables.len());
                }
                Ok(snapshot)
            }
            Err(e) => {
                let cache = self.cache.lock().expect("snapshot cache");
                if cache.current.run_id.is_none() {
                    return Err(e);
                }
                tracing::warn!(
                    "cannot load the tables `{}` names ({e}); still serving run {}",
                    pointer::location(&self.runs),
                    cache.current.run_id.as_deref().unwrap_or("-")
                );
                Ok(cache.current.clone())
            }
        }
    }

    /// The snapshot a ticket names, if it is still kept.
    pub fn by_key(&self, key: &str) -> Option<Arc<Snapshot>> {
        let cache = self.cache.lock().expect("snapshot cache");
        std::iter::once(&cache.current)
            .chain(cache.recent.iter())
            .find(|s| s.key == key)
            .cloned()
    }

    /// The pointer's metadata, `None` before the first publish.
    async fn look(&self) -> Result<Option<Seen>, LoadError> {
        match self.store.head(&self.path).await {
            Ok(meta) => Ok(Some(Seen::from(&meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(segflow_core::Error::Storage {
                location: pointer::location(&self.runs).to_string(),
                message: "cannot read the publish pointer".into(),
                source: Some(e),
            }),
        }
    }

    fn cached_if(&self, seen: &Option<Seen>) -> Option<Arc<Snapshot>> {
        let cache = self.cache.lock().expect("snapshot cache");
        (cache.seen == *seen).then(|| cache.current.clone())
    }

    /// Opens every table of the pointer at its version.
    async fn load(&self) -> Result<Snapshot, LoadError> {
        let Some((ptr, _)) = pointer::read(&self.ctx, &self.runs).await? else {
            return Ok(Snapshot::empty());
        };
        let schema = MemorySchemaProvider::new();
        let mut tables = Vec::new();
        for (name, t) in &ptr.tables {
            let url = storage::parse_location(&t.url)?;
            let table = publish::open_table_at(&self.ctx, &url, t.version).await?;
            let provider = publish::provider(&self.ctx, &table, &url).await?;
            let annotated =
                crate::contract::annotate(&self.comments, name, provider.schema().as_ref());
            schema
                .register_table(name.clone(), provider)
                .map_err(|e| segflow_core::Error::Internal(format!("serving `{name}`: {e}")))?;
            tables.push(ServedTable {
                name: name.clone(),
                schema: annotated,
            });
        }
        Ok(Snapshot {
            key: format!("{}@{}", ptr.run_id, ptr.published_at.timestamp_micros()),
            run_id: Some(ptr.run_id),
            tables,
            catalogs: catalog_list(schema),
        })
    }
}
