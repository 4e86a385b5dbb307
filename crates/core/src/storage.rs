//! Locations: local paths and object store URLs, and the stores behind them.
//!
//! Every location in a pipeline is a URL once resolved: a local path becomes an absolute
//! `file://` URL. Stores for other schemes are built from the standard environment variables
//! (`AWS_*`, `GOOGLE_*`, `AZURE_*`), registered once per bucket in DataFusion's runtime, and
//! shared by every stage of the run.

use std::sync::Arc;

use datafusion::prelude::SessionContext;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use url::Url;

use crate::error::{Error, Result};

/// Turns a local path (relative to the working directory) or a URL into a URL.
pub fn parse_location(text: &str) -> Result<Url> {
    let bad = |message: String| Error::Storage {
        location: text.to_string(),
        message,
        source: None,
    };
    if text.trim().is_empty() {
        return Err(bad("empty location; give a local path or a URL".into()));
    }
    // `C://x` would be a Windows drive, not a scheme.
    if let Some((scheme, _)) = text.split_once("://")
        && scheme.len() > 1
    {
        return Url::parse(text).map_err(|e| bad(format!("not a valid URL: {e}")));
    }
    let abs = std::path::absolute(text).map_err(|e| bad(format!("not a valid path: {e}")))?;
    Url::from_file_path(normalize(&abs)).map_err(|()| bad("not a valid absolute path".into()))
}

/// Removes `.` and `..` components without touching the file system (the path may not exist
/// yet); object store paths do not allow them.
fn normalize(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `base/child`, whether or not `base` ends with a slash.
pub fn join(base: &Url, child: &str) -> Url {
    let mut u = base.clone();
    let path = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        child.trim_start_matches('/')
    );
    u.set_path(&path);
    u
}

/// The same URL with a trailing slash: DataFusion treats such a URL as a directory (prefix).
pub fn as_dir(url: &Url) -> Url {
    let mut u = url.clone();
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    u
}

/// The object store key of a URL.
pub fn store_path(url: &Url) -> Result<StorePath> {
    StorePath::from_url_path(url.path()).map_err(|e| Error::Storage {
        location: url.to_string(),
        message: format!("not a valid object path: {e}"),
        source: None,
    })
}

/// Options for the stores under one URL prefix, from the pipeline's `storage:` block
/// (`s3://bucket: {endpoint: ..., region: ...}`). Values may hold secrets, so `Debug` shows
/// only the option names, and nothing here is ever serialized into a manifest.
#[derive(Clone)]
pub struct StoreConfig {
    /// `scheme://bucket` the options apply to.
    pub prefix: Url,
    /// object_store option names (`endpoint`, `region`, `access_key_id`, `allow_http`, ...)
    /// and their values.
    pub options: Vec<(String, String)>,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.options.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("StoreConfig")
            .field("prefix", &self.prefix.as_str())
            .field("options", &names)
            .finish()
    }
}

/// Registers a store built with each config's options (over the environment's) for its
/// bucket, so every later use of a URL under it goes through that store. When the session's
/// plans run on a cluster, the options also go into the session's configuration
/// ([`StorageOptions`]), which travels with every job, so that executors build the same
/// stores ([`StoreRegistry`]).
pub fn configure(ctx: &SessionContext, configs: &[StoreConfig]) -> Result<()> {
    for c in configs {
        let store = build_store_with(&c.prefix, &c.options)?;
        ctx.runtime_env().register_object_store(&c.prefix, store);
    }
    let engine = crate::session::engine(ctx);
    if engine.distributed
        && !engine.private_channel
        && let Some((c, name)) = configs.iter().find_map(|c| {
            c.options
                .iter()
                .find(|(k, _)| is_secret(k))
                .map(|(k, _)| (c, k))
        })
    {
        return Err(Error::Storage {
            location: c.prefix.to_string(),
            message: format!(
                "storage option `{name}` is a secret, and the executors of {} are reached over a \
                 connection that is not encrypted; give the executors their credentials in their \
                 own environment (AWS_*, GOOGLE_*, AZURE_*) and remove `{name}` from `storage:`",
                engine.name
            ),
            source: None,
        });
    }
    if engine.distributed && !configs.is_empty() {
        let state = ctx.state_ref();
        let mut state = state.write();
        let options = state
            .config_mut()
            .options_mut()
            .extensions
            .get_mut::<StorageOptions>()
            .ok_or_else(|| Error::Internal("the session has no segflow storage options".into()))?;
        options.stores = configs.to_vec();
    }
    Ok(())
}

