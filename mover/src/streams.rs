//! The data path of one stream: ring to store (backup) and store to ring
//! (restore).
//!
//! Backup: a consumer thread per stream leases committed slots and sends
//! them, as `Bytes::from_owner(lease)`, to an async task that groups them
//! into multipart parts and uploads a bounded number at a time. A slot goes
//! back to the client when the part holding it has been stored (the part's
//! payload owns the leases). The ring is the only buffer: nothing is copied
//! between the client's write into the slot and the store's write.
//!
//! Restore: an async task streams the object from the store into a
//! producer thread that fills slots, each with its CRC32C; the whole
//! object's CRC32C and size are checked against the manifest before the
//! end-of-stream slot is written, so a corrupt object never ends cleanly.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload};
use shmover_ring::{Consumer, Producer, ShmSegment, Wait, FLAG_CRC};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::catalog::Manifest;
use crate::metrics::Metrics;

/// Why a stream ended badly.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("ring: {0}")]
    Ring(shmover_ring::Error),
    #[error("store: {0}")]
    Store(#[from] object_store::Error),
    #[error("stored data failed its check: {0}")]
    Checksum(String),
    #[error("reading the stored object: {0}")]
    Read(std::io::Error),
    #[error("stream cancelled")]
    Cancelled,
}

/// Parameters shared by every stream.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    pub part_size: u64,
    /// Whether parts grow (S3's 10,000-part limit) or stay fixed.
    pub grow_parts: bool,
    /// Whether the store keeps part payloads after storing them (the
    /// in-memory store does): then parts are copied out of the ring, or the
    /// slots would never come back.
    pub store_keeps_payloads: bool,
    pub max_inflight_parts: usize,
    /// Bytes outside the rings, in KiB permits.
    pub memory: Arc<Semaphore>,
    /// The semaphore's total, so no single request asks for more.
    pub memory_kib: u32,
    /// Whether the local store's files are read and written with
    /// `O_DIRECT` where the filesystem allows (`direct_io`).
    pub direct_io: bool,
}

/// What every stream task carries besides its ring.
#[derive(Debug, Clone)]
pub struct StreamCtx {
    pub limits: StreamLimits,
    /// Set to stop the stream (client gone, abort, early close).
    pub cancel: Arc<AtomicBool>,
    /// Bytes moved so far, for `mover status`.
    pub progress: Arc<AtomicU64>,
    pub metrics: Arc<Metrics>,
    /// A duplicate of the client's control socket: its hang-up ends the
    /// stream even while the connection task is busy elsewhere.
    pub peer: Arc<std::os::fd::OwnedFd>,
}

impl StreamCtx {
    /// Whether the stream should go on: not cancelled, client still there.
    fn alive(&self) -> bool {
        !self.cancel.load(Relaxed)
            && !shmover_ring::fd_hung_up(std::os::fd::AsFd::as_fd(&*self.peer))
    }
}

/// How often a stream waiting for memory checks that it is still wanted.
const ALIVE_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// `kib` KiB of the memory budget, or `Cancelled` once the stream is
/// cancelled or its client has gone.
async fn memory_permits(ctx: &StreamCtx, kib: u32) -> Result<OwnedSemaphorePermit, StreamError> {
    if let Ok(p) = Arc::clone(&ctx.limits.memory).try_acquire_many_owned(kib) {
        return Ok(p);
    }
    ctx.metrics.memory_waits.fetch_add(1, Relaxed);
    let acquire = Arc::clone(&ctx.limits.memory).acquire_many_owned(kib);
    tokio::pin!(acquire);
    loop {
        tokio::select! {
            p = &mut acquire => return p.map_err(|_| StreamError::Cancelled),
            () = tokio::time::sleep(ALIVE_CHECK) => {
                if !ctx.alive() {
                    return Err(StreamError::Cancelled);
                }
            }
        }
    }
}

/// The largest part S3 accepts.
const MAX_PART: u64 = 5 << 30;

