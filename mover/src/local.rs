//! The local store: object_store's `LocalFileSystem`, except that multipart
//! uploads (every backup stream) write the ring slots straight to the disk.
//!
//! A part's slots are page aligned and, but for a stream's last block, a
//! whole number of pages long. They are written with one `pwritev(2)` per
//! part on a descriptor opened with `O_DIRECT`: the disk reads them out of
//! the shared memory, the mover copies nothing and the page cache holds
//! nothing. Whatever is not aligned (a short last block, a stream after
//! one) goes through a second, buffered descriptor of the same file, so
//! the object is the same either way. A filesystem that refuses `O_DIRECT`
//! (at open or at the first write) gets buffered writes only.
//!
//! Completion is object_store's: fsync the file, rename the staging file
//! (`name#N`, which listings skip and `mover gc` removes) into place, fsync
//! the directory.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, IoSlice};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use tracing::{info, warn};

/// Alignment asked of `O_DIRECT` buffers, lengths and offsets: a page,
/// which covers any logical block size up to 4 KiB.
const ALIGN: usize = 4096;

/// At most this many buffers per `pwritev(2)` (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// `LocalFileSystem` with direct multipart writes.
#[derive(Debug)]
pub struct LocalStore {
    fs: LocalFileSystem,
    /// Cleared when the filesystem refuses `O_DIRECT`; from then on every
    /// upload is buffered.
    direct: Arc<AtomicBool>,
    /// Makes a directory's entries durable: `fsync(2)` of the directory.
    /// Tests put a failing one in its place.
    sync_dir: fn(&std::path::Path) -> std::io::Result<()>,
    /// The store's directory as found at start ([`LocalStore::with_root`]).
    root: Option<Arc<Root>>,
}

/// The store's directory as the mover found it at start. Directories are
/// made under it, never it or above it: if it is gone, or is another
/// directory now (its filesystem unmounted, leaving the mount point; or
/// removed and made again), writes fail instead of filling whatever lies
/// underneath with backups that would vanish at the next mount.
#[derive(Debug)]
pub(crate) struct Root {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Root {
    pub(crate) fn new(path: &std::path::Path) -> std::io::Result<Self> {
        let path = path.canonicalize()?;
        let m = std::fs::metadata(&path)?;
        Ok(Self {
            path,
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    fn check(&self) -> std::io::Result<()> {
        match std::fs::metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => Ok(()),
            Ok(_) => Err(std::io::Error::other(format!(
                "the store directory {} is not the one the mover started with \
                 (its filesystem unmounted, or the directory replaced); restart the mover to use it",
                self.path.display()
            ))),
            Err(e) => Err(std::io::Error::other(format!(
                "the store directory {} is gone: {e}",
                self.path.display()
            ))),
        }
    }
}

/// `fsync(2)` of the directory `dir`.
fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A create-if-absent write that is in place, but whose directory entry
/// may not survive a crash: the directory's `fsync(2)` failed after the
/// link. Retrying that fsync proves nothing (after a failed fsync Linux
/// may report the next one clean), so the outcome is unknown.
#[derive(Debug, thiserror::Error)]
#[error("{} is in place, but syncing its directory failed, so it may not survive a crash: {source}", path.display())]
pub struct NotDurable {
    path: PathBuf,
    source: std::io::Error,
}

impl NotDurable {
    /// Whether `e` is this error.
    pub fn is(e: &object_store::Error) -> bool {
        matches!(e, object_store::Error::Generic { source, .. } if source.is::<NotDurable>())
    }
}

impl LocalStore {
    /// `fs` must fsync (the store's contract); `direct` says whether to try
    /// `O_DIRECT` at all.
    pub fn new(fs: LocalFileSystem, direct: bool) -> Self {
        Self {
            fs,
            direct: Arc::new(AtomicBool::new(direct)),
            sync_dir,
            root: None,
        }
    }

    /// Makes directories only under `root`, and only while it is the
    /// directory found now (see [`Root`]).
    pub fn with_root(mut self, root: &std::path::Path) -> std::io::Result<Self> {
        self.root = Some(Arc::new(Root::new(root)?));
        Ok(self)
    }

    /// The store with `f` in place of a directory's `fsync(2)`.
    #[cfg(test)]
    fn with_sync_dir(mut self, f: fn(&std::path::Path) -> std::io::Result<()>) -> Self {
        self.sync_dir = f;
        self
    }
}

/// A create-if-absent write (a manifest): staged beside `dest`, synced,
/// hard-linked into place, the directory synced. What object_store's
/// `LocalFileSystem` does, except that a failed directory sync after the
/// link is told apart ([`NotDurable`]) from a write that did not happen.
fn put_create(
    dest: &std::path::Path,
    payload: &PutPayload,
    sync_dir: fn(&std::path::Path) -> std::io::Result<()>,
    root: Option<&Root>,
) -> object_store::Result<PutResult> {
    use std::io::Write;
    let (mut file, src) =
        new_staging_under(dest, root).map_err(|e| io_error("creating", dest, e))?;
    let staged = (|| {
        for chunk in payload.iter() {
            file.write_all(chunk)?;
        }
        file.sync_all()?;
        file.metadata()
    })();
    drop(file);
    let linked = staged.and_then(|meta| std::fs::hard_link(&src, dest).map(|()| meta));
    let _ = std::fs::remove_file(&src);
    let meta = match linked {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return Err(object_store::Error::AlreadyExists {
                path: dest.display().to_string(),
                source: Box::new(e),
            })
        }
        Err(e) => return Err(io_error("writing", dest, e)),
    };
    if let Some(parent) = dest.parent() {
        sync_dir(parent).map_err(|source| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(NotDurable {
                path: dest.to_path_buf(),
                source,
            }),
        })?;
    }
    Ok(PutResult {
        e_tag: Some(e_tag(&meta)),
        version: None,
        extensions: Default::default(),
    })
}

/// An entity tag as `LocalFileSystem` makes them: inode, modification
/// time in microseconds, size.
fn e_tag(meta: &std::fs::Metadata) -> String {
    let mtime = meta.mtime() as u64 * 1_000_000 + meta.mtime_nsec() as u64 / 1000;
    format!("{:x}-{mtime:x}-{:x}", meta.ino(), meta.size())
}

impl std::fmt::Display for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.fs)
    }
}