/// The values of the secrets a process may hold: the pipeline's secret `storage:` options and
/// the environment's variables whose names say they are secrets (`AWS_SECRET_ACCESS_KEY`,
/// `AWS_ACCESS_KEY_ID`, `AZURE_STORAGE_ACCOUNT_KEY`, `..._TOKEN`, `..._PASSWORD`). The CLI
/// blanks them out of everything it prints, whoever formatted it (a library's debug log of its
/// client, an error with a URL). Values shorter than 8 characters are left out: blanking `true`
/// everywhere would only garble the logs, and no credential is that short.
pub fn secret_values(configs: &[StoreConfig]) -> Vec<String> {
    let from_env = std::env::vars().filter(|(name, _)| is_secret(name));
    let from_pipeline = configs
        .iter()
        .flat_map(|c| c.options.iter().cloned())
        .filter(|(name, _)| is_secret(name));
    let mut values: Vec<String> = from_env
        .chain(from_pipeline)
        .map(|(_, v)| v)
        .filter(|v| v.len() >= 8)
        .collect();
    values.sort();
    values.dedup();
    values
}

/// Whether a storage option holds a secret (a key, a token, a password): such options travel
/// to a cluster's executors only over a private channel.
fn is_secret(option: &str) -> bool {
    let o = option.to_ascii_lowercase();
    ["secret", "token", "password", "key", "sas", "credential"]
        .iter()
        .any(|s| o.contains(s))
}

/// The pipeline's `storage:` options as a DataFusion config extension, so that they travel
/// with a job to the executors of a cluster (`segflow_storage.stores`, JSON). Only sessions
/// whose plans run on a cluster set it. `Debug` names the options, never their values.
#[derive(Clone, Default)]
pub struct StorageOptions {
    pub stores: Vec<StoreConfig>,
}

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.stores).finish()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoreConfigWire {
    prefix: String,
    options: Vec<(String, String)>,
}

impl datafusion::config::ExtensionOptions for StorageOptions {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn cloned(&self) -> Box<dyn datafusion::config::ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> datafusion::error::Result<()> {
        use datafusion::error::DataFusionError;
        if key != "stores" {
            return Err(DataFusionError::Configuration(format!(
                "unknown option `segflow_storage.{key}`; the one option is `stores`"
            )));
        }
        let bad = |m: String| {
            DataFusionError::Configuration(format!("`segflow_storage.stores` is not valid: {m}"))
        };
        let wire: Vec<StoreConfigWire> = if value.is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(value).map_err(|e| bad(e.to_string()))?
        };
        self.stores = wire
            .into_iter()
            .map(|w| {
                Ok(StoreConfig {
                    prefix: Url::parse(&w.prefix).map_err(|e| bad(e.to_string()))?,
                    options: w.options,
                })
            })
            .collect::<datafusion::error::Result<_>>()?;
        Ok(())
    }

    fn entries(&self) -> Vec<datafusion::config::ConfigEntry> {
        let wire: Vec<StoreConfigWire> = self
            .stores
            .iter()
            .map(|c| StoreConfigWire {
                prefix: c.prefix.to_string(),
                options: c.options.clone(),
            })
            .collect();
        vec![datafusion::config::ConfigEntry {
            key: "segflow_storage.stores".into(),
            value: (!wire.is_empty()).then(|| serde_json::to_string(&wire).unwrap_or_default()),
            description: "the pipeline's storage options, for the executors of a cluster",
        }]
    }
}

impl datafusion::config::ConfigExtension for StorageOptions {
    const PREFIX: &'static str = "segflow_storage";
}