/// Target size of part `n` (0-based): `base` for the first 1,000 parts,
/// doubling every 1,000 parts after that, at most 5 GiB. With a 16 MiB
/// base, 10,000 parts hold about 12.8 TiB, so a 5 TB object fits S3's
/// 10,000-part limit. (`drain` also caps a part at memory_limit /
/// (max_inflight_parts + 1): objects of 5 TB need a memory_limit of about
/// 3 GiB with 4 parts in flight.)
pub fn part_target(base: u64, n: u64, grow: bool) -> u64 {
    if !grow {
        return base;
    }
    let level = (n / 1000).min(20) as u32;
    base.saturating_mul(1 << level).min(MAX_PART)
}

fn kib(bytes: usize) -> u32 {
    bytes.div_ceil(1024).min(u32::MAX as usize) as u32
}

/// What the consumer thread hands to the uploader.
enum Item {
    /// Bytes of one or more ring slots, and the slot count.
    Block(Bytes, u32),
    /// The end of the stream, with the CRC32C of all its bytes.
    End(u32),
    Failed(shmover_ring::Error),
    /// A block whose CRC32C differs from the one the client put in its
    /// descriptor.
    BadCrc(u64),
}

/// A finished upload, not yet completed: all parts are stored.
pub struct Uploaded {
    pub upload: Box<dyn MultipartUpload>,
    pub size: u64,
    pub crc32c: u32,
    pub parts: u64,
}

impl std::fmt::Debug for Uploaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploaded")
            .field("size", &self.size)
            .field("parts", &self.parts)
            .finish()
    }
}

/// Blocks the consumer thread hands over at once, at most: one channel
/// message (and at most one wake-up of the uploader) per batch, not per
/// block.
const SEND_BATCH: usize = 64;

/// Bytes one lease may cover when it takes a run of neighbouring slots:
/// large enough that 64 KiB blocks cost one lease, one CRC call and one I/O
/// vector entry per 64 blocks; small against a ring, so that slots go back
/// to the client in steady steps.
const RUN_BYTES: usize = 4 << 20;

/// Starts the consumer thread of a backup ring.
fn spawn_consumer(
    mut rx: Consumer<Arc<ShmSegment>>,
    tx: mpsc::Sender<Vec<Item>>,
    ctx: StreamCtx,
    name: String,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!(
            "ring-in {}",
            name.chars().take(20).collect::<String>()
        ))
        .spawn(move || {
            let alive = || ctx.alive();
            // Woken once per quarter ring rather than once per block: a
            // backup wants throughput, and every wake-up costs a system
            // call and a context switch on both sides.
            let geometry = shmover_ring::Segment::geometry(rx.segment());
            rx.set_wake_batch(geometry.slot_count / 4);
            let run = (RUN_BYTES / geometry.slot_size as usize)
                .clamp(1, (geometry.slot_count as usize / 8).max(1)) as u32;
            let mut batch = Vec::with_capacity(SEND_BATCH);
            // The stream's CRC32C, over the bytes in order: runs vary in
            // length, and combining per-run CRCs would cost more than the
            // checksum itself.
            let mut crc = shmover_client::Crc32c::new();
            loop {
                // Sleep only with nothing in hand; otherwise take what is
                // committed now and send the batch when there is no more.
                let next = if batch.is_empty() {
                    rx.next_run(&Wait::forever().alive(&alive), run).map(Some)
                } else {
                    rx.try_next_run(run)
                };
                let drained = matches!(next, Ok(None));
                let last = match next {
                    Ok(Some(lease)) => {
                        let end = lease.is_end();
                        if !lease.is_empty() {
                            // A slot the client checksummed (never a run)
                            // is checked on its own, then chained like the
                            // rest.
                            if lease
                                .crc()
                                .is_some_and(|c| c != shmover_client::crc32c(&lease))
                            {
                                batch.push(Item::BadCrc(lease.seq()));
                                let _ = tx.blocking_send(batch);
                                return;
                            }
                            // Always our own CRC, whatever the client
                            // claims. It is taken from the slot, which the
                            // client can still write until the store has
                            // the part (no copy is made): a client that
                            // changes a slot after committing it corrupts
                            // its own backup, and the restore then fails
                            // its CRC32C check instead of returning the
                            // changed bytes.
                            crc.update(&lease);
                            let slots = lease.slots();
                            batch.push(Item::Block(Bytes::from_owner(lease), slots));
                        }
                        if end {
                            batch.push(Item::End(crc.value()));
                        }
                        end
                    }
                    Ok(None) => false,
                    Err(e) => {
                        batch.push(Item::Failed(e));
                        true
                    }
                };
                if last {
                    // The ring is done with before the uploader hears of
                    // the end, so a clean backup's segment is free for
                    // reuse by the time it commits.
                    drop(rx);
                    let _ = tx.blocking_send(batch);
                    return;
                }
                let full = batch.len() >= SEND_BATCH;
                if (full || drained) && tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                    return;
                }
            }
        })
        .map(|_| ())
}

