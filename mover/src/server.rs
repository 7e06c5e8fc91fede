//! `mover serve`: the control socket, one task per connection, one stream
//! per connection at a time.

use std::collections::{BTreeMap, HashMap};
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use object_store::ObjectStoreExt;
use shmover_proto::{request, response, v1, ClientKind, ErrorCode};
use shmover_ring::{
    fd_hung_up, Consumer, Direction, Geometry, Producer, Segment as _, ShmSegment, PAGE,
};
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::catalog::{create_private_dir, Catalog, Manifest, StoreError};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::names;
use crate::streams::{self, StreamCtx, StreamError, StreamLimits, Uploaded};
use crate::timefmt::now_ms;

/// Most bytes of metadata (keys and values together) a backup may carry.
const MAX_METADATA: usize = 64 << 10;

/// One live stream, for `mover status`.
#[derive(Debug)]
pub struct StreamEntry {
    pid: u32,
    kind: ClientKind,
    label: String,
    name: String,
    writing: bool,
    bytes: Arc<AtomicU64>,
    started: Instant,
}

/// State shared by all connections.
#[derive(Debug)]
pub struct Shared {
    cfg: Config,
    catalog: Catalog,
    metrics: Arc<Metrics>,
    limits: StreamLimits,
    streams: Mutex<BTreeMap<u64, Arc<StreamEntry>>>,
    /// Names being written on this mover, so two writers of one name
    /// conflict at open rather than at commit, each with its data key once
    /// its upload has started: until the manifest is published (or the
    /// backup fails) `gc` must not take that data for an orphan.
    writing: Mutex<HashMap<(i32, String), Option<String>>>,
    next_id: AtomicU64,
    /// Shared memory of the rings open now or idle in `idle_rings`,
    /// against `ring_memory`.
    ring_bytes: AtomicU64,
    /// Rings whose streams ended cleanly, kept for the same user's next
    /// stream.
    idle_rings: Mutex<Vec<IdleRing>>,
}

/// One connection counted against `max_connections` while it lives.
struct ConnSlot(Arc<Shared>);

impl ConnSlot {
    /// Counts a new connection, or says how many are open when the limit
    /// is reached.
    fn take(shared: &Arc<Shared>) -> Result<Self, usize> {
        // The gauge is the count (`shmover_connections_open`).
        let open = shared.metrics.connections_open.fetch_add(1, Relaxed) as usize;
        let slot = Self(Arc::clone(shared));
        if open >= shared.cfg.max_connections {
            return Err(open);
        }
        Ok(slot)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.metrics.connections_open.fetch_sub(1, Relaxed);
    }
}

/// A ring kept after its stream ended cleanly. Fresh shared memory costs
/// the kernel a zeroed page per 4 KiB at the first touch (slow, and
/// serialised on a virtual machine), so reusing a ring's pages is worth
/// more than the pages: an RMAN channel writes piece after piece with the
/// same block size. A ring goes back only to the same uid, which could read
/// the previous stream's bytes anyway; and only after a clean end, when the
/// client library has unmapped it before its last request.
#[derive(Debug)]
struct IdleRing {
    uid: u32,
    seg: ShmSegment,
    /// Its share of `ring_memory`, still counted in `ring_bytes`.
    bytes: u64,
    since: Instant,
}

/// How long an idle ring is kept before its memory goes back to the system.
const RING_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

impl Shared {
    /// Drops idle rings, oldest first, that have been idle for `RING_IDLE`
    /// or, while `need` is not met, any of them (`need` says whether the
    /// memory left is enough). Unmapping happens outside the lock.
    fn evict_rings(&self, mut need: impl FnMut(u64) -> bool) {
        let evicted: Vec<IdleRing> = {
            let mut idle = self.idle_rings.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            // Oldest first: rings are pushed as they come back.
            while let Some(first) = idle.first() {
                let in_use = self.ring_bytes.load(Relaxed);
                if first.since.elapsed() < RING_IDLE && !need(in_use) {
                    break;
                }
                let r = idle.remove(0);
                self.ring_bytes.fetch_sub(r.bytes, Relaxed);
                out.push(r);
            }
            out
        };
        drop(evicted);
    }

    /// Takes the largest idle ring of `uid` with slots of `slot` bytes
    /// (the most recent of those), if any.
    fn take_ring(&self, uid: u32, slot: u32) -> Option<IdleRing> {
        let mut idle = self.idle_rings.lock().unwrap_or_else(|p| p.into_inner());
        let at = idle
            .iter()
            .enumerate()
            .filter(|(_, r)| r.uid == uid && r.seg.geometry().slot_size == slot)
            .max_by_key(|(i, r)| (r.seg.geometry().slot_count, *i))?
            .0;
        Some(idle.remove(at))
    }