/// The object stores of a process that runs plans it did not build (an executor, a
/// scheduler): a store for a URL is built on first use, from the process's environment and
/// the options the job's session carries for that URL's bucket ([`StorageOptions`]), and kept.
#[derive(Debug, Default)]
pub struct StoreRegistry {
    configs: Vec<StoreConfig>,
    stores: std::sync::RwLock<std::collections::HashMap<String, Arc<dyn ObjectStore>>>,
}

impl StoreRegistry {
    /// A registry building stores with these options for their prefixes.
    pub fn new(configs: Vec<StoreConfig>) -> Self {
        StoreRegistry {
            configs,
            stores: Default::default(),
        }
    }

    /// The registry for a job's session: the options its configuration carries.
    pub fn for_config(config: &datafusion::prelude::SessionConfig) -> Self {
        let configs = config
            .options()
            .extensions
            .get::<StorageOptions>()
            .map(|o| o.stores.clone())
            .unwrap_or_default();
        StoreRegistry::new(configs)
    }
}

impl datafusion::execution::object_store::ObjectStoreRegistry for StoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.stores
            .write()
            .expect("stores lock")
            .insert(store_key(url).as_str().to_string(), store)
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        let key = store_key(url).as_str().to_string();
        if let Some(store) = self.stores.read().expect("stores lock").get(&key) {
            return Ok(store.clone());
        }
        let options = self
            .configs
            .iter()
            .find(|c| store_key(&c.prefix).as_str() == key)
            .map(|c| c.options.as_slice())
            .unwrap_or_default();
        let store = build_store_with(url, options)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        Ok(self
            .stores
            .write()
            .expect("stores lock")
            .entry(key)
            .or_insert(store)
            .clone())
    }
}

/// Builds the store for `url`'s scheme and bucket from the environment.
pub fn build_store(url: &Url) -> Result<Arc<dyn ObjectStore>> {
    build_store_with(url, &[])
}

/// Builds the store for `url`'s scheme and bucket from the environment and `options`, which
/// win over the environment.
fn build_store_with(url: &Url, options: &[(String, String)]) -> Result<Arc<dyn ObjectStore>> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
    use object_store::http::HttpBuilder;
    let fail = |e: object_store::Error| Error::Storage {
        location: url.to_string(),
        message: "cannot set up the object store".into(),
        source: Some(e),
    };
    // Each builder parses option names its own way; one loop per builder keeps the error
    // naming the option that was not understood.
    fn key<K: std::str::FromStr<Err = object_store::Error>>(url: &Url, name: &str) -> Result<K> {
        name.to_ascii_lowercase()
            .parse()
            .map_err(|_| Error::Storage {
                location: url.to_string(),
                message: format!(
                    "unknown storage option `{name}` for {}://; see the object_store docs for the names \
                     (e.g. endpoint, region, access_key_id, secret_access_key, allow_http)",
                    url.scheme()
                ),
                source: None,
            })
    }
    let no_options = |scheme: &str| -> Result<()> {
        match options.first() {
            None => Ok(()),
            Some((name, _)) => Err(Error::Storage {
                location: url.to_string(),
                message: format!("storage option `{name}`: {scheme} locations take no options"),
                source: None,
            }),
        }
    };
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "file" => {
            no_options("local")?;
            Arc::new(object_store::local::LocalFileSystem::new())
        }
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env().with_url(url.as_str());
            for (k, v) in options {
                b = b.with_config(key::<AmazonS3ConfigKey>(url, k)?, v);
            }
            Arc::new(b.build().map_err(fail)?)
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            for (k, v) in options {
                b = b.with_config(key::<GoogleConfigKey>(url, k)?, v);
            }
            Arc::new(b.build().map_err(fail)?)
        }
        "az" | "azure" | "abfs" | "abfss" | "adl" => {
            let mut b = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            for (k, v) in options {
                b = b.with_config(key::<AzureConfigKey>(url, k)?, v);
            }
            Arc::new(b.build().map_err(fail)?)
        }
        "http" | "https" => {
            let mut b = HttpBuilder::new().with_url(url.as_str());
            for (k, v) in options {
                b = b.with_config(key(url, k)?, v);
            }
            Arc::new(b.build().map_err(fail)?)
        }
        "memory" => {
            no_options("memory")?;
            Arc::new(object_store::memory::InMemory::new())
        }
        other => {
            return Err(Error::Storage {
                location: url.to_string(),
                message: format!(
                    "unsupported scheme `{other}`; use a local path, file://, s3://, gs://, az://, abfss:// or https://"
                ),
                source: None,
            });
        }
    };
    Ok(store)
}