/// Drains a backup ring into `upload` until the end-of-stream slot. On any
/// failure or cancellation the upload is aborted before returning.
///
/// # Cancel safety
///
/// Not cancel safe: dropping the future drops the upload (object_store's
/// local upload removes its staging file on drop) and the parts in flight;
/// their leases go back to the ring. Cancel through `cancel` instead.
pub async fn upload(
    rx: Consumer<Arc<ShmSegment>>,
    mut upload: Box<dyn MultipartUpload>,
    ctx: StreamCtx,
    name: String,
    geometry: shmover_ring::Geometry,
) -> Result<Uploaded, StreamError> {
    let (tx, mut items) = mpsc::channel(256);
    if let Err(e) = spawn_consumer(rx, tx, ctx.clone(), name) {
        let _ = upload.abort().await;
        return Err(StreamError::Ring(shmover_ring::Error::Io(
            e.raw_os_error().unwrap_or(0),
        )));
    }
    let result = drain(&mut items, upload.as_mut(), &ctx, geometry).await;
    match result {
        Ok((size, crc32c, parts)) if !ctx.cancel.load(Relaxed) => Ok(Uploaded {
            upload,
            size,
            crc32c,
            parts,
        }),
        other => {
            ctx.cancel.store(true, Relaxed);
            let _ = upload.abort().await;
            Err(other.err().unwrap_or(StreamError::Cancelled))
        }
    }
}

type PartFuture =
    futures::future::BoxFuture<'static, Result<std::time::Duration, object_store::Error>>;

/// The smallest part S3 accepts (except the last).
const MIN_PART: u64 = 5 << 20;

/// The part being filled: either leases of ring slots (zero copy), or
/// bytes copied out of the ring under memory permits.
#[derive(Default)]
struct Part {
    chunks: Vec<Bytes>,
    len: u64,
    /// Ring slots the chunks hold (while not copied).
    slots: usize,
    permits: Vec<OwnedSemaphorePermit>,
    /// Bytes of memory the permits cover.
    reserved: u64,
    copied: bool,
}

struct Uploader<'a> {
    upload: &'a mut dyn MultipartUpload,
    inflight: FuturesUnordered<PartFuture>,
    ctx: &'a StreamCtx,
    parts: u64,
}