fn io_error(what: &str, path: &std::path::Path, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("{what} {}: {e}", path.display()).into(),
    }
}

/// Creates `dir` and its missing parents, fsyncing the parent of each one
/// created so that the new entries survive a crash.
///
/// The store deletes with automatic cleanup: a delete removes the
/// directories it leaves empty. So another writer (a second channel, or a
/// second mover on the same directory) may remove a parent made here
/// before its child is made, and the child's `mkdir` fails with ENOENT.
/// That is a lost race, not a missing store: start again from the top, a
/// bounded number of times.
fn create_dirs(dir: &std::path::Path, root: Option<&Root>) -> std::io::Result<()> {
    if let Some(r) = root {
        r.check()?;
    }
    create_dirs_with(dir, root, &mut |d| std::fs::create_dir(d))
}

/// Times [`create_dirs`] and [`new_staging`] start again after a
/// directory vanished under them.
const LOST_RACES: u32 = 100;

fn create_dirs_with(
    dir: &std::path::Path,
    root: Option<&Root>,
    mkdir: &mut dyn FnMut(&std::path::Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut lost = 0;
    loop {
        match create_dirs_once(dir, root, mkdir) {
            Err(e) if e.kind() == ErrorKind::NotFound && lost < LOST_RACES => lost += 1,
            done => return done,
        }
    }
}

fn create_dirs_once(
    dir: &std::path::Path,
    root: Option<&Root>,
    mkdir: &mut dyn FnMut(&std::path::Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(r) = root {
        if dir == r.path || !dir.starts_with(&r.path) {
            r.check()?;
            return Err(std::io::Error::other(format!(
                "{} is missing and is not under the store directory {}",
                dir.display(),
                r.path.display()
            )));
        }
    }
    if let Some(parent) = dir.parent() {
        create_dirs_once(parent, root, mkdir)?;
    }
    match mkdir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// A new staging file `dest#N` beside `dest`, as `LocalFileSystem` names
/// them.
#[cfg(test)]
pub(crate) fn new_staging(dest: &std::path::Path) -> std::io::Result<(File, PathBuf)> {
    new_staging_under(dest, None)
}

/// [`new_staging`], making missing directories only under `root`.
fn new_staging_under(
    dest: &std::path::Path,
    root: Option<&Root>,
) -> std::io::Result<(File, PathBuf)> {
    let mut lost = 0;
    for n in 1u32.. {
        let mut p = dest.as_os_str().to_owned();
        p.push(format!("#{n}"));
        let p = PathBuf::from(p);
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(f) => {
                // A shared lock for the file's life: gc (this mover's or
                // another's on the same directory) removes only staging
                // files it can lock exclusively, whose writer is gone.
                let _ = f.try_lock_shared();
                return Ok((f, p));
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            // The directory is missing, or vanished again (see
            // `create_dirs`) between making it and opening the file.
            Err(e) if e.kind() == ErrorKind::NotFound && lost < LOST_RACES => {
                lost += 1;
                create_dirs(dest.parent().unwrap_or(std::path::Path::new("/")), root)?
            }
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free staging name"))
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if opts.mode != PutMode::Create || !opts.attributes.is_empty() {
            return self.fs.put_opts(location, payload, opts).await;
        }
        let dest = self.fs.path_to_filesystem(location)?;
        let sync_dir = self.sync_dir;
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || put_create(&dest, &payload, sync_dir, root.as_deref()))
            .await
            .map_err(|e| object_store::Error::JoinError { source: e })?
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        if !opts.attributes.is_empty() {
            return self.fs.put_multipart_opts(location, opts).await;
        }
        let dest = self.fs.path_to_filesystem(location)?;
        let flag = Arc::clone(&self.direct);
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let (file, src) = new_staging_under(&dest, root.as_deref())
                .map_err(|e| io_error("creating", &dest, e))?;
            let direct = if flag.load(Relaxed) {
                match OpenOptions::new()
                    .write(true)
                    .custom_flags(nix::libc::O_DIRECT)
                    .open(&src)
                {
                    Ok(f) => Some(f),
                    Err(e) => {
                        if flag.swap(false, Relaxed) {
                            info!(error = %e, "the store's filesystem refuses O_DIRECT; writing through the page cache");
                        }
                        None
                    }
                }
            } else {
                None
            };
            Ok(Box::new(DirectUpload {
                state: Arc::new(Files {
                    buffered: file,
                    direct,
                    flag,
                    src: src.clone(),
                }),
                src: Some(src),
                dest,
                offset: 0,
            }) as Box<dyn MultipartUpload>)
        })
        .await
        .map_err(|e| object_store::Error::JoinError { source: e })?
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.fs.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.fs.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.fs.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.fs.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.fs.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.fs.copy_opts(from, to, options).await
    }
}

/// The staging file's two descriptors.
#[derive(Debug)]
struct Files {
    buffered: File,
    direct: Option<File>,
    /// The store's `O_DIRECT` switch.
    flag: Arc<AtomicBool>,
    src: PathBuf,
}

/// One run of a part: consecutive bytes written the same way.
struct Run<'a> {
    offset: u64,
    direct: bool,
    bufs: Vec<IoSlice<'a>>,
}

