//! The peer gRPC service (`mover serve --peer-listen`): other movers keep
//! their objects in this mover's store through it (see
//! `proto/shmover/peer/v1/peer.proto`).
//!
//! Uploads are resumable. An upload session outlives its gRPC stream: the
//! sender opens it again with the same id after a broken connection, and
//! the session answers with the offset it holds durably (the end of the
//! last part its store has completed, in order). Chunks past that offset
//! that arrived before the break are dropped, so the object ends with each
//! byte exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResultPayload, MultipartUpload, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload,
};
use shmover_proto::peer::{
    self as pb,
    peer_server::{Peer, PeerServer},
    read_reply, write_request,
};
use tokio::sync::{mpsc, Mutex, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::config::PeerConfig;
use crate::metrics::Metrics;

/// Largest chunk a sender may put in one message.
pub const MAX_CHUNK: usize = 4 << 20;
/// Largest `Put` body.
pub const MAX_PUT: usize = 8 << 20;
/// Largest message either side decodes (a chunk or a put, plus framing).
pub const MAX_MESSAGE: usize = MAX_PUT + (64 << 10);
/// Largest part a sender may send before `part_end`: the receiver holds a
/// part in memory until its store has it.
pub const MAX_PART: u64 = 1 << 30;
/// Parts of one upload in the store at once. While this many are, the
/// receiver reads no more of the sender's stream, so HTTP/2 flow control
/// holds the sender back instead of the receiver's memory filling up.
const MAX_STORING: usize = 4;
/// Chunk size of reads.
const READ_CHUNK: usize = 1 << 20;
/// An upload no stream has touched for this long is aborted.
const SESSION_IDLE: Duration = Duration::from_secs(15 * 60);
/// How long a completed upload's outcome is remembered, for a sender whose
/// stream broke before it saw the reply.
const DONE_KEPT: Duration = Duration::from_secs(15 * 60);

/// HTTP/2 settings for bulk transfer, on both ends: large windows so that a
/// stream is not throttled to one window per round trip, large frames.
pub const STREAM_WINDOW: u32 = 32 << 20;
pub const CONNECTION_WINDOW: u32 = 64 << 20;
pub const FRAME_SIZE: u32 = (1 << 24) - 1;
pub const KEEPALIVE: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The part being received, and what the store is doing with earlier ones.
struct Upload {
    path: Path,
    upload: Box<dyn MultipartUpload>,
    /// Every byte below this offset is stored.
    durable: u64,
    /// The offset the next chunk must carry.
    next: u64,
    /// Chunks of the part being received.
    part: Vec<Bytes>,
    part_len: u64,
    /// The length its first chunk declared, and the memory reserved for it.
    part_size: u64,
    reserved: Option<OwnedSemaphorePermit>,
    /// Parts handed to the store, in order, with their end offsets.
    storing: FuturesOrdered<BoxFuture<'static, (u64, object_store::Result<()>)>>,
    last_used: Instant,
}

impl Upload {
    /// Waits for the parts in flight and drops a partly received part: the
    /// sender resends from `durable`.
    async fn settle(&mut self) -> object_store::Result<u64> {
        while let Some((end, r)) = self.storing.next().await {
            r?;
            self.durable = end;
        }
        self.part.clear();
        self.part_len = 0;
        self.part_size = 0;
        self.reserved = None;
        self.next = self.durable;
        Ok(self.durable)
    }
}

struct Session {
    /// Wakes the stream holding `state` when a newer stream takes over.
    takeover: Notify,
    state: Mutex<Upload>,
}

/// An upload's outcome, kept for a while after it completed.
struct Done {
    size: u64,
    e_tag: String,
    at: Instant,
}

/// The service over this mover's store.
pub struct PeerService {
    store: Arc<dyn ObjectStore>,
    metrics: Arc<Metrics>,
    /// The mover's memory budget (KiB permits), shared with its own
    /// streams: parts received are held against it until stored.
    memory: Arc<Semaphore>,
    memory_kib: u32,
    sessions: std::sync::Mutex<HashMap<String, Arc<Session>>>,
    done: std::sync::Mutex<HashMap<String, Done>>,
}

impl std::fmt::Debug for PeerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerService").finish_non_exhaustive()
    }
}