impl Uploader<'_> {
    fn record(
        &self,
        r: Result<std::time::Duration, object_store::Error>,
    ) -> Result<(), StreamError> {
        let took = r?;
        self.ctx.metrics.parts_uploaded.fetch_add(1, Relaxed);
        self.ctx
            .metrics
            .part_latency_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
        Ok(())
    }

    /// Memory permits for `bytes`, while parts in flight keep completing
    /// (they hold permits of their own). At most the semaphore's total is
    /// asked for, so one large request cannot wait forever. Gives up when
    /// the stream is cancelled or its client has gone.
    async fn permits(&mut self, bytes: usize) -> Result<OwnedSemaphorePermit, StreamError> {
        let want = kib(bytes).clamp(1, self.ctx.limits.memory_kib.max(1));
        let acquire = memory_permits(self.ctx, want);
        tokio::pin!(acquire);
        loop {
            tokio::select! {
                p = &mut acquire => return p,
                done = self.inflight.next(), if !self.inflight.is_empty() => {
                    self.record(done.expect("non-empty"))?;
                }
            }
        }
    }

    /// Reserves memory for the part being copied up to `bytes` in all.
    ///
    /// A copied part reserves its whole target at once, before its first
    /// byte (or, when its leases are copied out, before the copy): a stream
    /// never waits for memory while it holds some for a half-filled part.
    /// Otherwise streams could hold the whole budget between them in
    /// half-filled parts, each waiting for the rest, none with a part in
    /// flight to give any back.
    async fn reserve(&mut self, part: &mut Part, bytes: u64) -> Result<(), StreamError> {
        if part.reserved < bytes {
            let p = self.permits((bytes - part.reserved) as usize).await?;
            part.permits.push(p);
            // A request is capped at the whole budget; a part is never
            // larger than that (`target_of`, and the configuration's check
            // that memory_limit holds a part), so this is all it needs.
            part.reserved = bytes;
        }
        Ok(())
    }

    /// Copies the part's leases out of the ring, giving the slots back,
    /// with memory reserved for the part up to `target`.
    async fn copy_out(&mut self, part: &mut Part, target: u64) -> Result<(), StreamError> {
        if part.copied || part.chunks.is_empty() {
            part.copied = true;
            return Ok(());
        }
        self.reserve(part, target.max(part.len)).await?;
        // The copy (up to a part) and the release of its slots, which can
        // ring the client's doorbell, run off the runtime's workers: a
        // hostile client can make a doorbell write wait (see
        // `shmover_ring::guard_writes`).
        let chunks = std::mem::take(&mut part.chunks);
        let len = part.len as usize;
        let owned = tokio::task::spawn_blocking(move || {
            let mut owned = bytes::BytesMut::with_capacity(len);
            for c in chunks {
                owned.extend_from_slice(&c);
            }
            owned.freeze()
        })
        .await
        .map_err(|_| StreamError::Cancelled)?;
        part.chunks.push(owned);
        part.slots = 0;
        part.copied = true;
        Ok(())
    }

    async fn submit(&mut self, part: Part) -> Result<(), StreamError> {
        while self.inflight.len() >= self.ctx.limits.max_inflight_parts {
            let done = self.inflight.next().await.expect("non-empty");
            self.record(done)?;
        }
        let fut = self.upload.put_part(PutPayload::from_iter(part.chunks));
        let permits = part.permits;
        self.inflight.push(Box::pin(async move {
            let t = Instant::now();
            let r = fut.await;
            drop(permits);
            r.map(|()| t.elapsed())
        }));
        self.parts += 1;
        Ok(())
    }
}