    /// The ring for a stream of `payload`-byte blocks in `direction`: an
    /// idle ring of user `uid` with that slot size if there is one;
    /// otherwise a new one of `ring_size`, or half of what is left of
    /// `ring_memory` if that is less (4 MiB and two slots at least), so that
    /// many streams opening at once share it. Idle rings make room for a
    /// new one. `ring_memory` is what ring sizes are chosen against, not a
    /// cap: a stream always gets its floor, so the most mapped at once is
    /// `ring_memory` plus `max_streams` floors (README, "Rings").
    async fn ring(
        self: &Arc<Self>,
        uid: u32,
        payload: u64,
        direction: Direction,
    ) -> Result<(Geometry, Ring), response::Body> {
        let slot = payload.max(PAGE as u64).div_ceil(PAGE as u64) * PAGE as u64;
        if slot > u64::from(shmover_ring::MAX_SLOT_SIZE) {
            return Err(error_body(
                ErrorCode::InvalidArgument,
                format!(
                    "block size {payload} exceeds the largest slot ({} bytes)",
                    shmover_ring::MAX_SLOT_SIZE
                ),
            ));
        }
        let shared = self;
        let cfg = &shared.cfg;
        shared.evict_rings(|_| false);
        if let Some(idle) = shared.take_ring(uid, slot as u32) {
            let share = RingShare {
                shared: Arc::clone(shared),
                bytes: idle.bytes,
            };
            match idle.seg.recycle(direction) {
                Ok(seg) => {
                    shared.metrics.rings_reused.fetch_add(1, Relaxed);
                    let geometry = seg.geometry();
                    let seg = Arc::new(seg);
                    return Ok((geometry, Ring { seg, share }));
                }
                Err(e) => warn!(error = %e, "could not reuse an idle ring; making a new one"),
            }
        }
        // Idle rings of other users or sizes give way to a full-size ring.
        shared.evict_rings(|in_use| cfg.ring_memory.saturating_sub(in_use) / 2 < cfg.ring_size);
        let size_for = |in_use: u64| {
            let left = cfg.ring_memory.saturating_sub(in_use) / 2;
            let ring = cfg.ring_size.min(left.max(4 << 20));
            let count = (ring / slot).clamp(2, u64::from(shmover_ring::MAX_SLOT_COUNT));
            let count = 1u64 << (63 - count.leading_zeros()); // round down to a power of two
            Geometry::new(count as u32, slot as u32)
        };
        // Sized and reserved in one step: streams opening at once on the
        // runtime's threads each see what the others took.
        let mut geometry = None;
        let reserved = shared.ring_bytes.fetch_update(Relaxed, Relaxed, |in_use| {
            let g = size_for(in_use).ok()?;
            geometry = Some(g);
            Some(in_use + g.total_size() as u64)
        });
        let geometry = match (reserved, geometry) {
            (Ok(_), Some(g)) => g,
            _ => {
                let e = size_for(0).err().map(|e| e.to_string()).unwrap_or_default();
                return Err(error_body(ErrorCode::InvalidArgument, e));
            }
        };
        let bytes = geometry.total_size() as u64;
        let share = RingShare {
            shared: Arc::clone(shared),
            bytes,
        };
        // Creating faults every page in (the kernel zeroes each): off the
        // runtime's threads, which other streams need meanwhile.
        let seg = tokio::task::spawn_blocking(move || ShmSegment::create(geometry, direction))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            .map_err(|e| {
                error_body(
                    ErrorCode::Resource,
                    format!("cannot create a ring of {bytes} bytes: {e}"),
                )
            })?;
        Ok((
            geometry,
            Ring {
                seg: Arc::new(seg),
                share,
            },
        ))
    }
}

/// A stream's ring: the mover's handle on its segment (for reuse once the
/// stream is done with it) and its share of `ring_memory`.
struct Ring {
    seg: Arc<ShmSegment>,
    share: RingShare,
}

/// Removes a stream from the registry and the write set when dropped.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
    write_key: Option<NameHold>,
}

impl Registration {
    /// Records `key` as the data of the backup being written until this
    /// registration drops, which is after its manifest is published.
    fn uploading(&self, key: String) {
        if let Some(k) = &self.write_key {
            self.shared
                .writing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(k.key.clone(), Some(key));
        }
    }
}

/// A name held in `writing` by a writer or a delete, until dropped.
struct NameHold {
    shared: Arc<Shared>,
    key: (i32, String),
}

impl NameHold {
    /// None if a writer or another delete holds the name.
    fn take(shared: &Arc<Shared>, kind: i32, name: &str) -> Option<Self> {
        let key = (kind, name.to_string());
        let mut writing = shared.writing.lock().unwrap_or_else(|p| p.into_inner());
        if writing.contains_key(&key) {
            return None;
        }
        writing.insert(key.clone(), None);
        Some(Self {
            shared: Arc::clone(shared),
            key,
        })
    }
}

