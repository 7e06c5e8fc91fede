//! S3 multipart uploads that outlive a killed mover.
//!
//! An S3 multipart upload that is neither completed nor aborted keeps its
//! parts (and their cost) in the bucket, invisible to listings, forever.
//! object_store cannot list them, so the mover keeps its own journal: each
//! upload's id and key is written to `<data_dir>/s3-uploads` when the
//! upload is created and removed when it is completed or aborted. At
//! start-up, whatever the journal still holds was left by a mover that died
//! (one mover per data directory), and is aborted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use tracing::{info, warn};

/// The uploads in flight, on disk.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    open: Mutex<BTreeMap<String, String>>,
    /// `<journal>.lock`, locked for the mover's life: a second mover on the
    /// same data directory would take this mover's uploads for a dead
    /// one's and abort them.
    _lock: std::fs::File,
}

fn io_error(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3 upload journal",
        source: Box::new(e),
    }
}

impl Journal {
    /// Opens (or creates) the journal; returns it and the uploads a
    /// previous mover left in it (id, key). Those stay in the journal until
    /// [`abort_stale`] has aborted them.
    pub fn open(path: PathBuf) -> std::io::Result<(Self, Vec<(String, String)>)> {
        use std::os::unix::fs::OpenOptionsExt;
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)?;
        if let Err(e) = lock.try_lock() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!(
                    "another mover uses this data directory ({} is locked: {e}); \
                     each mover needs its own --data-dir",
                    lock_path.display()
                ),
            ));
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let stale: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(id, key)| (id.to_string(), key.to_string()))
            .collect();
        let j = Self {
            path,
            open: Mutex::new(stale.iter().cloned().collect()),
            _lock: lock,
        };
        Ok((j, stale))
    }

    /// Writes the whole set (small: one line per upload in flight) to a
    /// new file and renames it over the old one.
    fn persist(&self, open: &BTreeMap<String, String>) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        for (id, key) in open {
            writeln!(f, "{id}\t{key}")?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        // The rename is durable once the directory is: without this, a
        // power cut could bring back an older journal and lose the uploads
        // recorded since.
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::File::open(dir)?.sync_all()
    }

    fn add(&self, id: &str, key: &str) -> std::io::Result<()> {
        let mut open = self.open.lock().expect("journal");
        open.insert(id.to_string(), key.to_string());
        self.persist(&open)
    }

    fn remove(&self, id: &str) {
        let mut open = self.open.lock().expect("journal");
        open.remove(id);
        if let Err(e) = self.persist(&open) {
            warn!(error = %e, path = %self.path.display(), "cannot update the S3 upload journal");
        }
    }

    /// [`Journal::add`] on a blocking thread: each update is an fsync,
    /// which must not hold up a runtime thread and the streams on it.
    async fn record(self: &Arc<Self>, id: &str, key: &str) -> std::io::Result<()> {
        let (j, id, key) = (Arc::clone(self), id.to_string(), key.to_string());
        tokio::task::spawn_blocking(move || j.add(&id, &key))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// [`Journal::remove`] on a blocking thread.
    async fn forget(self: &Arc<Self>, id: &str) {
        let (j, id) = (Arc::clone(self), id.to_string());
        if let Err(e) = tokio::task::spawn_blocking(move || j.remove(&id)).await {
            warn!(error = %e, "updating the S3 upload journal failed");
        }
    }
}