impl Files {
    /// Whether a direct write may still be tried.
    fn direct_ok(&self) -> bool {
        self.direct.is_some() && self.flag.load(Relaxed)
    }

    /// Splits a part at `offset` into runs: aligned buffers at aligned
    /// offsets go direct, the rest buffered.
    fn runs<'a>(&self, offset: u64, chunks: impl Iterator<Item = &'a [u8]>) -> Vec<Run<'a>> {
        let direct_ok = self.direct_ok();
        let mut runs: Vec<Run<'a>> = Vec::new();
        let mut at = offset;
        let push =
            |runs: &mut Vec<Run<'a>>, at: u64, buf: &'a [u8], direct: bool| match runs.last_mut() {
                Some(r) if r.direct == direct && r.bufs.len() < IOV_MAX => {
                    r.bufs.push(IoSlice::new(buf))
                }
                _ => runs.push(Run {
                    offset: at,
                    direct,
                    bufs: vec![IoSlice::new(buf)],
                }),
            };
        for c in chunks.filter(|c| !c.is_empty()) {
            let aligned = direct_ok
                && (at as usize).is_multiple_of(ALIGN)
                && (c.as_ptr() as usize).is_multiple_of(ALIGN);
            let head = if aligned { c.len() / ALIGN * ALIGN } else { 0 };
            if head > 0 {
                push(&mut runs, at, &c[..head], true);
            }
            if head < c.len() {
                push(&mut runs, at + head as u64, &c[head..], false);
            }
            at += c.len() as u64;
        }
        runs
    }

    /// Writes a part at `offset`.
    fn write_part(&self, offset: u64, data: &PutPayload) -> std::io::Result<()> {
        let runs = self.runs(offset, data.iter().map(|b| &b[..]));
        write_runs(
            runs,
            |direct, bufs, at| {
                let file = match (&self.direct, direct) {
                    (Some(d), true) => d,
                    _ => &self.buffered,
                };
                nix::sys::uio::pwritev(file, bufs, at)
            },
            |e| {
                if self.flag.swap(false, Relaxed) {
                    warn!(error = %e, file = %self.src.display(), "O_DIRECT write refused; writing through the page cache");
                }
            },
        )
    }
}