impl Drop for NameHold {
    fn drop(&mut self) {
        self.shared
            .writing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The name first: whoever sees the stream gone from `streams` (a
        // status request) can open the name again at once.
        drop(self.write_key.take());
        self.shared
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        self.shared.metrics.streams_open.fetch_sub(1, Relaxed);
    }
}

/// How old a staging file must be before start-up removes it.
const STAGING_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// A stream's share of `ring_memory`, given back when dropped.
struct RingShare {
    shared: Arc<Shared>,
    bytes: u64,
}

impl Drop for RingShare {
    fn drop(&mut self) {
        self.shared.ring_bytes.fetch_sub(self.bytes, Relaxed);
    }
}

/// Binds the control socket: a 0750 directory (created if missing), the
/// socket itself 0660. A stale socket file is replaced; a live one (another
/// mover) is an error.
pub fn bind(path: &std::path::Path) -> anyhow::Result<UnixListener> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if !dir.exists() {
        create_private_dir(dir)
            .with_context(|| format!("creating socket directory {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
    } else if let Ok(meta) = std::fs::metadata(dir) {
        if meta.permissions().mode() & 0o007 != 0 {
            warn!(dir = %dir.display(), "the socket directory is accessible to all users; the socket itself is 0660");
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!("{} exists and is not a socket", path.display());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another mover is already listening on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Serves until SIGINT or SIGTERM.
pub async fn serve(cfg: Config, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let store = crate::catalog::open_store(&cfg, &metrics).await?;
    // Parts grow (and stay above 5 MiB) for S3, and when forwarding: each
    // forwarded part becomes one part of the peer's store, S3 perhaps.
    let grow_parts =
        cfg.store.starts_with("s3://") || cfg.store.starts_with(crate::config::FORWARD_SCHEME);
    // The peer port first: once the control socket accepts, both serve.
    // The memory budget: the streams' parts, and the parts peers send.
    let memory = Arc::new(Semaphore::new((cfg.memory_limit / 1024) as usize));
    let memory_kib = (cfg.memory_limit / 1024).min(u64::from(u32::MAX)) as u32;
    if let Some(addr) = cfg.peer.listen {
        let (_, serving) = crate::peer::bind(
            &cfg.peer,
            addr,
            Arc::clone(&store),
            Arc::clone(&metrics),
            Arc::clone(&memory),
            memory_kib,
        )
        .await?;
        tokio::spawn(async move {
            if let Err(e) = serving.await {
                warn!(error = %e, "the peer service stopped");
            }
        });
    }
    let listener = bind(&cfg.socket)?;
    if let Some(root) = cfg.store.strip_prefix("file://") {
        // Uploads a killed mover left half written: never visible (no
        // manifest), removed once they have not moved for an hour.
        let r = crate::catalog::gc_staging(std::path::Path::new(root), STAGING_GRACE, &[]);
        if r.staging > 0 {
            info!(
                files = r.staging,
                bytes = r.bytes,
                "removed staging files of uploads that never completed"
            );
        }
    }
    if let Some(addr) = cfg.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics address {addr}"))?;
        info!(addr = %l.local_addr()?, "serving metrics");
        tokio::spawn(crate::metrics::serve(l, Arc::clone(&metrics)));
    }
    let shared = Arc::new(Shared {
        limits: StreamLimits {
            part_size: cfg.part_size,
            grow_parts,
            store_keeps_payloads: cfg.store.starts_with("memory:"),
            max_inflight_parts: cfg.max_inflight_parts,
            memory,
            memory_kib,
            direct_io: cfg.direct_io,
        },
        catalog: Catalog::new(store, cfg.catalog_cache, Arc::clone(&metrics))
            .with_late_writes(crate::catalog::store_writes_can_land_late(&cfg.store)),
        metrics,
        streams: Mutex::new(BTreeMap::new()),
        writing: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        ring_bytes: AtomicU64::new(0),
        idle_rings: Mutex::new(Vec::new()),
        cfg,
    });
    {
        // Idle rings give their memory back after RING_IDLE.
        let shared = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RING_IDLE / 4);
            loop {
                tick.tick().await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.evict_rings(|_| false);
            }
        });
    }
    if !shmover_ring::eventfd_nowait_works() {
        warn!(
            "this kernel cannot read an eventfd without waiting (RWF_NOWAIT, Linux 5.12 and later): \
             a client that races the doorbells' shared O_NONBLOCK flag can hold a mover thread \
             in a doorbell read, and each trapped doorbell write costs a rescue thread"
        );
    }
    info!(
        data_dir = %shared.cfg.data_dir.display(),
        socket = %shared.cfg.socket.display(),
        store = %shared.cfg.store,
        allow_uids = ?shared.cfg.allow_uids,
        allow_gids = ?shared.cfg.allow_gids,
        pid = std::process::id(),
        "mover ready"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let slot = ConnSlot::take(&shared);
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        match slot {
                            Ok(slot) => connection(shared, stream, slot).await,
                            Err(open) => refuse_busy(&shared, &stream, open).await,
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors, most likely: back off instead of
                    // spinning on the error.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = term.recv() => break Ok(()),
        }
    };
    info!("shutting down");
    let _ = std::fs::remove_file(&shared.cfg.socket);
    result
}

fn error_body(code: ErrorCode, message: impl Into<String>) -> response::Body {
    response::Body::Error(v1::Error {
        code: code as i32,
        message: message.into(),
    })
}

/// `e` with the stream's name in front of its message.
fn name_error(e: response::Body, name: &str) -> response::Body {
    match e {
        response::Body::Error(mut v) => {
            v.message = format!("{name}: {}", v.message);
            response::Body::Error(v)
        }
        other => other,
    }
}

fn store_error(e: &StoreError) -> response::Body {
    error_body(e.code(), e.to_string())
}

fn stream_error(e: &StreamError, name: &str) -> response::Body {
    let code = match e {
        StreamError::Ring(_) | StreamError::Cancelled => ErrorCode::Ring,
        StreamError::Store(_) | StreamError::Read(_) => ErrorCode::Store,
        StreamError::Checksum(_) => ErrorCode::Checksum,
    };
    error_body(code, format!("{name}: {e}"))
}

/// Writes all of `buf`, with `fds` attached to its first byte.
async fn send(stream: &UnixStream, buf: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let mut sent = 0;
    while sent < buf.len() {
        stream.writable().await?;
        let cmsg_fds = if sent == 0 { fds } else { &[] };
        let res = stream.try_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(&buf[sent..])];
            let cmsg = [ControlMessage::ScmRights(cmsg_fds)];
            let cmsgs: &[ControlMessage<'_>] = if cmsg_fds.is_empty() { &[] } else { &cmsg };
            sendmsg::<UnixAddr>(
                stream.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)
        });
        match res {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

enum Read {
    Frame(request::Body),
    Eof,
    Bad(String),
}

/// Reads the next request frame.
///
/// # Cancel safety
///
/// Cancel safe: bytes read are kept in `buf` and the only await is for
/// readability.
async fn read_request(stream: &UnixStream, buf: &mut Vec<u8>) -> Read {
    loop {
        match shmover_proto::decode_request(buf) {
            Ok(Some((body, used))) => {
                buf.drain(..used);
                return Read::Frame(body);
            }
            Ok(None) => {}
            Err(e) => return Read::Bad(e.to_string()),
        }
        if stream.readable().await.is_err() {
            return Read::Eof;
        }
        let mut tmp = [0u8; 8192];
        match stream.try_read(&mut tmp) {
            Ok(0) => return Read::Eof,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Read::Eof,
        }
    }
}

enum Active {
    Idle,
    Writing(Writing),
    Reading(Reading),
    /// The stream failed and its error was sent; the client's next
    /// Commit/Abort/CloseRead is already answered.
    Failed,
}

struct Writing {
    name: String,
    block_size: u32,
    metadata: BTreeMap<String, String>,
    data_key: String,
    cancel: Arc<AtomicBool>,
    task: Option<JoinHandle<Result<Uploaded, StreamError>>>,
    done: Option<Result<Uploaded, StreamError>>,
    started: Instant,
    _reg: Registration,
    ring: Ring,
}

struct Reading {
    name: String,
    cancel: Arc<AtomicBool>,
    task: Option<JoinHandle<Result<(), StreamError>>>,
    done: Option<Result<(), StreamError>>,
    _reg: Registration,
    ring: Ring,
}

impl Writing {
    /// Stops the backup: its ring thread ends, its task is awaited and its
    /// upload aborted, so nothing of it becomes visible.
    async fn stop(&mut self) {
        self.cancel.store(true, Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        if let Some(Ok(mut up)) = self.done.take() {
            let _ = up.upload.abort().await;
        }
    }
}

impl Reading {
    /// Waits for the restore task (cancel first to end it early); true if
    /// it fed the whole object into the ring.
    async fn finish(&mut self) -> bool {
        let done = match (self.done.take(), self.task.take()) {
            (Some(d), _) => d,
            (None, Some(t)) => t.await.unwrap_or(Err(StreamError::Cancelled)),
            (None, None) => Err(StreamError::Cancelled),
        };
        done.is_ok()
    }
}

struct Conn {
    /// Before `stream`, so dropped first: the place is free again by the
    /// time the client sees the connection closed.
    _slot: ConnSlot,
    shared: Arc<Shared>,
    stream: UnixStream,
    buf: Vec<u8>,
    kind: ClientKind,
    pid: u32,
    uid: u32,
    label: String,
    active: Active,
    /// The protocol version agreed in the handshake.
    version: u32,
}

/// Answers a connection over `max_connections` with an error and closes
/// it: descriptors are a shared budget, and one client opening connections
/// without end must not keep the others out.
async fn refuse_busy(shared: &Shared, stream: &UnixStream, open: usize) {
    shared.metrics.refused_connections.fetch_add(1, Relaxed);
    let limit = shared.cfg.max_connections;
    let pid = stream.peer_cred().ok().and_then(|c| c.pid()).unwrap_or(0);
    warn!(
        pid,
        open, limit, "refused a connection: max_connections are open"
    );
    let frame = shmover_proto::error_frame(
        ErrorCode::Resource,
        format!(
            "the mover serves {open} connections, its limit (max_connections {limit}); try again later"
        ),
    );
    let _ = send(stream, &frame, &[]).await;
}

async fn connection(shared: Arc<Shared>, stream: UnixStream, slot: ConnSlot) {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot read peer credentials; closing");
            return;
        }
    };
    let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid().unwrap_or(0) as u32);
    let cfg = &shared.cfg;
    // A supplementary group counts as the primary one does: the kernel
    // recorded them at connect time, so no /proc lookup (and no pid race).
    let mut groups = Vec::new();
    let allowed = cfg.allow_uids.contains(&uid)
        || cfg.allow_gids.contains(&gid)
        || (!cfg.allow_gids.is_empty()
            && match shmover_ring::peer_groups(stream.as_fd()) {
                Ok(g) => {
                    groups = g;
                    groups.iter().any(|g| cfg.allow_gids.contains(g))
                }
                Err(e) => {
                    warn!(uid, pid, error = %e, "cannot read the peer's supplementary groups; checking its primary group only");
                    false
                }
            });
    if !allowed {
        shared.metrics.refused_peers.fetch_add(1, Relaxed);
        warn!(
            uid,
            gid,
            ?groups,
            pid,
            "refused a peer whose uid and groups are not allowed"
        );
        let frame = shmover_proto::error_frame(
            ErrorCode::NotAllowed,
            if groups.is_empty() {
                format!("uid {uid} (gid {gid}) is not allowed to use this mover")
            } else {
                format!("uid {uid} (gid {gid}, groups {groups:?}) is not allowed to use this mover")
            },
        );
        let _ = send(&stream, &frame, &[]).await;
        return;
    }
    let mut conn = Conn {
        _slot: slot,
        shared,
        stream,
        buf: Vec::new(),
        kind: ClientKind::Generic,
        pid,
        uid,
        label: String::new(),
        active: Active::Idle,
        version: 1,
    };
    if conn.handshake().await {
        conn.run().await;
    }
    conn.cancel_active().await;
}

