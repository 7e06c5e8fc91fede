//! The store seam: object_store behind one type, plus the manifests that
//! make the store its own catalog.
//!
//! A backup becomes visible only when its manifest exists, and the manifest
//! is written only after the data object is complete and durable. Listing
//! the catalog and reading manifests is all any mover needs to answer
//! stat, list and restore, so movers sharing a bucket see the same backups.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use shmover_proto::{v1, ClientKind, ErrorCode};

use crate::config::Config;
use crate::manifest_cache::{Fingerprint, ManifestCache};
use crate::metrics::Metrics;
use crate::names;

/// Failures of the storage layer, each with its protocol code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}: no such backup")]
    NotFound(String),
    #[error("{0}: a backup of that name exists")]
    AlreadyExists(String),
    #[error("{0}: {1}")]
    BadName(String, names::NameError),
    #[error("store: {0}")]
    Store(#[from] object_store::Error),
    #[error("{0}: manifest is unreadable: {1}")]
    BadManifest(String, String),
    /// Publishing failed and reading back could not tell whether the
    /// manifest landed: the data must be kept.
    #[error("{0}: the outcome is unknown ({1}); check with `mover info` before retrying")]
    Uncertain(String, String),
}

impl StoreError {
    /// The stable protocol code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Self::BadName(..) => ErrorCode::BadName,
            Self::Store(object_store::Error::NotFound { .. }) => ErrorCode::NotFound,
            Self::Store(_) | Self::BadManifest(..) | Self::Uncertain(..) => ErrorCode::Store,
        }
    }
}

/// What is recorded next to each object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub kind: String,
    pub data_key: String,
    pub size: u64,
    pub created_unix_ms: i64,
    pub block_size: u32,
    pub crc32c: u32,
    pub parts: u64,
    pub metadata: BTreeMap<String, String>,
    /// No compression or encryption is applied today; recorded so that a
    /// later version can tell.
    pub transform: String,
}

impl Manifest {
    pub fn info(&self) -> v1::ObjectInfo {
        v1::ObjectInfo {
            name: self.name.clone(),
            size: self.size,
            created_unix_ms: self.created_unix_ms,
            block_size: self.block_size,
            crc32c: self.crc32c,
            metadata: self.metadata.clone(),
            kind: kind_from(&self.kind) as i32,
        }
    }
}

fn kind_from(s: &str) -> ClientKind {
    match s {
        "sbt" => ClientKind::Sbt,
        "backint" => ClientKind::Backint,
        _ => ClientKind::Generic,
    }
}

/// The store path of a manifest's `data_key`. The key is stored in its
/// encoded form (`Path`'s display), so it is parsed, not encoded again: a
/// name with `%` in it would otherwise point elsewhere.
pub fn data_path(key: &str) -> Result<Path, StoreError> {
    Path::parse(key)
        .map_err(|e| StoreError::BadManifest(key.chars().take(80).collect(), e.to_string()))
}

/// The store and its catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
    /// Whether the store honours `PutMode::Create` (S3-compatible servers
    /// vary); learnt on first use.
    create_supported: Arc<std::sync::atomic::AtomicBool>,
    /// Manifests already read, for listings.
    manifests: Arc<ManifestCache>,
    metrics: Arc<Metrics>,
    /// Whether a write the store answered with an error can still land
    /// afterwards: a request over the network (S3, a peer) that the client
    /// gave up on may be carried out later. A local write is over when its
    /// call returns.
    late_writes: bool,
}