/// Writes one run whole through `write` (`pwritev`), resuming after short
/// writes. On an error the run holds what is left: its offset and buffers
/// start at the first byte not written.
fn write_run(
    run: &mut Run<'_>,
    write: &mut impl FnMut(bool, &[IoSlice<'_>], i64) -> nix::Result<usize>,
) -> std::io::Result<()> {
    while !run.bufs.is_empty() {
        let n = match write(run.direct, &run.bufs, run.offset as i64) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        run.offset += n as u64;
        let len = run.bufs.len();
        let mut rest: &mut [IoSlice<'_>] = &mut run.bufs;
        IoSlice::advance_slices(&mut rest, n);
        let done = len - rest.len();
        run.bufs.drain(..done);
    }
    Ok(())
}

/// Writes `runs` in order. A direct run the filesystem refuses with EINVAL
/// (alignment stricter than a page, or no support) is finished buffered,
/// from the first byte the refused write left, and `refused` is told so
/// that later parts go buffered too.
fn write_runs(
    runs: Vec<Run<'_>>,
    mut write: impl FnMut(bool, &[IoSlice<'_>], i64) -> nix::Result<usize>,
    mut refused: impl FnMut(&std::io::Error),
) -> std::io::Result<()> {
    for mut run in runs {
        match write_run(&mut run, &mut write) {
            Err(e) if run.direct && e.raw_os_error() == Some(nix::libc::EINVAL) => {
                refused(&e);
                run.direct = false;
                write_run(&mut run, &mut write)?;
            }
            r => r?,
        }
    }
    Ok(())
}

/// A multipart upload into a staging file, parts written in parallel at
/// their offsets.
#[derive(Debug)]
struct DirectUpload {
    state: Arc<Files>,
    /// The staging file, until completed or aborted.
    src: Option<PathBuf>,
    dest: PathBuf,
    offset: u64,
}

#[async_trait]
impl MultipartUpload for DirectUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let offset = self.offset;
        self.offset += data.content_length() as u64;
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                // The payload (the ring slots' leases) is dropped here,
                // after the write: the slots go back once on disk.
                state
                    .write_part(offset, &data)
                    .map_err(|e| io_error("writing", &state.src, e))
            })
            .await
            .map_err(|e| object_store::Error::JoinError { source: e })?
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let src = self.src.take().ok_or(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: "upload already completed or aborted".into(),
        })?;
        let state = Arc::clone(&self.state);
        let dest = self.dest.clone();
        tokio::task::spawn_blocking(move || {
            let r = (|| {
                // The data's time is its publication, not its last write:
                // another mover's gc spares data younger than its grace, and
                // this file is about to appear beside a manifest that is
                // not written yet.
                state
                    .buffered
                    .set_modified(std::time::SystemTime::now())
                    .map_err(|e| io_error("setting the time of", &src, e))?;
                state
                    .buffered
                    .sync_all()
                    .map_err(|e| io_error("syncing", &src, e))?;
                let meta = state
                    .buffered
                    .metadata()
                    .map_err(|e| io_error("reading metadata of", &src, e))?;
                std::fs::rename(&src, &dest).map_err(|e| io_error("renaming", &src, e))?;
                if let Some(parent) = dest.parent() {
                    sync_dir(parent).map_err(|e| io_error("syncing", parent, e))?;
                }
                Ok(PutResult {
                    e_tag: Some(e_tag(&meta)),
                    version: None,
                    extensions: Default::default(),
                })
            })();
            if r.is_err() {
                let _ = std::fs::remove_file(&src);
            }
            r
        })
        .await
        .map_err(|e| object_store::Error::JoinError { source: e })?
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let Some(src) = self.src.take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || {
            std::fs::remove_file(&src).map_err(|e| io_error("removing", &src, e))
        })
        .await
        .map_err(|e| object_store::Error::JoinError { source: e })?
    }
}