impl Conn {
    async fn reply(&mut self, body: response::Body) -> bool {
        if matches!(body, response::Body::Error(_)) {
            self.shared.metrics.errors.fetch_add(1, Relaxed);
        }
        send(&self.stream, &shmover_proto::response_frame(body), &[])
            .await
            .is_ok()
    }

    async fn handshake(&mut self) -> bool {
        // A connection holds one of `max_connections` slots: one that never
        // speaks must not keep it. A client sends Hello as it connects.
        let wait = self.shared.cfg.hello_timeout;
        let Ok(first) = tokio::time::timeout(wait, read_request(&self.stream, &mut self.buf)).await
        else {
            self.shared.metrics.silent_connections.fetch_add(1, Relaxed);
            warn!(
                pid = self.pid,
                uid = self.uid,
                "closed a connection that sent no Hello within {} s",
                wait.as_secs()
            );
            self.reply(error_body(
                ErrorCode::WrongState,
                format!("no Hello within {} s", wait.as_secs()),
            ))
            .await;
            return false;
        };
        let hello = match first {
            Read::Frame(request::Body::Hello(h)) => h,
            Read::Frame(_) => {
                self.reply(error_body(
                    ErrorCode::WrongState,
                    "the first message must be Hello",
                ))
                .await;
                return false;
            }
            Read::Bad(e) => {
                self.reply(error_body(ErrorCode::BadFrame, e)).await;
                return false;
            }
            Read::Eof => return false,
        };
        let Some(version) = shmover_proto::negotiate(hello.min_version, hello.max_version) else {
            let msg = format!(
                "client speaks protocol {}..={}, this mover {}..={}",
                hello.min_version,
                hello.max_version,
                shmover_proto::MIN_VERSION,
                shmover_proto::MAX_VERSION
            );
            self.reply(error_body(ErrorCode::UnsupportedVersion, msg))
                .await;
            return false;
        };
        self.version = version;
        self.kind = match ClientKind::try_from(hello.kind) {
            Ok(ClientKind::Unspecified) => ClientKind::Generic,
            Ok(k) => k,
            Err(_) => {
                self.reply(error_body(
                    ErrorCode::InvalidArgument,
                    format!("unknown client kind {}", hello.kind),
                ))
                .await;
                return false;
            }
        };
        self.label = hello.label.chars().take(128).collect();
        debug!(pid = self.pid, uid = self.uid, kind = ?self.kind, label = %self.label, version, "client connected");
        self.reply(response::Body::Hello(v1::HelloOk {
            version,
            server: format!("shmover-mover {}", env!("CARGO_PKG_VERSION")),
            mover_pid: std::process::id(),
        }))
        .await
    }