/// Builds the object store named by `cfg.store`.
pub async fn open_store(
    cfg: &Config,
    metrics: &Arc<crate::metrics::Metrics>,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    use anyhow::Context;
    let url = cfg.store.as_str();
    if url.starts_with(crate::config::FORWARD_SCHEME) {
        let peers = crate::forward::PeerStore::new(&cfg.peer, Arc::clone(metrics))?;
        return Ok(Arc::new(peers));
    }
    // object_store's default backoff draws each wait from [0.1 s, 2 x the
    // last]: ten retries are over in about two seconds, so a store that
    // stalls for longer failed the backup however long `retry_deadline`
    // was. From [0.1 s, 3 x the last], capped at 15 s, waits grow about
    // 1.5 times per retry, and the default 25 retries reach the deadline.
    let retry = object_store::RetryConfig {
        max_retries: cfg.retry_max,
        retry_timeout: cfg.retry_deadline,
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(15),
            base: 3.0,
        },
    };
    if let Some(path) = url.strip_prefix("file://") {
        let path = std::path::Path::new(path);
        if !path.is_absolute() {
            anyhow::bail!("store {url}: a file:// store needs an absolute path");
        }
        create_private_dir(path)
            .with_context(|| format!("creating store directory {}", path.display()))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(path)?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        let store = crate::local::LocalStore::new(fs, cfg.direct_io)
            .with_root(path)
            .with_context(|| format!("reading store directory {}", path.display()))?;
        return Ok(Arc::new(store));
    }
    if url == "memory://" || url == "memory:///" {
        return Ok(Arc::new(object_store::memory::InMemory::new()));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            anyhow::bail!("store {url}: no bucket");
        }
        // No whole-request timeout: a restore's GET streams for as long as
        // the database takes to read it, and a large part may take minutes.
        // A stalled connection still ends, by the idle read timeout.
        // (`with_client_options` replaces every client option, so
        // allow_http is set here, from the config or AWS_ALLOW_HTTP.)
        let allow_http = cfg.s3.allow_http.unwrap_or_else(|| {
            std::env::var("AWS_ALLOW_HTTP")
                .is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
        });
        let client = object_store::ClientOptions::new()
            .with_timeout_disabled()
            .with_connect_timeout(std::time::Duration::from_secs(10))
            .with_read_timeout(std::time::Duration::from_secs(300))
            .with_allow_http(allow_http);
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_client_options(client)
            .with_bucket_name(bucket)
            .with_retry(retry);
        let s3 = &cfg.s3;
        if let Some(v) = &s3.endpoint {
            b = b.with_endpoint(v);
        }
        if let Some(v) = &s3.region {
            b = b.with_region(v);
        }
        if let Some(v) = &s3.access_key_id {
            b = b.with_access_key_id(v);
        }
        if let Some(v) = &s3.secret_access_key {
            b = b.with_secret_access_key(v);
        }
        if let Some(v) = &s3.session_token {
            b = b.with_token(v);
        }
        let s3 = Arc::new(
            b.build()
                .with_context(|| format!("configuring store {url}"))?,
        );
        // Multipart uploads are journaled, and those a killed mover left
        // are aborted now (object_store cannot list them).
        create_private_dir(&cfg.data_dir)
            .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
        let journal_path = cfg.data_dir.join("s3-uploads");
        let (journal, stale) = crate::journal::Journal::open(journal_path.clone())
            .with_context(|| format!("reading {}", journal_path.display()))?;
        let journal = Arc::new(journal);
        if !stale.is_empty() {
            tokio::spawn(crate::journal::abort_stale(
                Arc::clone(&s3),
                Arc::clone(&journal),
                stale,
            ));
        }
        let s3 = crate::journal::JournaledS3 { s3, journal };
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            return Ok(Arc::new(s3));
        }
        return Ok(Arc::new(object_store::prefix::PrefixStore::new(s3, prefix)));
    }
    anyhow::bail!(
        "store {url}: unsupported scheme (use file:///dir, memory:// or s3://bucket/prefix)"
    )
}

/// Whether the store at `url` can carry out a write after answering it
/// with an error (see [`Catalog::with_late_writes`]): every store but a
/// local directory and memory.
pub fn store_writes_can_land_late(url: &str) -> bool {
    !(url.starts_with("file://") || url.starts_with("memory:"))
}

/// An error by which the store refused a write outright, so the write
/// cannot land later.
fn is_refusal(e: &StoreError) -> bool {
    match e {
        StoreError::AlreadyExists(_) | StoreError::BadName(..) | StoreError::NotFound(_) => true,
        StoreError::Store(e) => matches!(
            e,
            object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::InvalidPath { .. }
        ),
        StoreError::BadManifest(..) | StoreError::Uncertain(..) => false,
    }
}