impl Drop for DirectUpload {
    fn drop(&mut self) {
        if let Some(src) = self.src.take() {
            let _ = std::fs::remove_file(src);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use object_store::ObjectStoreExt;

    #[test]
    fn a_direct_write_refused_after_a_short_one_resumes_at_the_right_byte() {
        // pwritev may write part of a run; if the next direct write is
        // refused, the buffered retry must start where the short one ended.
        let a: Vec<u8> = (0..3 * ALIGN).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..2 * ALIGN + 100).map(|i| (i % 13) as u8 + 100).collect();
        let start = 5 * ALIGN as u64;
        let runs = vec![Run {
            offset: start,
            direct: true,
            bufs: vec![IoSlice::new(&a), IoSlice::new(&b)],
        }];
        let mut file = vec![0u8; start as usize];
        let mut calls = Vec::new();
        let mut refusals = 0;
        write_runs(
            runs,
            |direct, bufs: &[IoSlice<'_>], at| {
                calls.push((direct, at));
                if direct && calls.len() > 1 {
                    return Err(nix::errno::Errno::EINVAL);
                }
                // The first (direct) write is short, ending a page and a
                // half into the first buffer.
                let limit = if direct { ALIGN + ALIGN / 2 } else { 1000 };
                let mut n = 0;
                for buf in bufs {
                    for &byte in buf.iter() {
                        if n == limit {
                            break;
                        }
                        let pos = at as usize + n;
                        if file.len() <= pos {
                            file.resize(pos + 1, 0);
                        }
                        file[pos] = byte;
                        n += 1;
                    }
                }
                Ok(n)
            },
            |_| refusals += 1,
        )
        .unwrap();
        let mut want = vec![0u8; start as usize];
        want.extend_from_slice(&a);
        want.extend_from_slice(&b);
        assert_eq!(file.len(), want.len());
        assert!(file == want, "bytes landed at the wrong offsets");
        assert_eq!(refusals, 1);
        assert_eq!(calls[0], (true, start as i64));
        assert_eq!(calls[1], (true, start as i64 + (ALIGN + ALIGN / 2) as i64));
        assert_eq!(calls[2], (false, start as i64 + (ALIGN + ALIGN / 2) as i64));
    }

    /// Another writer's delete removes a parent this one just made (the
    /// store's automatic cleanup) before the child is made: the child's
    /// mkdir fails with ENOENT, and the directories are made again.
    #[test]
    fn a_parent_removed_by_another_writers_cleanup_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let want = dir.path().join("catalog/sbt/db");
        let parent = dir.path().join("catalog/sbt");
        let mut removed = 0;
        let mut calls = Vec::new();
        create_dirs_with(&want, None, &mut |d| {
            calls.push(d.to_path_buf());
            if d == want && removed == 0 {
                // The other writer's cleanup, between the two mkdirs.
                std::fs::remove_dir(&parent).unwrap();
                removed += 1;
            }
            std::fs::create_dir(d)
        })
        .unwrap();
        assert!(want.is_dir());
        assert_eq!(removed, 1);
        // catalog, catalog/sbt, catalog/sbt/db (lost), catalog/sbt, catalog/sbt/db
        assert_eq!(calls.len(), 5, "{calls:?}");

        // A directory that cannot be made for another reason is an error at once.
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let e = create_dirs(&file.join("under"), None).unwrap_err();
        assert_ne!(e.kind(), ErrorKind::NotFound, "{e}");
    }