/// The store serving `url` in this session, registering it on first use.
pub fn store_for(ctx: &SessionContext, url: &Url) -> Result<Arc<dyn ObjectStore>> {
    let runtime = ctx.runtime_env();
    if let Ok(store) = runtime.object_store(store_key(url)) {
        return Ok(store);
    }
    let store = build_store(url)?;
    runtime.register_object_store(url, store.clone());
    Ok(store)
}

/// DataFusion keys stores by scheme and authority.
pub(crate) fn store_key(url: &Url) -> datafusion::execution::object_store::ObjectStoreUrl {
    let s = format!(
        "{}://{}",
        url.scheme(),
        &url[url::Position::BeforeHost..url::Position::AfterPort]
    );
    datafusion::execution::object_store::ObjectStoreUrl::parse(s)
        .unwrap_or_else(|_| datafusion::execution::object_store::ObjectStoreUrl::local_filesystem())
}

/// Whether an object exists at `url`.
pub async fn exists(ctx: &SessionContext, url: &Url) -> Result<bool> {
    let store = store_for(ctx, url)?;
    match store.head(&store_path(url)?).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(Error::Storage {
            location: url.to_string(),
            message: "cannot read".into(),
            source: Some(e),
        }),
    }
}

/// The bytes of the object at `url`.
pub async fn read(ctx: &SessionContext, url: &Url) -> Result<Vec<u8>> {
    let store = store_for(ctx, url)?;
    let fail = |e| Error::Storage {
        location: url.to_string(),
        message: "cannot read".into(),
        source: Some(e),
    };
    let got = store.get(&store_path(url)?).await.map_err(fail)?;
    Ok(got.bytes().await.map_err(fail)?.to_vec())
}

/// One file an input location stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub url: Url,
    pub size: u64,
    /// The store's version tag (ETag), when it has one.
    pub e_tag: Option<String>,
}

/// Writes `value` as JSON at `url` (`what` names it in errors).
pub async fn put_json(
    ctx: &SessionContext,
    url: &Url,
    value: &impl serde::Serialize,
    what: &str,
) -> Result<()> {
    let body = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Internal(format!("{what} to JSON: {e}")))?;
    let store = store_for(ctx, url)?;
    store
        .put(&store_path(url)?, body.into())
        .await
        .map_err(|e| Error::Storage {
            location: url.to_string(),
            message: format!("cannot write the {what}"),
            source: Some(e),
        })?;
    Ok(())
}

/// The JSON document at `url`, or `None` when there is none.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    ctx: &SessionContext,
    url: &Url,
) -> Result<Option<T>> {
    let store = store_for(ctx, url)?;
    let bytes = match store.get(&store_path(url)?).await {
        Ok(r) => r.bytes().await,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => Err(e),
    }
    .map_err(|e| Error::Storage {
        location: url.to_string(),
        message: "cannot read it".into(),
        source: Some(e),
    })?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Storage {
            location: url.to_string(),
            message: format!("not the JSON document segflow wrote ({e}); move it aside"),
            source: None,
        })
}