async fn drain(
    items: &mut mpsc::Receiver<Vec<Item>>,
    upload: &mut dyn MultipartUpload,
    ctx: &StreamCtx,
    geometry: shmover_ring::Geometry,
) -> Result<(u64, u32, u64), StreamError> {
    let limits = &ctx.limits;
    let mut up = Uploader {
        upload,
        inflight: FuturesUnordered::new(),
        ctx,
        parts: 0,
    };
    // A part may hold at most half the ring's slots as leases: beyond that
    // the client could not make progress (short blocks, large parts).
    let lease_limit = (geometry.slot_count as usize / 2).max(1);
    let mut size = 0u64;
    let fresh = || Part {
        copied: limits.store_keeps_payloads,
        ..Part::default()
    };
    let mut part = fresh();
    let mut pending = Vec::new().into_iter();
    // Growing parts (S3) are capped so that the parts in flight plus the
    // one being filled fit in memory_limit when they have to be copied.
    let target_of = |parts: u64| {
        let target = part_target(limits.part_size, parts, limits.grow_parts);
        if limits.grow_parts {
            let share =
                u64::from(limits.memory_kib) * 1024 / (limits.max_inflight_parts as u64 + 1);
            target.min(share.max(MIN_PART))
        } else {
            target
        }
    };
    let crc = loop {
        let item = match pending.next() {
            Some(item) => Some(item),
            None => {
                let batch = tokio::select! {
                    biased;
                    done = up.inflight.next(), if !up.inflight.is_empty() => {
                        up.record(done.expect("non-empty"))?;
                        continue;
                    }
                    batch = items.recv() => batch,
                };
                match batch {
                    Some(b) => {
                        pending = b.into_iter();
                        continue;
                    }
                    None => None,
                }
            }
        };
        match item {
            None => return Err(StreamError::Cancelled),
            Some(Item::Failed(e)) => return Err(StreamError::Ring(e)),
            Some(Item::BadCrc(seq)) => {
                return Err(StreamError::Checksum(format!(
                    "block {seq} does not match the CRC32C the client gave for it"
                )))
            }
            Some(Item::Block(mut b, slots)) => {
                let len = b.len() as u64;
                size += len;
                ctx.progress.fetch_add(len, Relaxed);
                ctx.metrics.bytes_in.fetch_add(len, Relaxed);
                // A run of slots may straddle parts: each part gets exactly
                // its target (a slice of a lease keeps the whole lease until
                // both parts are stored). The run's slots count against the
                // part it starts in.
                let mut slots = slots as usize;
                while !b.is_empty() {
                    let room = target_of(up.parts).saturating_sub(part.len).max(1);
                    let piece = if (b.len() as u64) > room {
                        b.split_to(room as usize)
                    } else {
                        std::mem::take(&mut b)
                    };
                    part.len += piece.len() as u64;
                    if part.copied {
                        let want = target_of(up.parts).max(part.len);
                        up.reserve(&mut part, want).await?;
                        part.chunks.push(Bytes::copy_from_slice(&piece));
                    } else {
                        part.chunks.push(piece);
                        part.slots += std::mem::take(&mut slots);
                    }
                    if part.len >= target_of(up.parts) {
                        up.submit(std::mem::replace(&mut part, fresh())).await?;
                    } else if !part.copied && part.slots >= lease_limit {
                        // The part holds half the ring. Stores without a part
                        // count limit take it as it is; on S3 (10,000 parts,
                        // 5 MiB minimum) it is copied out and keeps growing.
                        if limits.grow_parts {
                            up.copy_out(&mut part, target_of(up.parts)).await?;
                        } else {
                            up.submit(std::mem::replace(&mut part, fresh())).await?;
                        }
                    }
                }
            }
            Some(Item::End(crc)) => break crc,
        }
    };
    if part.len > 0 || up.parts == 0 {
        up.submit(part).await?;
    }
    while let Some(r) = up.inflight.next().await {
        up.record(r)?;
    }
    Ok((size, crc, up.parts))
}

/// What the store task hands to the producer thread: a batch of chunks
/// (store streams yield small chunks; batching keeps the per-chunk cost off
/// the data path) with the memory permits they hold.
enum Chunk {
    Data(Vec<Bytes>, OwnedSemaphorePermit),
    End,
}

/// Keeps the disk busy ahead of a restore's reads from the local store.
///
/// A backup written with `O_DIRECT` is not in the page cache, and the
/// kernel's own readahead keeps one request or two in flight: about 0.9
/// GB/s on the development VM's disk, which reads at 1.6 GB/s with a deep
/// queue. So the reader asks for [`READAHEAD`] bytes ahead at a time
/// (`POSIX_FADV_WILLNEED` queues the reads and returns), and drops what it
/// has read (`POSIX_FADV_DONTNEED`), so a restore does not push the rest of
/// the machine out of the page cache.
struct Readahead<'a> {
    file: &'a std::fs::File,
    size: u64,
    /// Asked for up to here.
    asked: u64,
    /// Dropped up to here.
    dropped: u64,
}

/// How far ahead of the reader the disk is kept busy.
const READAHEAD: u64 = 128 << 20;

impl<'a> Readahead<'a> {
    fn new(file: &'a std::fs::File, size: u64) -> Self {
        use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
        // Advice only: a filesystem that ignores it reads as before.
        let _ = posix_fadvise(file, 0, 0, PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL);
        Self {
            file,
            size,
            asked: 0,
            dropped: 0,
        }
    }