/// Whether `e` says a write is in place but may not survive a crash.
fn is_not_durable(e: &StoreError) -> bool {
    matches!(e, StoreError::Store(e) if crate::local::NotDurable::is(e))
}

/// Creates a directory (and parents) readable only by the service user and
/// its group.
pub fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(path)
}

impl Catalog {
    /// The catalog over `store`, keeping up to `cache_bytes` of manifests
    /// for listings.
    pub fn new(store: Arc<dyn ObjectStore>, cache_bytes: u64, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            create_supported: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            manifests: Arc::new(ManifestCache::new(cache_bytes)),
            metrics,
            late_writes: true,
        }
    }

    /// Declares whether a failed write can land later (see
    /// [`store_writes_can_land_late`]); assumed so unless told otherwise.
    pub fn with_late_writes(mut self, late_writes: bool) -> Self {
        self.late_writes = late_writes;
        self
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn check(name: &str) -> Result<(), StoreError> {
        names::validate(name).map_err(|e| StoreError::BadName(name.chars().take(80).collect(), e))
    }

    /// The manifest of `name`, if the backup exists.
    pub async fn manifest(
        &self,
        kind: ClientKind,
        name: &str,
    ) -> Result<Option<Manifest>, StoreError> {
        Self::check(name)?;
        let key = names::manifest_key(kind, name);
        match self.store.get(&key).await {
            Ok(r) => {
                if r.meta.size > MAX_MANIFEST {
                    return Err(StoreError::BadManifest(
                        name.to_string(),
                        too_big(r.meta.size),
                    ));
                }
                let bytes = r.bytes().await?;
                let m: Manifest = serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::BadManifest(name.to_string(), e.to_string()))?;
                Ok(Some(m))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Like [`Catalog::manifest`], with `NotFound` for a missing backup.
    pub async fn require(&self, kind: ClientKind, name: &str) -> Result<Manifest, StoreError> {
        self.manifest(kind, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_string()))
    }

    /// Publishes a manifest: the backup becomes visible. Fails with
    /// `AlreadyExists` if another writer published the name first.
    ///
    /// An error can come back for a write that landed (a lost reply, a
    /// retried create answered "exists"): every error is checked by
    /// reading the manifest back. A manifest with our data key means
    /// success, unless the error said it may not survive a crash (a local
    /// directory's failed fsync after the link). In that case, or if the
    /// manifest cannot be read back, the answer is
    /// [`StoreError::Uncertain`] and the caller must keep the data.
    pub async fn publish(&self, kind: ClientKind, m: &Manifest) -> Result<(), StoreError> {
        let Err(e) = self.publish_once(kind, m).await else {
            return Ok(());
        };
        match self.manifest(kind, &m.name).await {
            // In place, but a local directory's fsync failed after the
            // link: it may be gone after a crash, and the data with it
            // unless the data is kept.
            Ok(Some(found)) if found.data_key == m.data_key && is_not_durable(&e) => {
                Err(StoreError::Uncertain(m.name.clone(), e.to_string()))
            }
            Ok(Some(found)) if found.data_key == m.data_key => {
                tracing::warn!(name = %m.name, error = %e, "publish reported an error but the manifest is in place");
                Ok(())
            }
            Ok(Some(_)) => Err(StoreError::AlreadyExists(m.name.clone())),
            // Not there now. A refusal, or a local write, is final; a
            // request that failed in transit may still be carried out,
            // and a manifest landing after its data was removed would list
            // a backup that cannot be restored.
            Ok(None) if self.late_writes && !is_refusal(&e) => Err(StoreError::Uncertain(
                m.name.clone(),
                format!("{e}; the manifest is not in the store yet, but the write may still land"),
            )),
            Ok(None) => Err(e),
            Err(read) => Err(StoreError::Uncertain(
                m.name.clone(),
                format!("{e}; reading back: {read}"),
            )),
        }
    }

    async fn publish_once(&self, kind: ClientKind, m: &Manifest) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let key = names::manifest_key(kind, &m.name);
        let body = Bytes::from(serde_json::to_vec_pretty(m).expect("manifest serialises"));
        if self.create_supported.load(Relaxed) {
            let opts = PutOptions::from(PutMode::Create);
            match self
                .store
                .put_opts(&key, PutPayload::from(body.clone()), opts)
                .await
            {
                Ok(_) => return Ok(()),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    return Err(StoreError::AlreadyExists(m.name.clone()))
                }
                Err(object_store::Error::NotImplemented { .. }) => {
                    tracing::warn!(
                        "store does not support create-if-absent; falling back to check-then-put"
                    );
                    self.create_supported.store(false, Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if self.store.head(&key).await.is_ok() {
            return Err(StoreError::AlreadyExists(m.name.clone()));
        }
        self.store.put(&key, PutPayload::from(body)).await?;
        Ok(())
    }

    /// Backups whose names start with `prefix`, newest first.
    pub async fn list(
        &self,
        kind: ClientKind,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<Arc<Manifest>>, StoreError> {
        if prefix.len() > names::MAX_NAME || prefix.bytes().any(|b| b < 0x20) {
            return Err(StoreError::BadName(
                prefix.chars().take(80).collect(),
                names::NameError::Control(0),
            ));
        }
        let (dir, key_prefix) = names::catalog_prefix(kind, prefix);
        let metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&dir))
            .try_filter(|m| {
                let k = m.location.as_ref();
                futures::future::ready(k.starts_with(&key_prefix) && k.ends_with(".manifest"))
            })
            .try_collect()
            .await?;
        let mut out = Vec::with_capacity(metas.len());
        for read in self.read_manifests(metas).await? {
            match read {
                Ok(m) => out.push(m),
                Err((key, why)) => {
                    tracing::warn!(key = %key, error = %why, "skipping an unreadable manifest in a listing")
                }
            }
        }
        out.retain(|m| m.name.starts_with(prefix));
        out.sort_by(|a, b| {
            b.created_unix_ms
                .cmp(&a.created_unix_ms)
                .then_with(|| a.name.cmp(&b.name))
        });
        if limit > 0 {
            out.truncate(limit);
        }
        Ok(out)
    }

    /// Reads the manifests the store listed as `metas`, taking those whose
    /// fingerprint is unchanged from the cache and the rest from the store,
    /// 16 at a time. A manifest deleted since the listing is left out; one
    /// that cannot be parsed comes back as its key and why.
    async fn read_manifests(
        &self,
        metas: Vec<ObjectMeta>,
    ) -> Result<Vec<Result<Arc<Manifest>, (Path, String)>>, StoreError> {
        let mut out = Vec::with_capacity(metas.len());
        let mut misses = Vec::new();
        let mut hits = 0;
        for meta in metas {
            if meta.size > MAX_MANIFEST {
                out.push(Err((meta.location, too_big(meta.size))));
                continue;
            }
            let fingerprint = Fingerprint::of(&meta);
            match self.manifests.get(&meta.location, &fingerprint) {
                Some(m) => {
                    hits += 1;
                    out.push(Ok(m));
                }
                None => misses.push((meta.location, fingerprint)),
            }
        }
        self.metrics.manifest_cache_hits.fetch_add(hits, Relaxed);
        let read: Vec<_> = futures::stream::iter(misses)
            .map(|(key, fingerprint)| async move {
                let bytes = match self.store.get(&key).await {
                    Ok(r) => r.bytes().await?,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(StoreError::from(e)),
                };
                self.metrics.manifest_reads.fetch_add(1, Relaxed);
                match serde_json::from_slice::<Manifest>(&bytes) {
                    Ok(m) => {
                        let m = Arc::new(m);
                        self.manifests.insert(key, fingerprint, Arc::clone(&m));
                        Ok(Some(Ok(m)))
                    }
                    Err(e) => Ok(Some(Err((key, e.to_string())))),
                }
            })
            .buffer_unordered(16)
            .try_filter_map(|m| futures::future::ready(Ok(m)))
            .try_collect()
            .await?;
        out.extend(read);
        Ok(out)
    }

    /// Deletes a backup: the manifest first (it disappears from the
    /// catalog at once), then its data.
    pub async fn delete(&self, kind: ClientKind, name: &str) -> Result<(), StoreError> {
        let m = self.require(kind, name).await?;
        let key = names::manifest_key(kind, name);
        self.store.delete(&key).await?;
        self.manifests.remove(&key);
        // The backup is gone once its manifest is: a data object that cannot
        // be deleted now is an orphan for `mover gc`, not a failed delete.
        match self.store.delete(&data_path(&m.data_key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(name = %name, data = %m.data_key, error = %e, "backup deleted; its data could not be removed and is left for gc")
            }
        }
        Ok(())
    }
}

/// Largest manifest read: the mover writes a few KiB (metadata is at most
/// 64 KiB, which JSON escaping can grow a few times). Anything larger under
/// `catalog/` is not one of ours, and is not read into memory.
const MAX_MANIFEST: u64 = 2 << 20;

fn too_big(size: u64) -> String {
    format!("{size} bytes, larger than any manifest ({MAX_MANIFEST} bytes at most)")
}

/// What a garbage collection removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct GcReport {
    pub orphans: u64,
    pub staging: u64,
    pub bytes: u64,
}

impl Catalog {
    /// Removes data objects older than `grace` that no manifest refers to
    /// (a writer that died between completing its upload and publishing,
    /// or a delete whose data removal failed). Objects younger than `grace`
    /// may belong to a write in progress on this or another mover.
    ///
    /// `in_flight` gives the data keys of this mover's backups whose
    /// manifests are not published yet. It is asked after the data listing
    /// and before the manifest listing, so a key listed as data is either
    /// still in flight then (and kept, whatever its age) or was published
    /// before the manifests are listed (and is found referenced). Without
    /// it, `--older-than 0` took the data of a backup committing at that
    /// moment for an orphan, and the client was then told it was saved.
    /// Other movers' backups on a shared store have only `grace`.
    pub async fn gc_orphans(
        &self,
        grace: std::time::Duration,
        in_flight: impl FnOnce() -> std::collections::HashSet<String>,
    ) -> Result<GcReport, StoreError> {
        // The data first, then the manifests. A backup whose data completes
        // while this runs is then missed only if its manifest is published
        // after the catalog listing below but its data was listed above:
        // the moment between the two. (The other order made the whole
        // manifest scan that window, and S3 dates a multipart object from
        // the upload's start, which may be older than the grace.)
        let cutoff = std::time::SystemTime::now().checked_sub(grace);
        let data: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&Path::from("data")))
            .try_collect()
            .await?;
        let in_flight = in_flight();
        // Every manifest must be read: data whose manifest could not be
        // read (a store error, a damaged file) may still be a backup, so
        // any failure stops the collection before it deletes anything.
        let manifests: Vec<ObjectMeta> = self
            .store
            .list(Some(&Path::from("catalog")))
            .try_filter(|m| futures::future::ready(m.location.as_ref().ends_with(".manifest")))
            .try_collect()
            .await?;
        let mut referenced = std::collections::HashSet::new();
        for read in self.read_manifests(manifests).await? {
            match read {
                Ok(m) => {
                    referenced.insert(m.data_key.clone());
                }
                Err((key, why)) => {
                    return Err(StoreError::BadManifest(
                        key.to_string(),
                        format!(
                            "{why}; gc removes nothing while a manifest it cannot read may \
                             refer to data (repair or remove that manifest first)"
                        ),
                    ))
                }
            }
        }
        let mut report = GcReport::default();
        for meta in data {
            let old = cutoff.is_some_and(|c| system_time(&meta) < c);
            let key = meta.location.as_ref();
            if old && !referenced.contains(key) && !in_flight.contains(key) {
                match self.store.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                        report.orphans += 1;
                        report.bytes += meta.size;
                        tracing::info!(key = %meta.location, bytes = meta.size, "gc: removed orphan data");
                    }
                    Err(e) => {
                        tracing::warn!(key = %meta.location, error = %e, "gc: could not remove orphan data")
                    }
                }
            }
        }
        Ok(report)
    }
}