/// The files a location stands for, sorted by URL: the object itself; the objects a glob
/// (`*`, `?`, `[...]` in the last segments) matches; or, for a directory or prefix, every
/// object under it whose name does not start with `_` or `.` (markers such as `_SUCCESS`).
/// Empty when nothing is there.
pub async fn list_files(ctx: &SessionContext, url: &Url) -> Result<Vec<FileEntry>> {
    use futures::TryStreamExt;
    let store = store_for(ctx, url)?;
    let fail = |message: &str, e| Error::Storage {
        location: url.to_string(),
        message: message.to_string(),
        source: Some(e),
    };
    let entry = |meta: object_store::ObjectMeta| {
        let mut u = url.clone();
        u.set_path(&format!("/{}", meta.location));
        u.set_query(None);
        FileEntry {
            url: u,
            size: meta.size,
            e_tag: meta.e_tag,
        }
    };
    let path = url.path();
    let mut files: Vec<FileEntry> = if path.contains(['*', '?', '[']) {
        // DataFusion splits globs off local paths only; split URLs the same way: the folder
        // before the first segment with a glob character is listed, the rest is the pattern.
        let first = path.find(['*', '?', '[']).unwrap_or(path.len());
        let cut = path[..first].rfind('/').map_or(0, |i| i + 1);
        let mut base = url.clone();
        base.set_path(&path[..cut]);
        let bad_glob = |message: String| Error::Storage {
            location: url.to_string(),
            message: format!("not a valid glob: {message}"),
            source: None,
        };
        let pattern = glob::Pattern::new(&path[cut..]).map_err(|e| bad_glob(e.to_string()))?;
        let listing =
            datafusion::datasource::listing::ListingTableUrl::try_new(base, Some(pattern))
                .map_err(|e| bad_glob(e.to_string()))?;
        let state = ctx.state();
        let listed = match listing.list_all_files(&state, store.as_ref(), "").await {
            Ok(stream) => stream.try_collect::<Vec<_>>().await,
            Err(e) => Err(e),
        };
        listed
            .map_err(|e| Error::Storage {
                location: url.to_string(),
                message: format!("cannot list: {e}"),
                source: None,
            })?
            .into_iter()
            .map(entry)
            .collect()
    } else {
        let object = store_path(url)?;
        match store.head(&object).await {
            Ok(meta) if !path.ends_with('/') => vec![entry(meta)],
            Ok(_) | Err(object_store::Error::NotFound { .. }) => store
                .list(Some(&object))
                .try_collect::<Vec<_>>()
                .await
                .or_else(|e| match e {
                    object_store::Error::NotFound { .. } => Ok(Vec::new()),
                    e => Err(fail("cannot list", e)),
                })?
                .into_iter()
                .filter(|m| {
                    // Skip hidden and marker files and folders below the prefix.
                    m.location
                        .prefix_match(&object)
                        .is_some_and(|mut rest| rest.all(|p| !p.as_ref().starts_with(['_', '.'])))
                })
                .map(entry)
                .collect(),
            Err(e) => return Err(fail("cannot read", e)),
        }
    };
    files.sort_by(|a, b| a.url.as_str().cmp(b.url.as_str()));
    Ok(files)
}

/// Whether any object exists under `prefix`.
pub async fn has_objects(ctx: &SessionContext, prefix: &Url) -> Result<bool> {
    use futures::StreamExt;
    let store = store_for(ctx, prefix)?;
    let path = store_path(prefix)?;
    match store.list(Some(&path)).next().await {
        None => Ok(false),
        Some(Ok(_)) => Ok(true),
        Some(Err(object_store::Error::NotFound { .. })) => Ok(false),
        Some(Err(e)) => Err(Error::Storage {
            location: prefix.to_string(),
            message: "cannot list".into(),
            source: Some(e),
        }),
    }
}