    async fn run(&mut self) {
        loop {
            let task_done = match &mut self.active {
                Active::Writing(w) if w.task.is_some() => {
                    let task = w.task.as_mut().expect("checked");
                    tokio::select! {
                        r = read_request(&self.stream, &mut self.buf) => Err(r),
                        done = task => Ok(TaskDone::Write(done)),
                    }
                }
                Active::Reading(r) if r.task.is_some() => {
                    let task = r.task.as_mut().expect("checked");
                    tokio::select! {
                        r = read_request(&self.stream, &mut self.buf) => Err(r),
                        done = task => Ok(TaskDone::Read(done)),
                    }
                }
                _ => Err(read_request(&self.stream, &mut self.buf).await),
            };
            match task_done {
                Ok(done) => {
                    if !self.task_finished(done).await {
                        return;
                    }
                }
                Err(Read::Frame(body)) => {
                    if !self.handle(body).await {
                        return;
                    }
                }
                Err(Read::Bad(e)) => {
                    warn!(pid = self.pid, error = %e, "bad frame; closing the connection");
                    self.reply(error_body(ErrorCode::BadFrame, e)).await;
                    return;
                }
                Err(Read::Eof) => return,
            }
        }
    }

    /// A stream task ended before its closing request arrived.
    async fn task_finished(&mut self, done: TaskDone) -> bool {
        let pid = self.pid;
        let failed = match (&mut self.active, done) {
            (Active::Writing(w), TaskDone::Write(r)) => {
                w.task = None;
                settle(&mut w.done, r, &w.name, pid, "backup")
            }
            (Active::Reading(rd), TaskDone::Read(r)) => {
                rd.task = None;
                settle(&mut rd.done, r, &rd.name, pid, "restore")
            }
            _ => None,
        };
        match failed {
            Some(body) => {
                self.active = Active::Failed;
                self.reply(body).await
            }
            None => true,
        }
    }

    async fn handle(&mut self, body: request::Body) -> bool {
        use request::Body as B;
        if let Active::Failed = self.active {
            if matches!(body, B::Commit(_) | B::Abort(_) | B::CloseRead(_)) {
                self.active = Active::Idle;
                return true;
            }
        }
        let reply = match body {
            B::Hello(_) => error_body(ErrorCode::WrongState, "Hello was already received"),
            B::Ping(_) => response::Body::Ok(v1::Ok {}),
            B::Status(_) => self.status(),
            B::Gc(g) => gc(Arc::clone(&self.shared), g.older_than_secs, self.pid).await,
            B::OpenWrite(o) => match self.active {
                Active::Idle => match self.open_write(o).await {
                    Ok(()) => return true, // RingOpened went with the descriptors
                    Err(b) => b,
                },
                _ => error_body(
                    ErrorCode::WrongState,
                    "a stream is already open on this connection",
                ),
            },
            B::OpenRead(o) => match self.active {
                Active::Idle => match self.open_read(o).await {
                    Ok(()) => return true,
                    Err(b) => b,
                },
                _ => error_body(
                    ErrorCode::WrongState,
                    "a stream is already open on this connection",
                ),
            },
            B::Commit(c) => self.commit(c.bytes).await,
            B::Abort(a) => self.abort(&a.reason).await,
            B::CloseRead(_) => self.close_read().await,
            B::Stat(s) => match self.idle("stat") {
                Some(e) => e,
                None => match self.shared.catalog.require(self.kind, &s.name).await {
                    Ok(m) => response::Body::Info(m.info()),
                    Err(e) => store_error(&e),
                },
            },
            B::List(l) => match self.idle("list") {
                Some(e) => e,
                None => {
                    let paged = self.version >= 2;
                    let after = (paged && !l.after_name.is_empty())
                        .then_some((l.after_created_unix_ms, l.after_name.as_str()));
                    // With a cursor the limit applies after it.
                    let limit = if after.is_some() { 0 } else { l.limit as usize };
                    match self.shared.catalog.list(self.kind, &l.prefix, limit).await {
                        Ok(mut ms) => {
                            if let Some((created, name)) = after {
                                // Newest first, then by name: what follows
                                // the cursor is older, or as old and later
                                // by name.
                                ms.retain(|m| {
                                    m.created_unix_ms < created
                                        || (m.created_unix_ms == created && m.name.as_str() > name)
                                });
                                if l.limit > 0 {
                                    ms.truncate(l.limit as usize);
                                }
                            }
                            list_reply(&ms, paged)
                        }
                        Err(e) => store_error(&e),
                    }
                }
            },
            B::Delete(d) => match self.idle("delete") {
                Some(e) => e,
                // The name is held while it is deleted, as while it is
                // written: a delete reads the manifest, then removes its
                // key, and a backup of the same name published between the
                // two (or a second delete's removal and such a backup)
                // would lose its manifest to this delete.
                None => match NameHold::take(&self.shared, self.kind as i32, &d.name) {
                    None => error_body(
                        ErrorCode::NotFound,
                        format!(
                            "{}: a backup of that name is being written or deleted; none is saved now",
                            d.name
                        ),
                    ),
                    Some(_hold) => match self.shared.catalog.delete(self.kind, &d.name).await {
                        Ok(()) => {
                            info!(name = %d.name, kind = ?self.kind, pid = self.pid, "deleted");
                            response::Body::Ok(v1::Ok {})
                        }
                        Err(e) => store_error(&e),
                    },
                },
            },
        };
        self.reply(reply).await
    }

    fn idle(&self, what: &str) -> Option<response::Body> {
        match self.active {
            Active::Idle | Active::Failed => None,
            _ => Some(error_body(
                ErrorCode::WrongState,
                format!("{what}: a stream is open on this connection"),
            )),
        }
    }

    fn status(&self) -> response::Body {
        let streams = self
            .shared
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        response::Body::Status(v1::StatusReply {
            streams: streams
                .values()
                .map(|s| v1::StreamStatus {
                    pid: s.pid,
                    kind: s.kind as i32,
                    label: s.label.clone(),
                    name: s.name.clone(),
                    writing: s.writing,
                    bytes: s.bytes.load(Relaxed),
                    seconds: s.started.elapsed().as_secs_f64(),
                })
                .collect(),
            bytes_in: self.shared.metrics.bytes_in.load(Relaxed),
            bytes_out: self.shared.metrics.bytes_out.load(Relaxed),
        })
    }