    /// The reader is about to read at `off`: keeps [`READAHEAD`] bytes
    /// asked for beyond it, in steps of half that, and drops what lies a
    /// step behind it.
    fn at(&mut self, off: u64) {
        use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
        let step = READAHEAD / 8;
        while self.asked < self.size && self.asked < off + READAHEAD {
            let len = step.min(self.size - self.asked);
            let _ = posix_fadvise(
                self.file,
                self.asked as i64,
                len as i64,
                PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
            self.asked += len;
        }
        if off >= self.dropped + step {
            let _ = posix_fadvise(
                self.file,
                self.dropped as i64,
                (off - self.dropped) as i64,
                PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
            self.dropped = off;
        }
    }
}

/// Alignment of `O_DIRECT` reads: buffers, offsets and lengths.
const DIRECT_ALIGN: usize = 4096;
/// Bytes an `O_DIRECT` restore read waits to have room for in the ring
/// (and twice that is the most it fills at once): a run of ring slots.
const DIRECT_RUN: usize = 16 << 20;
/// Reads in flight at once for one run, each a share of it: one read at a
/// time leaves the disk idle between requests (0.8-0.9 GB/s on the
/// development VM's disk, against 1.6 with a deeper queue).
const DIRECT_READERS: usize = 8;

/// Whether a restore from the local store can read the file with `O_DIRECT`
/// straight into the ring: slots that are whole pages and hold a block
/// each, so that the file's bytes land back to back, page-aligned, and a
/// filesystem that takes the flag. Reading around the page cache means no
/// copy out of it, no page-cache bookkeeping under many restores at once,
/// and no restore pushing the machine's working set out of memory.
fn direct_ok(file: &std::fs::File, tx: &Producer<Arc<ShmSegment>>, payload: usize) -> bool {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let data = shmover_ring::Segment::data(tx.segment()).as_ptr() as usize;
    if payload != tx.slot_size()
        || !payload.is_multiple_of(DIRECT_ALIGN)
        || !data.is_multiple_of(DIRECT_ALIGN)
    {
        return false;
    }
    let Ok(flags) = fcntl(file, FcntlArg::F_GETFL) else {
        return false;
    };
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_DIRECT;
    fcntl(file, FcntlArg::F_SETFL(flags)).is_ok()
}

/// Reads `want` bytes at `off` into `buf` (whose length is `want` rounded
/// up to the alignment) with [`DIRECT_READERS`] reads at once. A read the
/// filesystem refuses for `O_DIRECT` reasons is retried through the page
/// cache, and the file stays that way.
fn read_direct(
    file: &std::fs::File,
    buf: &mut [u8],
    off: u64,
    want: usize,
) -> Result<(), StreamError> {
    use std::os::unix::fs::FileExt;
    let share = buf
        .len()
        .div_ceil(DIRECT_READERS)
        .next_multiple_of(DIRECT_ALIGN)
        .max(DIRECT_ALIGN);
    let read_piece = |piece: &mut [u8], at: u64, need: usize| -> std::io::Result<()> {
        let mut got = 0;
        while got < need {
            match file.read_at(&mut piece[got..], at + got as u64) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the file ends {} bytes early", need - got),
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    use nix::fcntl::{fcntl, FcntlArg, OFlag};
                    let flags = fcntl(file, FcntlArg::F_GETFL)?;
                    let flags = OFlag::from_bits_truncate(flags) - OFlag::O_DIRECT;
                    fcntl(file, FcntlArg::F_SETFL(flags))?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        let mut readers = Vec::new();
        for (i, piece) in buf.chunks_mut(share).enumerate() {
            let start = i * share;
            let need = want.saturating_sub(start).min(piece.len());
            if need == 0 {
                break;
            }
            let at = off + start as u64;
            if i + 1 == want.div_ceil(share) {
                // The last piece is read on this thread.
                read_piece(piece, at, need)?;
            } else {
                readers.push(scope.spawn(move || read_piece(piece, at, need)));
            }
        }
        readers.into_iter().try_for_each(|r| {
            r.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("reader thread failed")))
        })
    })
    .map_err(StreamError::Read)
}

/// Bytes gathered before a batch goes to the producer thread.
const BATCH: usize = 1 << 20;