fn system_time(meta: &object_store::ObjectMeta) -> std::time::SystemTime {
    std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(meta.last_modified.timestamp_millis().max(0) as u64)
}

/// Removes the local store's staging files (`name#n`, an upload that never
/// completed because its mover died) not modified for `grace`, except
/// those of the keys in `live` (the uploads of this mover still running)
/// and those whose writer still holds the shared lock every staging file
/// is created with (a still upload of this mover, of a peer session, or of
/// another mover on the same directory).
pub fn gc_staging(root: &std::path::Path, grace: std::time::Duration, live: &[String]) -> GcReport {
    struct Walk {
        cutoff: std::time::SystemTime,
        live: std::collections::HashSet<std::path::PathBuf>,
        report: GcReport,
    }
    fn walk(dir: &std::path::Path, w: &mut Walk) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(meta) = e.metadata() else { continue };
            let name = e.file_name();
            let name = name.to_string_lossy();
            if meta.is_dir() {
                walk(&p, w);
            } else if name
                .rsplit_once('#')
                .is_some_and(|(dest, _)| !w.live.contains(&p.with_file_name(dest)))
                && meta.modified().is_ok_and(|m| m < w.cutoff)
                && unlocked(&p)
                && std::fs::remove_file(&p).is_ok()
            {
                w.report.staging += 1;
                w.report.bytes += meta.len();
                tracing::info!(path = %p.display(), bytes = meta.len(), "gc: removed a staging file");
            }
        }
    }
    /// No writer holds the file's lock. (A writer takes it when it makes
    /// the file, never later: a file found unlocked stays so.)
    fn unlocked(p: &std::path::Path) -> bool {
        std::fs::File::open(p).is_ok_and(|f| f.try_lock().is_ok())
    }
    let Some(cutoff) = std::time::SystemTime::now().checked_sub(grace) else {
        return GcReport::default();
    };
    // The live keys map to paths under the canonical root (symbolic links
    // resolved): walk that, so that the two compare.
    let canonical = root.canonicalize();
    let root = canonical.as_deref().unwrap_or(root);
    // The live keys where the store keeps them, as its own mapping has it.
    let live = match object_store::local::LocalFileSystem::new_with_prefix(root) {
        Ok(fs) => live
            .iter()
            .filter_map(|k| Path::parse(k).ok())
            .filter_map(|k| fs.path_to_filesystem(&k).ok())
            .collect(),
        Err(_) => Default::default(),
    };
    let mut w = Walk {
        cutoff,
        live,
        report: GcReport::default(),
    };
    walk(root, &mut w);
    w.report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A staging file two hours still.
    fn age(p: &std::path::Path) {
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    #[test]
    fn gc_spares_a_staging_file_whose_writer_holds_it_whoever_that_is() {
        // A writer gc does not know of (another mover on the directory, a
        // peer session): its file is locked from birth, and spared however
        // long it has been still. Once the writer is gone, it goes.
        let dir = tempfile::tempdir().unwrap();
        let hour = std::time::Duration::from_secs(3600);
        let (file, staged) = crate::local::new_staging(&dir.path().join("data/x")).unwrap();
        age(&staged);
        assert_eq!(gc_staging(dir.path(), hour, &[]).staging, 0);
        assert!(staged.exists(), "a held staging file was removed");
        drop(file);
        assert_eq!(gc_staging(dir.path(), hour, &[]).staging, 1);
        assert!(!staged.exists());
    }

    #[test]
    fn gc_spares_the_live_keys_of_a_store_reached_through_a_symbolic_link() {
        // The live keys map to canonical paths; the walk used the path as
        // given, so through a link nothing matched and live uploads went.
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("data")).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let live = real.join("data/y#1");
        let dead = real.join("data/z#1");
        for p in [&live, &dead] {
            std::fs::write(p, b"part").unwrap(); // no lock: only the key spares it
            age(p);
        }
        let hour = std::time::Duration::from_secs(3600);
        let r = gc_staging(&link, hour, &["data/y".to_string()]);
        assert_eq!(r.staging, 1);
        assert!(live.exists(), "the live upload's staging file was removed");
        assert!(!dead.exists());
    }
}