    fn register(
        &self,
        name: &str,
        writing: bool,
        write_key: Option<NameHold>,
    ) -> Result<(Registration, Arc<AtomicU64>), response::Body> {
        let id = self.shared.next_id.fetch_add(1, Relaxed);
        let bytes = Arc::new(AtomicU64::new(0));
        // Counted and entered under one lock, so that streams opening at
        // once cannot all pass the limit.
        let mut streams = self
            .shared
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let open = streams.len();
        if open >= self.shared.cfg.max_streams {
            drop(streams);
            drop(write_key);
            return Err(error_body(
                ErrorCode::Resource,
                format!(
                    "{name}: {open} streams are open; the mover's limit is {}",
                    self.shared.cfg.max_streams
                ),
            ));
        }
        streams.insert(
            id,
            Arc::new(StreamEntry {
                pid: self.pid,
                kind: self.kind,
                label: self.label.clone(),
                name: name.to_string(),
                writing,
                bytes: Arc::clone(&bytes),
                started: Instant::now(),
            }),
        );
        drop(streams);
        self.shared.metrics.streams_open.fetch_add(1, Relaxed);
        self.shared.metrics.streams_total.fetch_add(1, Relaxed);
        Ok((
            Registration {
                shared: Arc::clone(&self.shared),
                id,
                write_key,
            },
            bytes,
        ))
    }

    /// How long the client may wait on the ring while this mover lives: a
    /// store that stalls is retried for up to `retry_deadline` (a peer that
    /// leaves a part unacknowledged is waited for up to `peer_stall`), and
    /// the stream fails (closing the ring, which wakes the client) only
    /// then; a minute more covers the last attempt.
    fn stall_timeout_ms(&self) -> u32 {
        let cfg = &self.shared.cfg;
        let mut d = cfg.retry_deadline;
        if !cfg.peer.forward.is_empty() {
            d = d.max(cfg.peer.stall);
        }
        let d = d + std::time::Duration::from_secs(60);
        d.as_millis().min(u128::from(u32::MAX)) as u32
    }

    fn ctx(
        &self,
        cancel: &Arc<AtomicBool>,
        progress: Arc<AtomicU64>,
    ) -> Result<StreamCtx, response::Body> {
        let peer = self.stream.as_fd().try_clone_to_owned().map_err(|e| {
            error_body(
                ErrorCode::Resource,
                format!("cannot watch the client's socket: {e}"),
            )
        })?;
        Ok(StreamCtx {
            limits: self.shared.limits.clone(),
            cancel: Arc::clone(cancel),
            progress,
            metrics: Arc::clone(&self.shared.metrics),
            peer: Arc::new(peer),
        })
    }

    /// Keeps the ring of a stream that ended cleanly for this user's next
    /// stream; if anything still holds the segment, it is simply dropped.
    fn keep_ring(&self, ring: Ring) {
        let Ring { seg, mut share } = ring;
        let Ok(seg) = Arc::try_unwrap(seg) else {
            return;
        };
        let bytes = std::mem::take(&mut share.bytes);
        self.shared
            .idle_rings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(IdleRing {
                uid: self.uid,
                seg,
                bytes,
                since: Instant::now(),
            });
    }

    async fn open_write(&mut self, o: v1::OpenWrite) -> Result<(), response::Body> {
        let kind = self.kind;
        if let Err(e) = names::validate(&o.name) {
            return Err(error_body(
                ErrorCode::BadName,
                format!("{:?}: {e}", o.name.chars().take(80).collect::<String>()),
            ));
        }
        if o.block_size == 0 {
            return Err(error_body(
                ErrorCode::InvalidArgument,
                format!("{}: block size 0", o.name),
            ));
        }
        // The metadata goes into the manifest and into every listing entry
        // of the object: unbounded, one object could make each listing
        // page that reaches it too large to send.
        let meta_bytes: usize = o.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        if meta_bytes > MAX_METADATA {
            return Err(error_body(
                ErrorCode::InvalidArgument,
                format!(
                    "{}: {meta_bytes} bytes of metadata (keys and values); at most {MAX_METADATA}",
                    o.name
                ),
            ));
        }
        // Never overwritten: the writer holding the name keeps its data key.
        let Some(write_key) = NameHold::take(&self.shared, kind as i32, &o.name) else {
            return Err(error_body(
                ErrorCode::AlreadyExists,
                format!(
                    "{}: a backup of that name is being written or deleted",
                    o.name
                ),
            ));
        };
        // Beyond `max_streams` (each holds a thread and a ring of shared
        // memory) the open is refused.
        let (reg, progress) = self.register(&o.name, true, Some(write_key))?;
        match self.shared.catalog.manifest(kind, &o.name).await {
            Ok(None) => {}
            Ok(Some(_)) => return Err(store_error(&StoreError::AlreadyExists(o.name))),
            Err(e) => return Err(store_error(&e)),
        }
        let (geometry, ring) = self
            .shared
            .ring(self.uid, u64::from(o.block_size), Direction::ToMover)
            .await
            .map_err(|e| name_error(e, &o.name))?;
        let unique = format!("{}-{:08x}", now_ms(), rand_u32());
        let data_key = names::data_key(kind, &o.name, &unique);
        reg.uploading(data_key.to_string());
        let upload = self
            .shared
            .catalog
            .store()
            .put_multipart(&data_key)
            .await
            .map_err(|e| store_error(&StoreError::Store(e)))?;
        let cancel = Arc::new(AtomicBool::new(false));
        let ctx = self.ctx(&cancel, progress)?;
        let fds: Vec<RawFd> = ring.seg.fds().iter().map(|f| f.as_raw_fd()).collect();
        let frame = shmover_proto::response_frame(response::Body::Ring(v1::RingOpened {
            slot_count: geometry.slot_count,
            slot_size: geometry.slot_size,
            object_size: 0,
            stall_timeout_ms: self.stall_timeout_ms(),
        }));
        if send(&self.stream, &frame, &fds).await.is_err() {
            // Dropping the upload aborts it (S3: in the background).
            info!(name = %o.name, pid = self.pid, "the client left before its backup started");
            return Ok(());
        }
        let task = tokio::spawn(streams::upload(
            Consumer::new(Arc::clone(&ring.seg)),
            upload,
            ctx,
            o.name.clone(),
            geometry,
        ));
        info!(name = %o.name, kind = ?kind, pid = self.pid, label = %self.label, block_size = o.block_size, slots = geometry.slot_count, slot_size = geometry.slot_size, "backup opened");
        self.active = Active::Writing(Writing {
            name: o.name,
            block_size: o.block_size,
            metadata: o.metadata,
            data_key: data_key.to_string(),
            cancel,
            task: Some(task),
            done: None,
            started: Instant::now(),
            _reg: reg,
            ring,
        });
        Ok(())
    }