/// Streams the object behind `m` into a restore ring whose slots carry
/// `payload` bytes each. Writes the end-of-stream slot only if size and
/// CRC32C match the manifest. From the local store the producer thread
/// reads the file straight into the slots (one copy, from the page cache);
/// from other stores the object's byte stream is copied in.
///
/// # Cancel safety
///
/// Not cancel safe; cancel through `ctx.cancel` (the producer thread then
/// detaches, and the client sees the stream end without its marker).
pub async fn download(
    store: Arc<dyn object_store::ObjectStore>,
    tx: Producer<Arc<ShmSegment>>,
    m: Manifest,
    payload: usize,
    ctx: StreamCtx,
) -> Result<(), StreamError> {
    let key =
        crate::catalog::data_path(&m.data_key).map_err(|e| StreamError::Checksum(e.to_string()))?;
    let got = store.get(&key).await?;
    if got.meta.size != m.size {
        // Truncated or replaced: refuse before the first byte reaches the
        // client, rather than at the end of a restore it took as good.
        return Err(StreamError::Checksum(format!(
            "the stored data of {:?} is {} bytes; its manifest says {}",
            m.name, got.meta.size, m.size
        )));
    }
    let expect = (m.size, m.crc32c);
    if let object_store::GetResultPayload::File(file, _) = got.payload {
        let ctx = ctx.clone();
        return tokio::task::spawn_blocking(move || {
            fill_ring(tx, Source::File(file), payload, expect, &ctx)
        })
        .await
        .unwrap_or_else(|_| Err(StreamError::Checksum("restore thread failed".into())));
    }
    let (chunks_tx, chunks_rx) = mpsc::channel::<Chunk>(4);
    let thread_ctx = ctx.clone();
    let producer = tokio::task::spawn_blocking(move || {
        fill_ring(tx, Source::Chunks(chunks_rx), payload, expect, &thread_ctx)
    });
    let feed = async {
        let mut stream = got.into_stream();
        let mut batch: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        loop {
            let next = stream.next().await.transpose()?;
            let end = next.is_none();
            // A store may hand over the whole object as one chunk (the
            // in-memory store does): cut it into batches, so that each
            // batch's permits stay small and the producer starts at once.
            let mut chunk = next.unwrap_or_default();
            while !chunk.is_empty() || (end && len > 0) {
                let take = (BATCH - len).min(chunk.len());
                if take > 0 {
                    batch.push(chunk.split_to(take));
                    len += take;
                }
                if len < BATCH && !(end && chunk.is_empty()) {
                    break;
                }
                let want = kib(len).clamp(1, ctx.limits.memory_kib.max(1));
                let permit = memory_permits(&ctx, want).await?;
                if chunks_tx
                    .send(Chunk::Data(std::mem::take(&mut batch), permit))
                    .await
                    .is_err()
                {
                    return Ok(()); // the producer stopped; its result says why
                }
                len = 0;
            }
            if end {
                let _ = chunks_tx.send(Chunk::End).await;
                return Ok::<(), StreamError>(());
            }
        }
    };
    let fed = feed.await;
    if fed.is_err() {
        ctx.cancel.store(true, Relaxed);
    }
    drop(chunks_tx);
    let produced = producer
        .await
        .unwrap_or(Err(StreamError::Checksum("restore thread failed".into())));
    fed.and(produced)
}

/// Where a restore's bytes come from.
enum Source {
    /// The local store's file: read straight into the slots.
    File(std::fs::File),
    /// Batches of chunks from a remote store.
    Chunks(mpsc::Receiver<Chunk>),
}