/// Deletes everything under `prefix`.
pub async fn delete_prefix(ctx: &SessionContext, prefix: &Url) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    let store = store_for(ctx, prefix)?;
    let path = store_path(prefix)?;
    let locations = store.list(Some(&path)).map_ok(|m| m.location).boxed();
    store
        .delete_stream(locations)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| Error::Storage {
            location: prefix.to_string(),
            message: "cannot delete".into(),
            source: Some(e),
        })?;
    if prefix.scheme() == "file" {
        // Local stores leave empty directories behind.
        if let Ok(p) = prefix.to_file_path() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_become_absolute_file_urls() {
        let u = parse_location("out/x").unwrap();
        assert_eq!(u.scheme(), "file");
        assert!(u.path().ends_with("/out/x"));
        let u = parse_location("/a/b/../c/./d").unwrap();
        assert_eq!(u.as_str(), "file:///a/c/d");
        assert_eq!(parse_location("s3://b/k").unwrap().as_str(), "s3://b/k");
        assert!(parse_location("").is_err());
    }

    #[test]
    fn join_handles_slashes() {
        let b = Url::parse("s3://b/root/").unwrap();
        assert_eq!(join(&b, "x/y").as_str(), "s3://b/root/x/y");
        let b = Url::parse("file:///tmp/a").unwrap();
        assert_eq!(join(&b, "/c").as_str(), "file:///tmp/a/c");
        assert_eq!(as_dir(&b).as_str(), "file:///tmp/a/");
    }

    #[test]
    fn storage_options_are_checked_and_kept_out_of_debug() {
        let url = Url::parse("s3://bucket").unwrap();
        let ok = StoreConfig {
            prefix: url.clone(),
            options: vec![
                ("endpoint".into(), "http://127.0.0.1:9".into()),
                ("access_key_id".into(), "segflow".into()),
                ("secret_access_key".into(), "hunter2".into()),
                ("allow_http".into(), "true".into()),
            ],
        };
        assert!(!format!("{ok:?}").contains("hunter2"));
        assert!(build_store_with(&url, &ok.options).is_ok());
        let err = build_store_with(&url, &[("endpont".into(), "x".into())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown storage option `endpont`"), "{err}");
    }

    #[test]
    fn storage_options_go_with_jobs_to_a_cluster_and_secrets_only_privately() {
        use crate::session::{EngineInfo, SessionOptions};
        let cluster = |private: bool| {
            let engine =
                EngineInfo::new("ballista://scheduler:50050", true).with_private_channel(private);
            let config = crate::session::config(&SessionOptions::default())
                .unwrap()
                .with_extension(Arc::new(engine));
            SessionContext::new_with_config(config)
        };
        let prefix = Url::parse("s3://bucket").unwrap();
        let endpoint = StoreConfig {
            prefix: prefix.clone(),
            options: vec![("endpoint".into(), "http://127.0.0.1:9".into())],
        };
        let secret = StoreConfig {
            prefix,
            options: vec![
                ("endpoint".into(), "http://127.0.0.1:9".into()),
                ("access_key_id".into(), "segflow".into()),
                ("secret_access_key".into(), "hunter2".into()),
            ],
        };
        let stores = |ctx: &SessionContext| {
            let state = ctx.state();
            let options = state
                .config()
                .options()
                .extensions
                .get::<StorageOptions>()
                .cloned();
            options.unwrap().stores
        };
        // Over a connection that is not private, options go with jobs, secrets do not.
        let ctx = cluster(false);
        configure(&ctx, std::slice::from_ref(&endpoint)).unwrap();
        assert_eq!(stores(&ctx).len(), 1);
        let e = configure(&cluster(false), std::slice::from_ref(&secret))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`access_key_id` is a secret"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        // On this machine they may.
        let ctx = cluster(true);
        configure(&ctx, std::slice::from_ref(&secret)).unwrap();
        // As the executors' registry reads them back from the settings a job carries.
        let mut received = StorageOptions::default();
        use datafusion::config::ExtensionOptions;
        let entry = &stores(&ctx);
        let sent = StorageOptions {
            stores: entry.clone(),
        }
        .entries();
        received
            .set("stores", sent[0].value.as_deref().unwrap())
            .unwrap();
        assert_eq!(received.stores[0].options, secret.options);
        assert!(!format!("{received:?}").contains("hunter2"));
        // The embedded engine keeps them out of the session's settings.
        let local = crate::session::new_session(&SessionOptions::default()).unwrap();
        configure(&local, &[secret]).unwrap();
        assert!(stores(&local).is_empty());
    }

    #[test]
    fn unsupported_scheme_names_the_supported_ones() {
        let err = build_store(&Url::parse("ftp://x/y").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported scheme `ftp`"), "{err}");
    }
}