    async fn commit(&mut self, bytes: u64) -> response::Body {
        if !matches!(self.active, Active::Writing(_)) {
            return error_body(
                ErrorCode::WrongState,
                "commit: no backup is open on this connection",
            );
        }
        let Active::Writing(mut w) = std::mem::replace(&mut self.active, Active::Idle) else {
            unreachable!("checked above")
        };
        let done = match (w.done.take(), w.task.take()) {
            (Some(d), _) => d,
            (None, Some(task)) => task.await.unwrap_or(Err(StreamError::Cancelled)),
            (None, None) => Err(StreamError::Cancelled),
        };
        let mut up = match done {
            Ok(u) => u,
            Err(e) => {
                warn!(name = %w.name, error = %e, "backup failed at commit");
                return stream_error(&e, &w.name);
            }
        };
        if up.size != bytes {
            let _ = up.upload.abort().await;
            return error_body(
                ErrorCode::SizeMismatch,
                format!(
                    "{}: the client committed {bytes} bytes but the ring carried {}",
                    w.name, up.size
                ),
            );
        }
        // A client that hung up (killed, or gave up waiting) reports the
        // backup failed: finishing it would leave an object its database
        // never recorded. Checked before the completion and again before
        // the manifest, the last moment the backup can still not be.
        if fd_hung_up(self.stream.as_fd()) {
            let _ = up.upload.abort().await;
            warn!(name = %w.name, pid = self.pid, "the client left before its backup was completed; nothing kept");
            return error_body(ErrorCode::WrongState, "the client left");
        }
        if let Err(e) = up.upload.complete().await {
            warn!(name = %w.name, error = %e, "completing the upload failed");
            return store_error(&StoreError::Store(e));
        }
        if fd_hung_up(self.stream.as_fd()) {
            if let Ok(key) = crate::catalog::data_path(&w.data_key) {
                let _ = self.shared.catalog.store().delete(&key).await;
            }
            warn!(name = %w.name, pid = self.pid, "the client left before its backup was published; its data removed");
            return error_body(ErrorCode::WrongState, "the client left");
        }
        let m = Manifest {
            format: 1,
            name: w.name.clone(),
            kind: names::namespace(self.kind).to_string(),
            data_key: w.data_key.clone(),
            size: up.size,
            created_unix_ms: now_ms(),
            block_size: w.block_size,
            crc32c: up.crc32c,
            parts: up.parts,
            metadata: std::mem::take(&mut w.metadata),
            transform: "none".into(),
        };
        if let Err(e) = self.shared.catalog.publish(self.kind, &m).await {
            if matches!(e, StoreError::Uncertain(..)) {
                warn!(name = %w.name, error = %e, "publishing the manifest had an unknown outcome; data kept");
            } else {
                if let Ok(key) = crate::catalog::data_path(&w.data_key) {
                    let _ = self.shared.catalog.store().delete(&key).await;
                }
                warn!(name = %w.name, error = %e, "publishing the manifest failed; data removed");
            }
            return store_error(&e);
        }
        self.shared.metrics.objects_committed.fetch_add(1, Relaxed);
        self.keep_ring(w.ring);
        let secs = w.started.elapsed().as_secs_f64();
        info!(name = %w.name, kind = ?self.kind, pid = self.pid, bytes = up.size, parts = up.parts, seconds = secs, gbps = up.size as f64 / secs.max(1e-9) / 1e9, "backup committed");
        response::Body::Info(m.info())
    }

    async fn abort(&mut self, reason: &str) -> response::Body {
        if !matches!(self.active, Active::Writing(_)) {
            return error_body(
                ErrorCode::WrongState,
                "abort: no backup is open on this connection",
            );
        }
        let Active::Writing(mut w) = std::mem::replace(&mut self.active, Active::Idle) else {
            unreachable!("checked above")
        };
        w.stop().await;
        info!(name = %w.name, pid = self.pid, reason = %reason.chars().take(200).collect::<String>(), "backup aborted by the client");
        response::Body::Ok(v1::Ok {})
    }

    async fn open_read(&mut self, o: v1::OpenRead) -> Result<(), response::Body> {
        let (reg, progress) = self.register(&o.name, false, None)?;
        let m = self
            .shared
            .catalog
            .require(self.kind, &o.name)
            .await
            .map_err(|e| store_error(&e))?;
        let payload = if o.block_size == 0 {
            self.shared.cfg.slot_size
        } else {
            o.block_size
        };
        let (geometry, ring) = self
            .shared
            .ring(self.uid, u64::from(payload), Direction::FromMover)
            .await
            .map_err(|e| name_error(e, &o.name))?;
        let cancel = Arc::new(AtomicBool::new(false));
        let ctx = self.ctx(&cancel, progress)?;
        let fds: Vec<RawFd> = ring.seg.fds().iter().map(|f| f.as_raw_fd()).collect();
        let frame = shmover_proto::response_frame(response::Body::Ring(v1::RingOpened {
            slot_count: geometry.slot_count,
            slot_size: geometry.slot_size,
            object_size: m.size,
            stall_timeout_ms: self.stall_timeout_ms(),
        }));
        if send(&self.stream, &frame, &fds).await.is_err() {
            return Ok(());
        }
        let task = tokio::spawn(streams::download(
            Arc::clone(self.shared.catalog.store()),
            Producer::new(Arc::clone(&ring.seg)),
            m,
            payload as usize,
            ctx,
        ));
        info!(name = %o.name, kind = ?self.kind, pid = self.pid, "restore opened");
        self.active = Active::Reading(Reading {
            name: o.name,
            cancel,
            task: Some(task),
            done: None,
            _reg: reg,
            ring,
        });
        Ok(())
    }