/// A path in the mover's key space (`data/...` or `catalog/...`).
fn key(path: &str) -> Result<Path, Status> {
    let p =
        Path::parse(path).map_err(|e| Status::invalid_argument(format!("path {path:?}: {e}")))?;
    // Only the canonical form: no leading or trailing '/'.
    if p.as_ref() != path {
        return Err(Status::invalid_argument(format!(
            "path {path:?} is not in canonical form"
        )));
    }
    match p.parts().next().as_ref().map(|s| s.as_ref()) {
        Some("data" | "catalog") => Ok(p),
        _ => Err(Status::invalid_argument(format!(
            "path {path:?} is outside data/ and catalog/"
        ))),
    }
}

fn upload_id(id: &str) -> Result<(), Status> {
    let ok = (16..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(
            "upload_id must be 16 to 64 letters and digits",
        ))
    }
}

/// How a store error reaches the peer.
pub fn status_of(e: object_store::Error) -> Status {
    use object_store::Error as E;
    let text = e.to_string();
    match e {
        E::NotFound { .. } => Status::not_found(text),
        E::AlreadyExists { .. } => Status::already_exists(text),
        E::Precondition { .. } | E::NotModified { .. } => Status::failed_precondition(text),
        E::InvalidPath { .. } => Status::invalid_argument(text),
        E::NotSupported { .. } | E::NotImplemented { .. } => Status::unimplemented(text),
        _ => Status::internal(format!("store: {text}")),
    }
}

fn meta_of(m: &object_store::ObjectMeta) -> pb::ObjectMeta {
    pb::ObjectMeta {
        path: m.location.to_string(),
        size: m.size,
        last_modified_unix_ms: m.last_modified.timestamp_millis(),
        e_tag: m.e_tag.clone().unwrap_or_default(),
    }
}

type Replies<T> = ReceiverStream<Result<T, Status>>;

impl PeerService {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        metrics: Arc<Metrics>,
        memory: Arc<Semaphore>,
        memory_kib: u32,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            metrics,
            memory,
            memory_kib,
            sessions: std::sync::Mutex::new(HashMap::new()),
            done: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The session of `id`, created (with its store upload) if new.
    async fn session(&self, id: &str, path: Path) -> Result<Arc<Session>, Status> {
        if let Some(s) = self.sessions.lock().expect("sessions").get(id) {
            return Ok(Arc::clone(s));
        }
        let upload = self.store.put_multipart(&path).await.map_err(status_of)?;
        let fresh = Arc::new(Session {
            takeover: Notify::new(),
            state: Mutex::new(Upload {
                path,
                upload,
                durable: 0,
                next: 0,
                part: Vec::new(),
                part_len: 0,
                part_size: 0,
                reserved: None,
                storing: FuturesOrdered::new(),
                last_used: Instant::now(),
            }),
        });
        let mut map = self.sessions.lock().expect("sessions");
        // Two streams opening the same new id at once: the first wins (the
        // loser's store upload is dropped unused).
        Ok(Arc::clone(map.entry(id.to_string()).or_insert(fresh)))
    }

    /// The reply for an upload completed in the last `DONE_KEPT`.
    fn outcome(&self, id: &str) -> Option<pb::WriteReply> {
        self.done
            .lock()
            .expect("done")
            .get(id)
            .map(|d| pb::WriteReply {
                durable: d.size,
                completed: true,
                e_tag: d.e_tag.clone(),
            })
    }

    fn forget(&self, id: &str) {
        self.sessions.lock().expect("sessions").remove(id);
    }