/// Fills the ring from `source`, each slot with its CRC32C, and writes the
/// end-of-stream slot if the total matches `(size, crc)`.
fn fill_ring(
    mut tx: Producer<Arc<ShmSegment>>,
    source: Source,
    payload: usize,
    (size, crc_want): (u64, u32),
    ctx: &StreamCtx,
) -> Result<(), StreamError> {
    let alive = || ctx.alive();
    let wait = Wait::forever().alive(&alive);
    let (mut total, mut crc) = (0u64, shmover_client::CrcChain::new());
    // Commits the first `len` bytes of the reserved slot. (Reserving again
    // before a commit returns the same slot, so a block may be filled over
    // several reservations.)
    let mut publish = |tx: &mut Producer<Arc<ShmSegment>>, len: usize| -> Result<(), StreamError> {
        let mut slot = tx.reserve(&wait).map_err(StreamError::Ring)?;
        let c = shmover_client::crc32c(&slot.as_mut_slice()[..len]);
        slot.commit(len, FLAG_CRC, c).map_err(StreamError::Ring)?;
        crc.push(c, len);
        total += len as u64;
        ctx.progress.fetch_add(len as u64, Relaxed);
        ctx.metrics.bytes_out.fetch_add(len as u64, Relaxed);
        Ok(())
    };
    match source {
        Source::File(file) if ctx.limits.direct_io && direct_ok(&file, &tx, payload) => {
            let run = (DIRECT_RUN / payload).clamp(
                1,
                (shmover_ring::Segment::geometry(tx.segment()).slot_count / 2).max(1) as usize,
            );
            let mut off = 0u64;
            while off < size {
                let mut slots = tx
                    .reserve_run(&wait, run as u32, 2 * run as u32)
                    .map_err(StreamError::Ring)?;
                let want = (size - off).min(slots.slots() as u64 * payload as u64) as usize;
                read_direct(
                    &file,
                    &mut slots.as_mut_slice()[..want.next_multiple_of(DIRECT_ALIGN)],
                    off,
                    want,
                )?;
                let mut at = 0;
                while at < want {
                    let n = (want - at).min(payload);
                    let c = shmover_client::crc32c(&slots.as_mut_slice()[..n]);
                    slots
                        .commit_slot(n, FLAG_CRC, c)
                        .map_err(StreamError::Ring)?;
                    crc.push(c, n);
                    at += n;
                }
                off += want as u64;
                total += want as u64;
                ctx.progress.fetch_add(want as u64, Relaxed);
                ctx.metrics.bytes_out.fetch_add(want as u64, Relaxed);
            }
        }
        Source::File(file) => {
            use std::os::unix::fs::FileExt;
            let mut ahead = Readahead::new(&file, size);
            let mut off = 0u64;
            while off < size {
                ahead.at(off);
                let n = (size - off).min(payload as u64) as usize;
                {
                    let mut slot = tx.reserve(&wait).map_err(StreamError::Ring)?;
                    file.read_exact_at(&mut slot.as_mut_slice()[..n], off)
                        .map_err(StreamError::Read)?;
                }
                publish(&mut tx, n)?;
                off += n as u64;
            }
        }
        Source::Chunks(mut chunks) => {
            let mut fill = 0usize;
            loop {
                let (batch, _permit) = match chunks.blocking_recv() {
                    Some(Chunk::Data(b, p)) => (b, p),
                    Some(Chunk::End) => break,
                    None => return Err(StreamError::Cancelled),
                };
                for data in &batch {
                    let mut rest: &[u8] = data;
                    while !rest.is_empty() {
                        let n = (payload - fill).min(rest.len());
                        {
                            let mut slot = tx.reserve(&wait).map_err(StreamError::Ring)?;
                            slot.as_mut_slice()[fill..fill + n].copy_from_slice(&rest[..n]);
                        }
                        fill += n;
                        rest = &rest[n..];
                        if fill == payload {
                            publish(&mut tx, fill)?;
                            fill = 0;
                        }
                    }
                }
            }
            if fill > 0 {
                publish(&mut tx, fill)?;
            }
        }
    }
    let crc = crc.value();
    if total != size || crc != crc_want {
        return Err(StreamError::Checksum(format!(
            "read {total} bytes with CRC32C {crc:#010x}; the manifest says {size} bytes, {crc_want:#010x}"
        )));
    }
    tx.finish(&wait).map_err(StreamError::Ring)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_growing_parts_hold_five_terabytes_within_s3_part_limits() {
        let base = 16 << 20;
        let total: u64 = (0..10_000).map(|n| part_target(base, n, true)).sum();
        assert!(total >= 5_000_000_000_000, "{total}");
        for n in 0..10_000 {
            let p = part_target(base, n, true);
            assert!((5 << 20..=5 << 30).contains(&p), "part {n}: {p}");
        }
        assert_eq!(part_target(base, 999, true), base);
        assert_eq!(part_target(base, 1000, true), 2 * base);
    }

    #[test]
    fn fixed_parts_stay_fixed_for_stores_without_a_part_limit() {
        assert_eq!(part_target(16 << 20, 50_000, false), 16 << 20);
    }
}