    /// The store's directory replaced (an unmounted filesystem leaves its
    /// empty mount point) or removed: writes fail, and nothing is made in
    /// the new directory or in place of the old one.
    #[tokio::test]
    async fn no_directory_is_made_outside_the_store_directory_found_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        std::fs::create_dir(&root).unwrap();
        let sut = store(&root, false).with_root(&root).unwrap();
        let put = |name: &'static str| {
            let sut = &sut;
            async move {
                sut.put_opts(
                    &Path::from(name),
                    PutPayload::from_static(b"manifest"),
                    PutOptions::from(PutMode::Create),
                )
                .await
            }
        };
        put("catalog/a").await.unwrap();
        // Replaced: the path now names another (empty) directory.
        std::fs::rename(&root, dir.path().join("mounted")).unwrap();
        std::fs::create_dir(&root).unwrap();
        let e = put("catalog/b").await.unwrap_err().to_string();
        assert!(e.contains("not the one the mover started with"), "{e}");
        let e = sut
            .put_multipart(&Path::from("data/c"))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not the one the mover started with"), "{e}");
        assert_eq!(
            std::fs::read_dir(&root).unwrap().count(),
            0,
            "made under the new directory"
        );
        // Removed: it is not made again.
        std::fs::remove_dir(&root).unwrap();
        let e = put("catalog/d").await.unwrap_err().to_string();
        assert!(e.contains("is gone"), "{e}");
        assert!(!root.exists(), "the store directory was made again");
    }

    /// A page-aligned buffer of `pages` pages, filled with a pattern.
    fn aligned(pages: usize, seed: u8) -> Bytes {
        let mut v = vec![0u8; (pages + 1) * ALIGN];
        let skip = v.as_ptr().align_offset(ALIGN);
        for (i, b) in v.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
        }
        Bytes::from(v).slice(skip..skip + pages * ALIGN)
    }

    fn store(dir: &std::path::Path, direct: bool) -> LocalStore {
        LocalStore::new(
            LocalFileSystem::new_with_prefix(dir)
                .unwrap()
                .with_fsync(true),
            direct,
        )
    }

    /// Aligned and unaligned chunks, parts completing out of order: the
    /// object is the concatenation, direct or not.
    #[tokio::test]
    async fn parts_land_at_their_offsets_whatever_their_alignment() {
        for direct in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let sut = store(dir.path(), direct);
            let path = Path::from("data/x");
            let parts: Vec<Vec<Bytes>> = vec![
                vec![aligned(16, 1), aligned(3, 2)],
                vec![
                    aligned(2, 3),
                    Bytes::from_static(b"short tail"),
                    aligned(1, 4),
                ],
                vec![aligned(4, 5)],
                vec![Bytes::from_static(b"end")],
            ];
            let mut up = sut.put_multipart(&path).await.unwrap();
            let futs: Vec<_> = parts
                .iter()
                .map(|p| up.put_part(PutPayload::from_iter(p.clone())))
                .collect();
            for f in futs.into_iter().rev() {
                f.await.unwrap();
            }
            up.complete().await.unwrap();
            let want: Vec<u8> = parts.iter().flatten().flat_map(|b| b.to_vec()).collect();
            let got = sut.get(&path).await.unwrap().bytes().await.unwrap();
            assert_eq!(got.len(), want.len());
            assert!(got == want, "direct={direct}: content differs");
            let names: Vec<_> = std::fs::read_dir(dir.path().join("data"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["x"], "no staging file left");
        }
    }

    #[test]
    fn runs_split_aligned_from_unaligned_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (f, src) = new_staging(&dir.path().join("y")).unwrap();
        let files = Files {
            direct: Some(f.try_clone().unwrap()),
            buffered: f,
            flag: Arc::new(AtomicBool::new(true)),
            src,
        };
        let (a, b, c) = (aligned(2, 0), aligned(1, 1), aligned(1, 2));
        let tail = &c[..100];
        let chunks: Vec<&[u8]> = vec![&a, &b, tail, &c];
        let runs = files.runs(0, chunks.into_iter());
        let shape: Vec<_> = runs
            .iter()
            .map(|r| (r.offset, r.direct, r.bufs.len()))
            .collect();
        // Two whole aligned chunks direct, then everything after the short
        // one (now at an unaligned offset) buffered.
        assert_eq!(shape, [(0, true, 2), (3 * 4096, false, 2)]);
        let runs = files.runs(7, [&a[..]].into_iter());
        assert!(runs.iter().all(|r| !r.direct), "unaligned offset");
    }

    #[tokio::test]
    async fn aborted_and_dropped_uploads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sut = store(dir.path(), true);
        let mut up = sut.put_multipart(&Path::from("a/b")).await.unwrap();
        up.put_part(PutPayload::from(aligned(2, 9))).await.unwrap();
        up.abort().await.unwrap();
        let up = sut.put_multipart(&Path::from("a/c")).await.unwrap();
        drop(up);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("a")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// A directory whose `fsync(2)` fails, as a failing disk's does.
    fn failing_sync(_: &std::path::Path) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(nix::libc::EIO))
    }

    fn manifest(name: &str, data_key: &str) -> crate::catalog::Manifest {
        crate::catalog::Manifest {
            format: 1,
            name: name.into(),
            kind: "sbt".into(),
            data_key: data_key.into(),
            size: 0,
            created_unix_ms: 0,
            block_size: 0,
            crc32c: 0,
            parts: 0,
            metadata: Default::default(),
            transform: "none".into(),
        }
    }

    /// A manifest linked into place whose directory then fails to sync is
    /// not reported published: it may vanish in a crash, so the caller
    /// hears that the outcome is unknown (and keeps the data). With a
    /// directory that syncs, the same store publishes, and refuses a
    /// second manifest of the same name.
    #[tokio::test]
    async fn a_manifest_whose_directory_fails_to_sync_is_not_reported_published() {
        use crate::catalog::{Catalog, StoreError};
        use shmover_proto::ClientKind;
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let failing = Catalog::new(
            Arc::new(store(dir.path(), false).with_sync_dir(failing_sync)),
            0,
            Arc::clone(&metrics),
        )
        .with_late_writes(false);
        let err = failing
            .publish(ClientKind::Sbt, &manifest("piece_1", "data/1"))
            .await
            .expect_err("a manifest whose directory did not sync was reported published");
        assert!(
            matches!(&err, StoreError::Uncertain(name, why) if name == "piece_1" && why.contains("may not survive a crash")),
            "{err:?}"
        );
        // The link is there; only its durability is in doubt.
        let found = failing.manifest(ClientKind::Sbt, "piece_1").await.unwrap();
        assert_eq!(
            found.map(|m| m.data_key.clone()),
            Some("data/1".to_string())
        );

        let healthy =
            Catalog::new(Arc::new(store(dir.path(), false)), 0, metrics).with_late_writes(false);
        healthy
            .publish(ClientKind::Sbt, &manifest("piece_2", "data/2"))
            .await
            .unwrap();
        let again = healthy
            .publish(ClientKind::Sbt, &manifest("piece_2", "data/3"))
            .await
            .expect_err("a second manifest of the same name was published");
        assert!(
            matches!(&again, StoreError::AlreadyExists(n) if n == "piece_2"),
            "{again:?}"
        );
        // No staging file is left behind either way.
        let left = walk(dir.path());
        assert!(
            left.iter().all(|p| !p.contains('#')),
            "staging files left: {left:?}"
        );
    }

    /// Every file under `dir`, as paths.
    fn walk(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
        out
    }
}
