//! One run at a time on an output: a lease under the pipeline's runs folder.
//!
//! The lease is a chain of small immutable records, `<runs>/_lease/<generation>.json`, each
//! created with a conditional put (`PutMode::Create`: refused when the name exists). The newest
//! generation says which run holds the output and until when. A run takes the lease by creating
//! the next generation when the newest has expired or was released; it renews it by creating
//! the next one again, every third of its time to live; it gives it back with a last record
//! marked released. When two runs race for one generation the store lets exactly one create it,
//! and the other sees who won. A holder whose renewal finds its generation taken, or that could
//! not renew before its record expired, has lost the lease: the runner checks before every
//! commit and stops (exit 4) instead of publishing over the new holder.
//!
//! Only create-if-absent is needed, which S3 (`If-None-Match`), GCS, Azure and local files all
//! provide. Expiry compares the holder's clock with the reader's: keep the time to live well
//! above the clock skew between machines (the default is 60 s).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};
use crate::storage;

/// How a run takes its output's lease.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// How long a record holds without renewal: a killed run's lease frees after this.
    pub ttl: Duration,
    /// Wait for a held lease instead of failing at once.
    pub wait: bool,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            ttl: Duration::from_secs(60),
            wait: false,
        }
    }
}

/// One generation of the lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The run holding the lease.
    pub run_id: String,
    pub host: String,
    pub pid: u32,
    pub written_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The holder gave the lease back: the next run may take it at once.
    pub released: bool,
}

impl Record {
    fn free(&self, now: DateTime<Utc>) -> bool {
        self.released || self.expires_at <= now
    }
}

/// A lease this run holds, renewed in the background until [`Lease::release`].
pub struct Lease {
    inner: Arc<Inner>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Lease {
    /// A lease dropped without [`Lease::release`] (its run was dropped) stops renewing and
    /// frees when its record expires.
    fn drop(&mut self) {
        if let Some(r) = &self.renewer {
            r.abort();
        }
    }
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    dir: Url,
    run_id: String,
    ttl: Duration,
    /// The generation of this run's newest record.
    generation: AtomicU64,
    /// Set when another run took the lease, or a renewal could not be made in time.
    lost: AtomicBool,
    /// The expiry of this run's newest record.
    expires_at: std::sync::Mutex<DateTime<Utc>>,
    lock: tokio::sync::Mutex<()>,
}

fn host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

fn record_name(generation: u64) -> String {
    format!("{generation:020}.json")
}

impl Inner {
    fn path(&self, generation: u64) -> Result<StorePath> {
        storage::store_path(&storage::join(&self.dir, &record_name(generation)))
    }

    fn storage_error(&self, message: &str, source: object_store::Error) -> Error {
        Error::Storage {
            location: self.dir.to_string(),
            message: message.to_string(),
            source: Some(source),
        }
    }