/// Aborts the uploads a previous mover left, a few at a time; returns how
/// many. The mover serves meanwhile: with S3 unreachable each abort is
/// retried for up to `retry_deadline`, and that must not keep the socket
/// closed. An upload whose abort fails stays in the journal for the next
/// start-up.
pub async fn abort_stale(
    s3: Arc<AmazonS3>,
    journal: Arc<Journal>,
    stale: Vec<(String, String)>,
) -> usize {
    use futures::StreamExt;
    let aborted = std::sync::atomic::AtomicUsize::new(0);
    futures::stream::iter(stale)
        .for_each_concurrent(8, |(id, key)| {
            let (s3, journal, aborted) = (&s3, &journal, &aborted);
            async move {
                match Path::parse(&key) {
                    Ok(path) => match s3.abort_multipart(&path, &id).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                            aborted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            journal.forget(&id).await;
                        }
                        Err(e) => {
                            warn!(key, error = %e, "cannot abort a multipart upload a previous mover left; the journal keeps it for the next start-up")
                        }
                    },
                    Err(e) => {
                        warn!(key, error = %e, "dropping a bad line of the S3 upload journal");
                        journal.forget(&id).await;
                    }
                }
            }
        })
        .await;
    let aborted = aborted.into_inner();
    if aborted > 0 {
        info!(
            uploads = aborted,
            "aborted multipart uploads a previous mover left"
        );
    }
    aborted
}

/// S3 with journaled multipart uploads; everything else passes through.
#[derive(Debug)]
pub struct JournaledS3 {
    pub s3: Arc<AmazonS3>,
    pub journal: Arc<Journal>,
}

impl std::fmt::Display for JournaledS3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.s3)
    }
}

#[async_trait]
impl ObjectStore for JournaledS3 {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.s3.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let id = self.s3.create_multipart(location).await?;
        if let Err(e) = self.journal.record(&id, location.as_ref()).await {
            let _ = self.s3.abort_multipart(location, &id).await;
            return Err(io_error(e));
        }
        Ok(Box::new(JournaledUpload {
            s3: Arc::clone(&self.s3),
            journal: Arc::clone(&self.journal),
            path: location.clone(),
            id,
            parts: Arc::new(Mutex::new(Vec::new())),
            finished: false,
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.s3.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.s3.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.s3.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.s3.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.s3.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.s3.copy_opts(from, to, options).await
    }
}

/// One upload: parts go straight to S3, in the order `put_part` numbers
/// them; the journal forgets the upload once it is completed or aborted.
/// An upload dropped before either (a client gone before its stream
/// started, a failed completion) is aborted in the background.
#[derive(Debug)]
struct JournaledUpload {
    s3: Arc<AmazonS3>,
    journal: Arc<Journal>,
    path: Path,
    id: String,
    parts: Arc<Mutex<Vec<Option<PartId>>>>,
    /// Completed, or aborted with S3's agreement.
    finished: bool,
}

impl Drop for JournaledUpload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Without a runtime (the mover is shutting down) the journal keeps
        // the upload for the next start-up.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (s3, journal, path, id) = (
            Arc::clone(&self.s3),
            Arc::clone(&self.journal),
            self.path.clone(),
            std::mem::take(&mut self.id),
        );
        rt.spawn(async move {
            match s3.abort_multipart(&path, &id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => journal.forget(&id).await,
                Err(e) => {
                    warn!(key = %path, error = %e, "cannot abort a dropped multipart upload; the journal keeps it for the next start-up")
                }
            }
        });
    }
}

#[async_trait]
impl MultipartUpload for JournaledUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let idx = {
            let mut parts = self.parts.lock().expect("parts");
            parts.push(None);
            parts.len() - 1
        };
        let (s3, path, id, parts) = (
            Arc::clone(&self.s3),
            self.path.clone(),
            self.id.clone(),
            Arc::clone(&self.parts),
        );
        Box::pin(async move {
            let part = s3.put_part(&path, &id, idx, data).await?;
            parts.lock().expect("parts")[idx] = Some(part);
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let parts: Option<Vec<PartId>> =
            self.parts.lock().expect("parts").iter().cloned().collect();
        let parts = parts.ok_or_else(|| object_store::Error::Generic {
            store: "S3",
            source: "complete before every part was stored".into(),
        })?;
        let done = self
            .s3
            .complete_multipart(&self.path, &self.id, parts)
            .await?;
        self.finished = true;
        self.journal.forget(&self.id).await;
        Ok(done)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let r = self.s3.abort_multipart(&self.path, &self.id).await;
        // Kept for the next start-up if S3 did not take the abort.
        if r.is_ok() {
            self.finished = true;
            self.journal.forget(&self.id).await;
        }
        r
    }
}