    /// Aborts uploads that no stream has touched for `SESSION_IDLE`, and
    /// forgets old outcomes. Runs until the process ends.
    async fn reap(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            self.done
                .lock()
                .expect("done")
                .retain(|_, d| d.at.elapsed() < DONE_KEPT);
            let sessions: Vec<(String, Arc<Session>)> = self
                .sessions
                .lock()
                .expect("sessions")
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect();
            for (id, s) in sessions {
                // A stream holds the lock while attached: skip those.
                let Ok(mut st) = s.state.try_lock() else {
                    continue;
                };
                if st.last_used.elapsed() >= SESSION_IDLE {
                    warn!(upload = %id, path = %st.path, "aborting a peer upload idle for 15 minutes");
                    let _ = st.upload.abort().await;
                    self.forget(&id);
                }
            }
        }
    }

    /// Drives one `Write` stream over its session until the object is
    /// complete, aborted, the stream breaks, or a newer stream takes over.
    async fn drive(
        self: Arc<Self>,
        id: String,
        session: Arc<Session>,
        mut inbound: Streaming<pb::WriteRequest>,
        tx: mpsc::Sender<Result<pb::WriteReply, Status>>,
    ) {
        session.takeover.notify_waiters();
        let mut st = session.state.lock().await;
        // The stream we took over may have completed the upload while we
        // waited for it (a sender that reconnected during its Finish):
        // that outcome, not a second completion, which would fail.
        if let Some(done) = self.outcome(&id) {
            let _ = tx.send(Ok(done)).await;
            return;
        }
        let takeover = session.takeover.notified();
        tokio::pin!(takeover);
        let reply = |durable: u64| pb::WriteReply {
            durable,
            ..Default::default()
        };
        let durable = match st.settle().await {
            Ok(d) => d,
            Err(e) => return self.fail(&id, &mut st, &tx, status_of(e)).await,
        };
        if durable > 0 {
            info!(upload = %id, path = %st.path, offset = durable, "resuming a peer upload");
        }
        if tx.send(Ok(reply(durable))).await.is_err() {
            return self.park(&id, &mut st).await;
        }
        // A part's first chunk, waiting for the memory its part needs.
        let mut waiting: Option<(pb::Chunk, BoxFuture<'static, OwnedSemaphorePermit>)> = None;
        loop {
            st.last_used = Instant::now();
            let msg = tokio::select! {
                biased;
                _ = &mut takeover => return,
                Some((end, r)) = st.storing.next(), if !st.storing.is_empty() => {
                    if let Err(e) = r {
                        return self.fail(&id, &mut st, &tx, status_of(e)).await;
                    }
                    st.durable = end;
                    if tx.send(Ok(reply(end))).await.is_err() {
                        return self.park(&id, &mut st).await;
                    }
                    continue;
                }
                permit = async { waiting.as_mut().expect("waiting").1.as_mut().await }, if waiting.is_some() => {
                    let (c, _) = waiting.take().expect("waiting");
                    st.reserved = Some(permit);
                    if let Err(s) = self.take(&mut st, c) {
                        let _ = tx.send(Err(s)).await;
                        return self.park(&id, &mut st).await;
                    }
                    continue;
                }
                m = inbound.message(), if waiting.is_none() && st.storing.len() < MAX_STORING => m,
            };
            let msg = match msg {
                Ok(Some(m)) => m.msg,
                // The sender went away without finishing: keep the session
                // for its return.
                Ok(None) | Err(_) => return self.park(&id, &mut st).await,
            };
            match msg {
                Some(write_request::Msg::Chunk(c)) => {
                    let r = match st.reservation(&c, self.memory_kib) {
                        Ok(Some(kib)) => match Arc::clone(&self.memory).try_acquire_many_owned(kib)
                        {
                            Ok(permit) => {
                                st.reserved = Some(permit);
                                self.take(&mut st, c)
                            }
                            Err(_) => {
                                self.metrics
                                    .memory_waits
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let acquire = Arc::clone(&self.memory).acquire_many_owned(kib);
                                let acquire = Box::pin(async move {
                                    acquire.await.expect("the memory semaphore is never closed")
                                });
                                waiting = Some((c, acquire));
                                Ok(())
                            }
                        },
                        Ok(None) => self.take(&mut st, c),
                        Err(s) => Err(s),
                    };
                    if let Err(s) = r {
                        let _ = tx.send(Err(s)).await;
                        return self.park(&id, &mut st).await;
                    }
                }
                Some(write_request::Msg::Finish(f)) => {
                    let r = self.finish(&id, &mut st, f.size).await;
                    let _ = tx.send(r).await;
                    return;
                }
                Some(write_request::Msg::Abort(_)) => {
                    let _ = st.upload.abort().await;
                    self.forget(&id);
                    return;
                }
                Some(write_request::Msg::Open(_)) | None => {
                    let _ = tx
                        .send(Err(Status::invalid_argument(
                            "expected a chunk, finish or abort",
                        )))
                        .await;
                    return self.park(&id, &mut st).await;
                }
            }
        }
    }

    /// The stream ended without Finish or Abort (the sender left, gave up,
    /// or broke the protocol): the session stays for a sender that
    /// resumes, but holds no memory meanwhile. The parts already taken are
    /// stored, giving their memory back as they land, and a partly received
    /// part is dropped with its reservation, as a resuming stream would
    /// drop it. Without this, the memory stayed taken until the reaper
    /// aborted the session, 15 minutes later.
    async fn park(&self, id: &str, st: &mut Upload) {
        if let Err(e) = st.settle().await {
            warn!(upload = %id, path = %st.path, error = %e, "peer upload failed");
            let _ = st.upload.abort().await;
            self.forget(id);
        }
    }

    /// Takes a chunk whose part has its memory reserved.
    fn take(&self, st: &mut Upload, c: pb::Chunk) -> Result<(), Status> {
        let len = c.data.len() as u64;
        st.take_chunk(c)?;
        self.metrics
            .peer_bytes_in
            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Completes the object once every part is stored.
    async fn finish(&self, id: &str, st: &mut Upload, size: u64) -> Result<pb::WriteReply, Status> {
        if !st.part.is_empty() {
            return Err(Status::invalid_argument(
                "finish after a chunk that did not end its part",
            ));
        }
        let durable = st.settle().await.map_err(status_of)?;
        if durable != size {
            return Err(Status::invalid_argument(format!(
                "finish says {size} bytes, the peer holds {durable}"
            )));
        }
        let done = st.upload.complete().await.map_err(status_of)?;
        let e_tag = done.e_tag.unwrap_or_default();
        self.done.lock().expect("done").insert(
            id.to_string(),
            Done {
                size,
                e_tag: e_tag.clone(),
                at: Instant::now(),
            },
        );
        self.forget(id);
        Ok(pb::WriteReply {
            durable: size,
            completed: true,
            e_tag,
        })
    }

    /// The store failed the upload: abort it and tell the sender.
    async fn fail(
        &self,
        id: &str,
        st: &mut Upload,
        tx: &mpsc::Sender<Result<pb::WriteReply, Status>>,
        status: Status,
    ) {
        warn!(upload = %id, path = %st.path, error = %status.message(), "peer upload failed");
        let _ = st.upload.abort().await;
        self.forget(id);
        let _ = tx.send(Err(status)).await;
    }
}

impl Upload {
    /// Checks a chunk before any memory is spent on its part: for a part's
    /// first chunk, the KiB of the memory budget to reserve for the part
    /// it declares (None for later chunks and empty parts).
    fn reservation(&self, c: &pb::Chunk, memory_kib: u32) -> Result<Option<u32>, Status> {
        if c.offset != self.next {
            return Err(Status::invalid_argument(format!(
                "chunk at offset {}, expected {}",
                c.offset, self.next
            )));
        }
        if c.data.len() > MAX_CHUNK {
            return Err(Status::invalid_argument("chunk larger than 4 MiB"));
        }
        if self.part_size > 0 {
            // A later chunk of a part already reserved.
            return Ok(None);
        }
        let size = c.part_size;
        if size > MAX_PART {
            return Err(Status::invalid_argument("part larger than 1 GiB"));
        }
        if size == 0 && !(c.data.is_empty() && c.part_end) {
            return Err(Status::invalid_argument(
                "a part's first chunk must give the part's size",
            ));
        }
        let kib = size.div_ceil(1024);
        if kib > u64::from(memory_kib) {
            return Err(Status::resource_exhausted(format!(
                "a part of {size} bytes is larger than the peer's memory limit of {} KiB",
                memory_kib
            )));
        }
        Ok((kib > 0).then_some(kib as u32))
    }

    fn take_chunk(&mut self, c: pb::Chunk) -> Result<(), Status> {
        if self.part_size == 0 {
            self.part_size = c.part_size;
        }
        let len = c.data.len() as u64;
        if self.part_len + len > self.part_size {
            return Err(Status::invalid_argument(format!(
                "the part's chunks pass its declared size of {} bytes",
                self.part_size
            )));
        }
        self.next += len;
        self.part_len += len;
        if !c.data.is_empty() {
            self.part.push(c.data);
        }
        if c.part_end {
            if self.part_len != self.part_size {
                return Err(Status::invalid_argument(format!(
                    "the part ended after {} bytes; it declared {}",
                    self.part_len, self.part_size
                )));
            }
            let end = self.next;
            let payload = PutPayload::from_iter(std::mem::take(&mut self.part));
            self.part_len = 0;
            self.part_size = 0;
            // The part's memory goes back once the store has it.
            let reserved = self.reserved.take();
            let put = self.upload.put_part(payload);
            self.storing.push_back(Box::pin(async move {
                let r = put.await;
                drop(reserved);
                (end, r)
            }));
        }
        Ok(())
    }
}

/// The tonic handler: the service behind an `Arc`, so that upload streams
/// can run as tasks of their own.
#[derive(Debug, Clone)]
pub struct Handler(Arc<PeerService>);

#[tonic::async_trait]
impl Peer for Handler {
    type WriteStream = Replies<pb::WriteReply>;
    type ReadStream = Replies<pb::ReadReply>;
    type ListStream = Replies<pb::ListReply>;

    async fn write(
        &self,
        req: Request<Streaming<pb::WriteRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let mut inbound = req.into_inner();
        let open = match inbound.message().await? {
            Some(pb::WriteRequest {
                msg: Some(write_request::Msg::Open(o)),
            }) => o,
            _ => return Err(Status::invalid_argument("the first message must be open")),
        };
        upload_id(&open.upload_id)?;
        let path = key(&open.path)?;
        let (tx, rx) = mpsc::channel(64);
        if let Some(reply) = self.0.outcome(&open.upload_id) {
            let _ = tx.send(Ok(reply)).await;
            return Ok(Response::new(ReceiverStream::new(rx)));
        }
        let session = self.0.session(&open.upload_id, path).await?;
        tokio::spawn(Arc::clone(&self.0).drive(open.upload_id, session, inbound, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn read(
        &self,
        req: Request<pb::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let r = req.into_inner();
        let path = key(&r.path)?;
        let range = match (r.suffix, r.end) {
            (Some(n), _) => Some(GetRange::Suffix(n)),
            (None, Some(end)) => Some(GetRange::Bounded(r.offset..end)),
            (None, None) if r.offset > 0 => Some(GetRange::Offset(r.offset)),
            (None, None) => None,
        };
        let got = self
            .0
            .store
            .get_opts(
                &path,
                GetOptions {
                    range,
                    ..Default::default()
                },
            )
            .await
            .map_err(status_of)?;
        let (tx, rx) = mpsc::channel(8);
        let meta = pb::ReadReply {
            msg: Some(read_reply::Msg::Meta(meta_of(&got.meta))),
        };
        let _ = tx.send(Ok(meta)).await;
        let range = got.range.clone();
        let metrics = Arc::clone(&self.0.metrics);
        match got.payload {
            GetResultPayload::File(file, _) => {
                // The local store: read the file in large chunks (its
                // stream yields 8 KiB ones).
                tokio::task::spawn_blocking(move || read_file(file, range, tx, &metrics));
            }
            GetResultPayload::Stream(s) => {
                tokio::spawn(send_stream(s, range.start, tx, metrics));
            }
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutReply>, Status> {
        let r = req.into_inner();
        let path = key(&r.path)?;
        if r.data.len() > MAX_PUT {
            return Err(Status::invalid_argument("put larger than 8 MiB"));
        }
        let mode = if r.create_only {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let done = self
            .0
            .store
            .put_opts(&path, PutPayload::from(r.data), PutOptions::from(mode))
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::PutReply {
            e_tag: done.e_tag.unwrap_or_default(),
        }))
    }

    async fn stat(
        &self,
        req: Request<pb::StatRequest>,
    ) -> Result<Response<pb::ObjectMeta>, Status> {
        let path = key(&req.into_inner().path)?;
        let meta = self.0.store.head(&path).await.map_err(status_of)?;
        Ok(Response::new(meta_of(&meta)))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let prefix = key(&req.into_inner().prefix)?;
        let mut listing = self.0.store.list(Some(&prefix));
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut batch = Vec::new();
            loop {
                let next = listing.next().await;
                let end = !matches!(next, Some(Ok(_)));
                if let Some(Ok(m)) = &next {
                    batch.push(meta_of(m));
                }
                if !batch.is_empty() && (end || batch.len() >= 1000) {
                    let reply = pb::ListReply {
                        objects: std::mem::take(&mut batch),
                    };
                    if tx.send(Ok(reply)).await.is_err() {
                        return;
                    }
                }
                match next {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        let _ = tx.send(Err(status_of(e))).await;
                        return;
                    }
                    None => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_delimited(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListDelimitedReply>, Status> {
        let prefix = key(&req.into_inner().prefix)?;
        let l = self
            .0
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ListDelimitedReply {
            objects: l.objects.iter().map(meta_of).collect(),
            common_prefixes: l.common_prefixes.iter().map(|p| p.to_string()).collect(),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteReply>, Status> {
        let path = key(&req.into_inner().path)?;
        self.0.store.delete(&path).await.map_err(status_of)?;
        Ok(Response::new(pb::DeleteReply {}))
    }
}

fn chunk_reply(offset: u64, data: Bytes) -> pb::ReadReply {
    pb::ReadReply {
        msg: Some(read_reply::Msg::Chunk(pb::Chunk {
            offset,
            data,
            part_end: false,
            part_size: 0,
        })),
    }
}

/// Sends a store's byte stream in chunks of `READ_CHUNK` (stores yield
/// anything from 8 KiB pieces to the whole object at once).
async fn send_stream(
    mut s: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    mut offset: u64,
    tx: mpsc::Sender<Result<pb::ReadReply, Status>>,
    metrics: Arc<Metrics>,
) {
    let mut batch = bytes::BytesMut::new();
    loop {
        let next = s.next().await;
        let end = next.is_none();
        let mut ready = Vec::new();
        match next {
            Some(Ok(mut b)) => {
                if batch.is_empty() {
                    // Large pieces go out as slices, uncopied.
                    while b.len() >= READ_CHUNK {
                        ready.push(b.split_to(READ_CHUNK));
                    }
                }
                batch.extend_from_slice(&b);
                while batch.len() >= READ_CHUNK {
                    ready.push(batch.split_to(READ_CHUNK).freeze());
                }
            }
            Some(Err(e)) => {
                let _ = tx.send(Err(status_of(e))).await;
                return;
            }
            None if batch.is_empty() => return,
            None => ready.push(batch.split().freeze()),
        }
        for data in ready {
            let len = data.len() as u64;
            if tx.send(Ok(chunk_reply(offset, data))).await.is_err() {
                return;
            }
            metrics
                .peer_bytes_out
                .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
            offset += len;
        }
        if end {
            return;
        }
    }
}

/// Sends `range` of a local file in `READ_CHUNK` pieces (blocking thread).
fn read_file(
    file: std::fs::File,
    range: std::ops::Range<u64>,
    tx: mpsc::Sender<Result<pb::ReadReply, Status>>,
    metrics: &Metrics,
) {
    use std::os::unix::fs::FileExt;
    let mut offset = range.start;
    while offset < range.end {
        let want = (range.end - offset).min(READ_CHUNK as u64) as usize;
        let mut buf = bytes::BytesMut::zeroed(want);
        match file.read_at(&mut buf, offset) {
            Ok(0) => {
                let _ = tx.blocking_send(Err(Status::data_loss(
                    "the stored object is shorter than its metadata",
                )));
                return;
            }
            Ok(n) => {
                buf.truncate(n);
                if tx
                    .blocking_send(Ok(chunk_reply(offset, buf.freeze())))
                    .is_err()
                {
                    return;
                }
                metrics
                    .peer_bytes_out
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(Status::internal(format!(
                    "reading the stored object: {e}"
                ))));
                return;
            }
        }
    }
}

/// Compares in time independent of where the strings differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// A PEM file's bytes, with the file named in the error.
pub fn read_pem(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// Binds the peer port; returns the bound address and the serving future.
pub async fn bind(
    cfg: &PeerConfig,
    addr: std::net::SocketAddr,
    store: Arc<dyn ObjectStore>,
    metrics: Arc<Metrics>,
    memory: Arc<Semaphore>,
    memory_kib: u32,
) -> anyhow::Result<(
    std::net::SocketAddr,
    BoxFuture<'static, Result<(), tonic::transport::Error>>,
)> {
    use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
    let mut server = Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(FRAME_SIZE)
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => {
            let identity = Identity::from_pem(
                read_pem(cert, "TLS certificate")?,
                read_pem(key, "TLS key")?,
            );
            let mut tls = ServerTlsConfig::new().identity(identity);
            if let Some(ca) = &cfg.tls_ca {
                tls = tls.client_ca_root(Certificate::from_pem(read_pem(ca, "TLS CA")?));
            }
            server = server
                .tls_config(tls)
                .context("the peer port's TLS settings")?;
            true
        }
        _ => false,
    };
    let service = PeerService::new(store, metrics, memory, memory_kib);
    tokio::spawn(Arc::clone(&service).reap());
    let token = cfg.token.as_ref().map(|t| format!("Bearer {}", t.0));
    let auth = move |req: Request<()>| -> Result<Request<()>, Status> {
        let Some(want) = &token else {
            return Ok(req);
        };
        let got = req
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if same_secret(got, want.as_bytes()) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("a valid bearer token is required"))
        }
    };
    let svc = PeerServer::new(Handler(service))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let svc = tonic::service::interceptor::InterceptedService::new(svc, auth);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding peer address {addr}"))?;
    let local = listener.local_addr()?;
    info!(
        addr = %local,
        tls,
        mtls = tls && cfg.tls_ca.is_some(),
        token = cfg.token.is_some(),
        "serving peers"
    );
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let fut = server.serve_with_incoming(svc, incoming);
    Ok((local, Box::pin(fut)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_key_space_are_refused() {
        assert!(key("data/oracle/x.data").is_ok());
        assert!(key("catalog/hana/a%2Fb.manifest").is_ok());
        for bad in [
            "",
            "etc/passwd",
            "data/../x",
            "/data/x",
            "data/x/",
            "data//x",
            "datax/y",
        ] {
            assert!(key(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn upload_ids_are_checked() {
        assert!(upload_id("0123456789abcdef0123456789abcdef").is_ok());
        assert!(upload_id("short").is_err());
        assert!(upload_id("0123456789abcdef/123456789abcdef").is_err());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"Bearer abc", b"Bearer abc"));
        assert!(!same_secret(b"Bearer abd", b"Bearer abc"));
        assert!(!same_secret(b"Bearer ab", b"Bearer abc"));
    }
}