    async fn close_read(&mut self) -> response::Body {
        if !matches!(self.active, Active::Reading(_)) {
            return error_body(
                ErrorCode::WrongState,
                "close: no restore is open on this connection",
            );
        }
        let Active::Reading(mut r) = std::mem::replace(&mut self.active, Active::Idle) else {
            unreachable!("checked above")
        };
        if r.done.is_none() {
            // Closed early: stop feeding the ring.
            r.cancel.store(true, Relaxed);
        }
        // The client library detaches from the ring before it closes, so a
        // ring the whole object went through is free for reuse.
        if r.finish().await {
            self.keep_ring(r.ring);
        }
        debug!(name = %r.name, pid = self.pid, "restore closed");
        response::Body::Ok(v1::Ok {})
    }

    /// The connection ended: whatever was open is aborted.
    async fn cancel_active(&mut self) {
        match std::mem::replace(&mut self.active, Active::Idle) {
            Active::Writing(mut w) => {
                w.stop().await;
                warn!(name = %w.name, pid = self.pid, "client went away mid-backup; upload aborted, nothing published");
            }
            Active::Reading(mut r) => {
                r.cancel.store(true, Relaxed);
                r.finish().await;
                debug!(name = %r.name, pid = self.pid, "client went away during a restore");
            }
            Active::Idle | Active::Failed => {}
        }
    }
}

/// A list reply. Paged (protocol 2): as many entries as fit in one frame,
/// with `more` set if some were left for the next request. Otherwise an
/// error when the whole answer would not fit.
fn list_reply(ms: &[Arc<Manifest>], paged: bool) -> response::Body {
    use prost::Message;
    // Room for the response envelope around the reply.
    let budget = shmover_proto::MAX_FRAME - 4096;
    if paged {
        let mut reply = v1::ListReply::default();
        let mut len = 0;
        for m in ms {
            let info = m.info();
            let entry = prost::encoding::message::encoded_len(1, &info);
            if len + entry > budget {
                reply.more = true;
                break;
            }
            len += entry;
            reply.objects.push(info);
        }
        if reply.more && reply.objects.is_empty() {
            return error_body(
                ErrorCode::Resource,
                format!("{}: one catalog entry does not fit in a frame", ms[0].name),
            );
        }
        return response::Body::List(reply);
    }
    let reply = v1::ListReply {
        objects: ms.iter().map(|m| m.info()).collect(),
        more: false,
    };
    if reply.encoded_len() > budget {
        return error_body(
            ErrorCode::Resource,
            format!(
                "{} backups match; the answer would exceed one frame: use a longer prefix or a limit",
                ms.len()
            ),
        );
    }
    response::Body::List(reply)
}

/// `mover gc`: unreferenced data objects, then the local store's staging
/// files.
async fn gc(shared: Arc<Shared>, older_than_secs: u64, pid: u32) -> response::Body {
    let grace = std::time::Duration::from_secs(older_than_secs);
    let in_flight = || {
        shared
            .writing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .cloned()
            .collect()
    };
    let mut report = match shared.catalog.gc_orphans(grace, in_flight).await {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    if let Some(root) = shared.cfg.store.strip_prefix("file://") {
        // A walk of the whole store: off the runtime's threads, which
        // serve every connection and drive every upload.
        let root = std::path::PathBuf::from(root);
        // This mover's live uploads are spared by their keys, and every
        // upload still under way (a peer's session, a manifest being
        // written, another mover's on the same directory) by the lock its
        // staging file holds, however long it has been still.
        let live: Vec<String> = in_flight().into_iter().collect();
        let staging_grace = grace.max(STAGING_GRACE);
        let staging = tokio::task::spawn_blocking(move || {
            crate::catalog::gc_staging(&root, staging_grace, &live)
        })
        .await
        .unwrap_or_default();
        report.staging += staging.staging;
        report.bytes += staging.bytes;
    }
    info!(
        pid,
        orphans = report.orphans,
        staging = report.staging,
        bytes = report.bytes,
        "gc done"
    );
    response::Body::Gc(v1::GcReply {
        orphans_removed: report.orphans,
        staging_removed: report.staging,
        bytes_removed: report.bytes,
    })
}

/// Files a stream task's result until the client's closing request, and
/// returns the error to send at once, if any. A stream the client itself
/// detached from gets no unsolicited error: its Abort (or Commit) is
/// answered instead.
fn settle<T>(
    done: &mut Option<Result<T, StreamError>>,
    r: Result<Result<T, StreamError>, tokio::task::JoinError>,
    name: &str,
    pid: u32,
    what: &str,
) -> Option<response::Body> {
    let r = r.unwrap_or_else(|_| Err(StreamError::Cancelled));
    match &r {
        Err(e) if !left_the_ring(e) => {
            warn!(name = %name, pid, error = %e, "{what} stream failed");
            Some(stream_error(e, name))
        }
        _ => {
            *done = Some(r);
            None
        }
    }
}

/// Whether a stream ended because the client detached its end of the ring
/// (the client already knows; no unsolicited error is sent for it).
fn left_the_ring(e: &StreamError) -> bool {
    matches!(e, StreamError::Ring(shmover_ring::Error::PeerGone))
}

enum TaskDone {
    Write(Result<Result<Uploaded, StreamError>, tokio::task::JoinError>),
    Read(Result<Result<(), StreamError>, tokio::task::JoinError>),
}

/// A few random bits for unique data keys (no cryptographic need): the
/// clock's nanoseconds mixed with the pid and a counter.
fn rand_u32() -> u32 {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let x = nanos ^ (u64::from(std::process::id()) << 32) ^ N.fetch_add(0x9E37_79B9, Relaxed);
    let x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    (x ^ (x >> 29)) as u32
}