    /// The newest generation and its record, if there is one.
    async fn newest(&self) -> Result<Option<(u64, Record)>> {
        use futures::TryStreamExt as _;
        let prefix = storage::store_path(&self.dir)?;
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.storage_error("cannot list the lease", e))?;
        let newest = metas
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse().ok())
            .max();
        let Some(generation) = newest else {
            return Ok(None);
        };
        let bytes = match self.store.get(&self.path(generation)?).await {
            Ok(got) => got
                .bytes()
                .await
                .map_err(|e| self.storage_error("cannot read the lease", e))?,
            // Deleted by its holder after a newer one was written: look again.
            Err(object_store::Error::NotFound { .. }) => return Box::pin(self.newest()).await,
            Err(e) => return Err(self.storage_error("cannot read the lease", e)),
        };
        let record = serde_json::from_slice(&bytes).map_err(|e| Error::Lease {
            message: format!(
                "{}{}: not a lease record ({e}); delete the `_lease` folder if no run is going",
                self.dir,
                record_name(generation)
            ),
        })?;
        Ok(Some((generation, record)))
    }

    /// Creates generation `generation` with this run's record; false when it exists already.
    async fn create(&self, generation: u64, released: bool) -> Result<bool> {
        let now = Utc::now();
        let expires_at = now + chrono::Duration::from_std(self.ttl).unwrap_or_default();
        let record = Record {
            run_id: self.run_id.clone(),
            host: host(),
            pid: std::process::id(),
            written_at: now,
            expires_at,
            released,
        };
        let body = serde_json::to_vec(&record).expect("a lease record serializes");
        let put = self
            .store
            .put_opts(
                &self.path(generation)?,
                body.into(),
                PutOptions::from(PutMode::Create),
            )
            .await;
        match put {
            Ok(_) => {
                self.generation.store(generation, Ordering::SeqCst);
                *self.expires_at.lock().expect("lease lock") = expires_at;
                Ok(true)
            }
            // Refused: another run's record, or this one's own, written by a first try whose
            // answer was lost (the retry then finds it). Only the record tells which.
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                let there = match self.store.get(&self.path(generation)?).await {
                    Ok(got) => got.bytes().await.ok(),
                    Err(_) => None,
                };
                let ours = there
                    .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
                    .is_some_and(|r| {
                        r.run_id == record.run_id && r.written_at == record.written_at
                    });
                if ours {
                    self.generation.store(generation, Ordering::SeqCst);
                    *self.expires_at.lock().expect("lease lock") = expires_at;
                }
                Ok(ours)
            }
            Err(e) => Err(self.storage_error("cannot write the lease", e)),
        }
    }

    /// Deletes this run's records older than its newest (best effort: a later run does too).
    async fn prune(&self) {
        let newest = self.generation.load(Ordering::SeqCst);
        for g in newest.saturating_sub(3)..newest {
            if let Ok(path) = self.path(g) {
                let _ = self.store.delete(&path).await;
            }
        }
    }

    /// Writes the next generation; marks the lease lost when another run has it.
    async fn renew(&self) {
        let _guard = self.lock.lock().await;
        if self.lost.load(Ordering::SeqCst) {
            return;
        }
        let next = self.generation.load(Ordering::SeqCst) + 1;
        match self.create(next, false).await {
            Ok(true) => self.prune().await,
            Ok(false) => {
                tracing::error!(lease = %self.dir, "another run took the lease");
                self.lost.store(true, Ordering::SeqCst);
            }
            Err(e) => {
                // The store may answer next time; the record still holds until it expires.
                let expires = *self.expires_at.lock().expect("lease lock");
                tracing::warn!(lease = %self.dir, "could not renew the lease: {e}");
                if Utc::now() >= expires {
                    self.lost.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

impl Lease {
    /// Takes the lease on the output whose runs folder is `runs`, for run `run_id`. Fails with
    /// [`Error::Lease`] (exit 4) naming the holder when another run has it, unless
    /// `options.wait`, which waits for it.
    pub async fn acquire(
        ctx: &datafusion::prelude::SessionContext,
        runs: &Url,
        run_id: &str,
        options: &LeaseOptions,
    ) -> Result<Lease> {
        let dir = storage::as_dir(&storage::join(runs, "_lease"));
        let inner = Arc::new(Inner {
            store: storage::store_for(ctx, &dir)?,
            dir,
            run_id: run_id.to_string(),
            ttl: options.ttl,
            generation: AtomicU64::new(0),
            lost: AtomicBool::new(false),
            expires_at: std::sync::Mutex::new(Utc::now()),
            lock: tokio::sync::Mutex::new(()),
        });
        let mut announced = false;
        loop {
            let newest = inner.newest().await?;
            let now = Utc::now();
            match &newest {
                Some((_, held)) if !held.free(now) => {
                    let message = format!(
                        "{runs} is in use by run {} (host {}, pid {}) until {} unless renewed; \
                         one run at a time writes an output: retry later, or pass --wait",
                        held.run_id,
                        held.host,
                        held.pid,
                        held.expires_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    );
                    if !options.wait {
                        return Err(Error::Lease { message });
                    }
                    if !announced {
                        tracing::warn!("waiting: {message}");
                        announced = true;
                    }
                    // The holder may give the lease back before it expires: look again soon.
                    let left = (held.expires_at - now).to_std().unwrap_or_default();
                    tokio::time::sleep(
                        left.clamp(Duration::from_millis(100), Duration::from_secs(1)),
                    )
                    .await;
                }
                _ => {
                    let next = newest.map_or(0, |(g, _)| g + 1);
                    if inner.create(next, false).await? {
                        break;
                    }
                    // Another run created that generation first: look at who it is.
                }
            }
        }
        inner.prune().await;
        let renewer = {
            let inner = inner.clone();
            tokio::spawn(async move {
                let every = inner.ttl / 3;
                loop {
                    tokio::time::sleep(every).await;
                    inner.renew().await;
                    if inner.lost.load(Ordering::SeqCst) {
                        break;
                    }
                }
            })
        };
        Ok(Lease {
            inner,
            renewer: Some(renewer),
        })
    }

    /// Fails when this run no longer holds the lease: nothing may be committed then.
    pub fn check(&self) -> Result<()> {
        if self.inner.lost.load(Ordering::SeqCst)
            || Utc::now() >= *self.inner.expires_at.lock().expect("lease lock")
        {
            return Err(Error::Lease {
                message: format!(
                    "run {} lost its lease on {} (another run took it, or it could not be \
                     renewed in time); nothing more is committed",
                    self.inner.run_id, self.inner.dir
                ),
            });
        }
        Ok(())
    }

    /// Gives the lease back, so that the next run need not wait for it to expire.
    pub async fn release(mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
            let _ = renewer.await;
        }
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        if inner.lost.load(Ordering::SeqCst) {
            return;
        }
        let next = inner.generation.load(Ordering::SeqCst) + 1;
        match inner.create(next, true).await {
            Ok(true) => inner.prune().await,
            Ok(false) => {}
            Err(e) => tracing::warn!(lease = %inner.dir, "could not give the lease back: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(ttl_ms: u64) -> LeaseOptions {
        LeaseOptions {
            ttl: Duration::from_millis(ttl_ms),
            wait: false,
        }
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_the_next_after_release_or_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Url::from_directory_path(dir.path()).unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        let a = Lease::acquire(&ctx, &runs, "run-a", &options(60_000))
            .await
            .unwrap();
        let refused = Lease::acquire(&ctx, &runs, "run-b", &options(60_000)).await;
        match refused {
            Err(e @ Error::Lease { .. }) => {
                assert!(e.to_string().contains("run-a"), "{e}");
                assert_eq!(e.class(), crate::ErrorClass::Transient);
            }
            other => panic!("expected a held lease, got {:?}", other.map(|_| ())),
        }
        a.check().unwrap();
        a.release().await;
        let b = Lease::acquire(&ctx, &runs, "run-b", &options(300))
            .await
            .unwrap();
        // b dies without releasing (its renewer stops); c takes over after the expiry.
        b.renewer.as_ref().unwrap().abort();
        let waiting = LeaseOptions {
            ttl: Duration::from_secs(60),
            wait: true,
        };
        let c = tokio::time::timeout(
            Duration::from_secs(10),
            Lease::acquire(&ctx, &runs, "run-c", &waiting),
        )
        .await
        .expect("the expired lease is taken over")
        .unwrap();
        // b finds out it lost the lease before it commits anything.
        assert!(b.check().is_err());
        c.check().unwrap();
        c.release().await;
    }

    #[tokio::test]
    async fn racing_runs_get_one_lease() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Url::from_directory_path(dir.path()).unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        let tries = (0..8).map(|i| {
            let (ctx, runs) = (ctx.clone(), runs.clone());
            tokio::spawn(async move {
                Lease::acquire(&ctx, &runs, &format!("run-{i}"), &options(60_000)).await
            })
        });
        let results = futures::future::join_all(tries).await;
        let held: Vec<_> = results
            .into_iter()
            .map(|r| r.unwrap())
            .filter_map(Result::ok)
            .collect();
        assert_eq!(held.len(), 1);
    }

    #[tokio::test]
    async fn renewal_keeps_the_lease_past_its_first_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Url::from_directory_path(dir.path()).unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        let a = Lease::acquire(&ctx, &runs, "run-a", &options(600))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        a.check().unwrap();
        assert!(
            Lease::acquire(&ctx, &runs, "run-b", &options(600))
                .await
                .is_err()
        );
        a.release().await;
    }
}
