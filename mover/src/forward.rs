//! Forwarding (`mover serve --forward URL,...`): an [`ObjectStore`] whose
//! objects live on peer movers, reached over the peer gRPC service. The
//! rest of the mover (streams, catalog) uses it as it uses any store, so a
//! forwarding mover backs up, restores, lists and deletes exactly as a mover
//! with its own store does.
//!
//! Uploads are resumable: each part's chunks are kept (they are the ring
//! slots themselves, as `Bytes`) until the peer acknowledges the part
//! durable, which is also when the part's future completes and the slots go
//! back to the client. After a broken connection the upload reopens on the
//! same peer and resends from the acknowledged offset. A peer that stays
//! unreachable past `peer_timeout` fails the object and is marked down, so
//! new objects go to the next peer.
//!
//! A peer can also be reachable and still not answer: its store hung (a
//! dead NFS server, a black-holed S3 endpoint) while its HTTP/2 layer keeps
//! answering pings. Every wait for a peer's answer (a call's reply, a
//! read's next chunk, the acknowledgement of a part sent) is therefore
//! bounded by `peer_stall`; past it the object fails, the peer is marked
//! down, and calls go on to the next peer.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, UploadPart,
};
use shmover_proto::peer::{self as pb, peer_client::PeerClient, read_reply, write_request};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use tracing::{info, warn};

use crate::config::PeerConfig;
use crate::metrics::Metrics;
use crate::peer::{
    read_pem, CONNECTION_WINDOW, FRAME_SIZE, KEEPALIVE, KEEPALIVE_TIMEOUT, MAX_CHUNK, MAX_MESSAGE,
    STREAM_WINDOW,
};

/// How long a failed peer is passed over for new objects.
const DOWN_FOR: Duration = Duration::from_secs(60);

struct PeerConn {
    url: String,
    endpoint: Endpoint,
    /// The connection calls share.
    channel: Channel,
    down_until: Mutex<Option<Instant>>,
}

fn peer_client(channel: Channel) -> PeerClient<Channel> {
    PeerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

impl PeerConn {
    /// A client on the connection that calls share.
    fn client(&self) -> PeerClient<Channel> {
        peer_client(self.channel.clone())
    }

    /// A client on a connection of its own, for one upload or read. Streams
    /// on one HTTP/2 connection share its flow-control window: a read whose
    /// restore has stopped taking bytes holds its share until it goes on,
    /// and a few such reads would stop every other stream to this peer.
    fn own_client(&self) -> PeerClient<Channel> {
        peer_client(self.endpoint.connect_lazy())
    }

    fn down(&self) -> bool {
        matches!(*self.down_until.lock().expect("peer"), Some(t) if t > Instant::now())
    }

    fn mark_down(&self) {
        *self.down_until.lock().expect("peer") = Some(Instant::now() + DOWN_FOR);
    }

    fn mark_up(&self) {
        *self.down_until.lock().expect("peer") = None;
    }
}

struct Inner {
    peers: Vec<PeerConn>,
    timeout: Duration,
    stall: Duration,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    metrics: Arc<Metrics>,
}

/// The store that forwards to peer movers.
#[derive(Clone)]
pub struct PeerStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PeerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.inner.peers.iter().map(|p| p.url.as_str()).collect();
        f.debug_struct("PeerStore").field("peers", &urls).finish()
    }
}

impl std::fmt::Display for PeerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Whether trying again (or another peer) may help: the transport failed,
/// not the request.
fn retryable(s: &Status) -> bool {
    match s.code() {
        Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::InvalidArgument
        | Code::Unauthenticated
        | Code::PermissionDenied
        | Code::Unimplemented
        | Code::DataLoss
        | Code::OutOfRange
        // A part larger than the peer's memory budget, or a message larger
        // than it decodes: the same request fails the same way again.
        | Code::ResourceExhausted => false,
        // The peer's own store failed: another try through the network does
        // not help (the store has retried already).
        Code::Internal => !s.message().starts_with("store: "),
        _ => true,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("peer {peer}: {status}")]
struct PeerError {
    peer: String,
    status: String,
}

fn store_error(peer: &str, path: &str, s: Status) -> object_store::Error {
    use object_store::Error as E;
    let source = Box::new(PeerError {
        peer: peer.to_string(),
        status: format!("{:?}: {}", s.code(), s.message()),
    });
    let path = path.to_string();
    match s.code() {
        Code::NotFound => E::NotFound { path, source },
        Code::AlreadyExists => E::AlreadyExists { path, source },
        Code::FailedPrecondition => E::Precondition { path, source },
        Code::Unauthenticated => E::Unauthenticated { path, source },
        Code::PermissionDenied => E::PermissionDenied { path, source },
        _ => E::Generic {
            store: "peer",
            source,
        },
    }
}

fn meta_from(m: pb::ObjectMeta) -> object_store::Result<ObjectMeta> {
    Ok(ObjectMeta {
        location: Path::parse(&m.path)?,
        last_modified: chrono::DateTime::from_timestamp_millis(m.last_modified_unix_ms)
            .unwrap_or_default(),
        size: m.size,
        e_tag: Some(m.e_tag).filter(|t| !t.is_empty()),
        version: None,
    })
}

/// 16 random bytes, hex: an upload id.
fn random_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl PeerStore {
    /// Channels to the peers (connected lazily, on first use).
    pub fn new(cfg: &PeerConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &cfg.tls_ca {
            tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca, "TLS CA")?));
        }
        if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
            tls = tls.identity(Identity::from_pem(
                read_pem(cert, "TLS certificate")?,
                read_pem(key, "TLS key")?,
            ));
        }
        let mut peers = Vec::new();
        for url in &cfg.forward {
            let mut ep = Endpoint::from_shared(url.clone())
                .map_err(|e| anyhow::anyhow!("peer URL {url:?}: {e}"))?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .max_frame_size(FRAME_SIZE)
                .http2_keep_alive_interval(KEEPALIVE)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true);
            if url.starts_with("https://") {
                ep = ep
                    .tls_config(tls.clone())
                    .map_err(|e| anyhow::anyhow!("TLS settings for {url}: {e}"))?;
            }
            peers.push(PeerConn {
                url: url.clone(),
                channel: ep.connect_lazy(),
                endpoint: ep,
                down_until: Mutex::new(None),
            });
        }
        anyhow::ensure!(!peers.is_empty(), "no peer to forward to");
        let token = match &cfg.token {
            Some(t) => Some(
                format!("Bearer {}", t.0)
                    .parse()
                    .map_err(|_| anyhow::anyhow!("the token holds characters a header cannot"))?,
            ),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                peers,
                timeout: cfg.timeout,
                stall: cfg.stall,
                token,
                metrics,
            }),
        })
    }
}

impl Inner {
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        req
    }

    /// Peer indices in the order to try them: healthy ones first, in the
    /// configured order.
    fn order(&self) -> Vec<usize> {
        let (mut up, down): (Vec<usize>, Vec<usize>) =
            (0..self.peers.len()).partition(|&i| !self.peers[i].down());
        up.extend(down);
        up
    }

    /// The peer new objects go to.
    fn pick(&self) -> usize {
        self.order()[0]
    }

    /// `fut`, a wait for a peer's answer, bounded by `stall`.
    async fn answer<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        tokio::time::timeout(self.stall, fut)
            .await
            .unwrap_or_else(|_| Err(self.no_answer()))
    }

    fn no_answer(&self) -> Status {
        Status::deadline_exceeded(format!(
            "no answer from the peer in {} s",
            self.stall.as_secs()
        ))
    }

    /// A peer that left `path`'s request unanswered past `stall`: it is
    /// passed over, and the object fails with the status returned.
    fn stalled(&self, peer: usize, path: &str) -> Status {
        let url = &self.peers[peer].url;
        warn!(peer = %url, path, stall_secs = self.stall.as_secs(), "peer stopped answering; passing it over");
        self.peers[peer].mark_down();
        self.metrics.peer_failovers.fetch_add(1, Relaxed);
        self.no_answer()
    }

    /// Runs one call against the peers, failing over on transport errors,
    /// until it succeeds, fails for good, or `timeout` has passed.
    async fn call<T, F, Fut>(&self, path: &str, f: F) -> object_store::Result<T>
    where
        F: Fn(usize, PeerClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            let mut last = None;
            for i in self.order() {
                let peer = &self.peers[i];
                match self.answer(f(i, peer.client())).await {
                    Ok(v) => {
                        peer.mark_up();
                        return Ok(v);
                    }
                    Err(s) if !retryable(&s) => return Err(store_error(&peer.url, path, s)),
                    Err(s) => {
                        if !peer.down() {
                            warn!(peer = %peer.url, error = %s.message(), "peer unreachable; trying the next");
                            self.metrics.peer_failovers.fetch_add(1, Relaxed);
                        }
                        peer.mark_down();
                        last = Some((i, s));
                    }
                }
            }
            let (i, s) = last.expect("at least one peer");
            if Instant::now() + pause >= deadline {
                return Err(store_error(&self.peers[i].url, path, s));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

#[async_trait]
impl ObjectStore for PeerStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let create_only = match opts.mode {
            PutMode::Overwrite => false,
            PutMode::Create => true,
            PutMode::Update(_) => {
                return Err(object_store::Error::NotImplemented {
                    operation: "conditional update".into(),
                    implementer: "the peer store".into(),
                })
            }
        };
        let data: Bytes = payload.into();
        let path = location.to_string();
        // A try whose reply was lost may have stored the object already.
        let retried = std::sync::atomic::AtomicBool::new(false);
        let r = self
            .inner
            .call(&path, |_, mut c| {
                let req = self.inner.request(pb::PutRequest {
                    path: path.clone(),
                    data: data.clone(),
                    create_only,
                });
                let retried = &retried;
                async move {
                    let r = c.put(req).await;
                    if r.as_ref().is_err_and(retryable) {
                        retried.store(true, Relaxed);
                    }
                    r
                }
            })
            .await;
        let e_tag = match r {
            Ok(reply) => reply.into_inner().e_tag,
            Err(e @ object_store::Error::AlreadyExists { .. }) if retried.load(Relaxed) => {
                let stored = self.get(location).await?.bytes().await?;
                if stored != data {
                    return Err(e);
                }
                String::new()
            }
            Err(e) => return Err(e),
        };
        Ok(PutResult {
            e_tag: Some(e_tag).filter(|t| !t.is_empty()),
            version: None,
            extensions: Default::default(),
        })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let id = random_id().map_err(|e| object_store::Error::Generic {
            store: "peer",
            source: Box::new(e),
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let peer = self.inner.pick();
        tokio::spawn(send_object(
            Arc::clone(&self.inner),
            peer,
            id,
            location.to_string(),
            rx,
        ));
        Ok(Box::new(PeerUpload { cmds: tx, next: 0 }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some()
            || options.version.is_some()
        {
            return Err(object_store::Error::NotImplemented {
                operation: "conditional or versioned reads".into(),
                implementer: "the peer store".into(),
            });
        }
        let path = location.to_string();
        if options.head {
            let meta = self.stat(&path).await?;
            return Ok(GetResult {
                range: 0..meta.size,
                payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
                meta,
                attributes: Default::default(),
                extensions: Default::default(),
            });
        }
        let (offset, end, suffix) = match &options.range {
            None => (0, None, None),
            Some(GetRange::Bounded(r)) => (r.start, Some(r.end), None),
            Some(GetRange::Offset(o)) => (*o, None, None),
            Some(GetRange::Suffix(n)) => (0, None, Some(*n)),
        };
        let (peer, meta, stream) = self.inner.open_read(&path, offset, end, suffix).await?;
        let range = match options.range {
            None => 0..meta.size,
            Some(r) => r
                .as_range(meta.size)
                .map_err(|e| object_store::Error::Generic {
                    store: "peer",
                    source: e.to_string().into(),
                })?,
        };
        let reader = Reader {
            inner: Arc::clone(&self.inner),
            peer,
            path,
            next: range.start,
            end: range.end,
            stream,
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(reader.into_stream()),
            meta,
            range,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let this = self.clone();
        locations
            .then(move |p| {
                let this = this.clone();
                async move {
                    let p = p?;
                    let path = p.to_string();
                    // A try whose reply was lost may have deleted it already.
                    let retried = std::sync::atomic::AtomicBool::new(false);
                    let r = this
                        .inner
                        .call(&path, |_, mut c| {
                            let req = this.inner.request(pb::DeleteRequest { path: path.clone() });
                            let retried = &retried;
                            async move {
                                let r = c.delete(req).await;
                                if r.as_ref().is_err_and(retryable) {
                                    retried.store(true, Relaxed);
                                }
                                r
                            }
                        })
                        .await;
                    match r {
                        Ok(_) => Ok(p),
                        Err(object_store::Error::NotFound { .. }) if retried.load(Relaxed) => Ok(p),
                        Err(e) => Err(e),
                    }
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = Arc::clone(&self.inner);
        let prefix = prefix.map(|p| p.to_string()).unwrap_or_default();
        // The whole listing is one call, so a peer that stops answering
        // half-way through is passed over like one that never answered.
        let batches = async move {
            let all = inner
                .call(&prefix, |_, mut c| {
                    let req = inner.request(pb::ListRequest {
                        prefix: prefix.clone(),
                    });
                    async move {
                        let mut s = c.list(req).await?.into_inner();
                        let mut all = Vec::new();
                        while let Some(reply) = s.message().await? {
                            all.extend(reply.objects);
                        }
                        Ok(all)
                    }
                })
                .await?;
            Ok::<_, object_store::Error>(all.into_iter().map(meta_from).collect::<Vec<_>>())
        };
        futures::stream::once(batches)
            .flat_map(|r| match r {
                Ok(all) => futures::stream::iter(all).boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let prefix = prefix.map(|p| p.to_string()).unwrap_or_default();
        let r = self
            .inner
            .call(&prefix, |_, mut c| {
                let req = self.inner.request(pb::ListRequest {
                    prefix: prefix.clone(),
                });
                async move { c.list_delimited(req).await }
            })
            .await?
            .into_inner();
        Ok(ListResult {
            objects: r
                .objects
                .into_iter()
                .map(meta_from)
                .collect::<Result<_, _>>()?,
            common_prefixes: r
                .common_prefixes
                .iter()
                .map(Path::parse)
                .collect::<Result<_, _>>()?,
            extensions: Default::default(),
        })
    }

    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> object_store::Result<()> {
        // The mover never copies objects; the peer service has no copy.
        Err(object_store::Error::NotImplemented {
            operation: "copy".into(),
            implementer: "the peer store".into(),
        })
    }
}

impl PeerStore {
    async fn stat(&self, path: &str) -> object_store::Result<ObjectMeta> {
        let m = self
            .inner
            .call(path, |_, mut c| {
                let req = self.inner.request(pb::StatRequest {
                    path: path.to_string(),
                });
                async move { c.stat(req).await }
            })
            .await?;
        meta_from(m.into_inner())
    }
}

impl Inner {
    /// Opens a read on the first peer that answers: its index, the object's
    /// metadata and the chunk stream.
    async fn open_read(
        &self,
        path: &str,
        offset: u64,
        end: Option<u64>,
        suffix: Option<u64>,
    ) -> object_store::Result<(usize, ObjectMeta, Stream)> {
        let (peer, meta, stream) = self
            .call(path, |i, _| {
                let req = self.request(pb::ReadRequest {
                    path: path.to_string(),
                    offset,
                    end,
                    suffix,
                });
                let mut c = self.peers[i].own_client();
                async move {
                    let mut s = c.read(req).await?.into_inner();
                    match s.message().await? {
                        Some(pb::ReadReply {
                            msg: Some(read_reply::Msg::Meta(m)),
                        }) => Ok((
                            i,
                            m,
                            Stream {
                                replies: s,
                                _conn: c,
                            },
                        )),
                        _ => Err(Status::data_loss("the peer's read began without metadata")),
                    }
                }
            })
            .await?;
        Ok((peer, meta_from(meta)?, stream))
    }
}

/// A read's replies, and the connection it has to itself.
struct Stream {
    replies: tonic::Streaming<pb::ReadReply>,
    _conn: PeerClient<Channel>,
}

/// A restore's byte stream from a peer; resumes after a broken connection
/// from the next byte it has not yet yielded.
struct Reader {
    inner: Arc<Inner>,
    peer: usize,
    path: String,
    next: u64,
    end: u64,
    stream: Stream,
}

impl Reader {
    fn into_stream(self) -> BoxStream<'static, object_store::Result<Bytes>> {
        futures::stream::try_unfold(self, |mut r| async move {
            let mut broken_since: Option<Instant> = None;
            loop {
                if r.next >= r.end {
                    return Ok(None);
                }
                let Ok(msg) = tokio::time::timeout(r.inner.stall, r.stream.replies.message()).await else {
                    let s = r.inner.stalled(r.peer, &r.path);
                    return Err(store_error(&r.inner.peers[r.peer].url, &r.path, s));
                };
                let e = match msg {
                    Ok(Some(pb::ReadReply {
                        msg: Some(read_reply::Msg::Chunk(c)),
                    })) => {
                        if c.offset != r.next || c.data.is_empty() {
                            return Err(store_error(
                                &r.inner.peers[r.peer].url,
                                &r.path,
                                Status::data_loss(format!(
                                    "chunk at offset {} of {} bytes, expected offset {}",
                                    c.offset,
                                    c.data.len(),
                                    r.next
                                )),
                            ));
                        }
                        r.next += c.data.len() as u64;
                        r.inner
                            .metrics
                            .peer_bytes_in
                            .fetch_add(c.data.len() as u64, Relaxed);
                        return Ok(Some((c.data, r)));
                    }
                    Ok(Some(_)) => Status::data_loss("unexpected message in a read"),
                    Ok(None) => Status::unavailable("the read ended early"),
                    Err(e) => e,
                };
                let url = r.inner.peers[r.peer].url.clone();
                if !retryable(&e) {
                    return Err(store_error(&url, &r.path, e));
                }
                let since = *broken_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= r.inner.timeout {
                    r.inner.peers[r.peer].mark_down();
                    return Err(store_error(&url, &r.path, e));
                }
                warn!(peer = %url, path = %r.path, offset = r.next, error = %e.message(), "read from peer broke; resuming");
                tokio::time::sleep(Duration::from_millis(200)).await;
                let (peer, _, stream) =
                    match r.inner.open_read(&r.path, r.next, Some(r.end), None).await {
                        Ok(x) => x,
                        Err(e) => return Err(e),
                    };
                r.inner.metrics.peer_resumes.fetch_add(1, Relaxed);
                r.peer = peer;
                r.stream = stream;
            }
        })
        .boxed()
    }
}

/// What an upload asks of its sender task.
enum Cmd {
    Part {
        data: PutPayload,
        done: oneshot::Sender<object_store::Result<()>>,
    },
    Finish {
        size: u64,
        done: oneshot::Sender<object_store::Result<PutResult>>,
    },
    Abort,
}

/// A multipart upload to a peer; a task (`send_object`) does the work.
struct PeerUpload {
    cmds: mpsc::UnboundedSender<Cmd>,
    next: u64,
}

impl std::fmt::Debug for PeerUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerUpload")
            .field("bytes", &self.next)
            .finish()
    }
}

/// A deadline that never comes, for a `select!` branch that is off.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

fn sender_gone() -> object_store::Error {
    object_store::Error::Generic {
        store: "peer",
        source: "the upload to the peer has ended".into(),
    }
}

#[async_trait]
impl MultipartUpload for PeerUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.next += data.content_length() as u64;
        let (done, rx) = oneshot::channel();
        let sent = self.cmds.send(Cmd::Part { data, done }).is_ok();
        Box::pin(async move {
            if !sent {
                return Err(sender_gone());
            }
            rx.await.unwrap_or_else(|_| Err(sender_gone()))
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let (done, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Finish {
                size: self.next,
                done,
            })
            .map_err(|_| sender_gone())?;
        rx.await.unwrap_or_else(|_| Err(sender_gone()))
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let _ = self.cmds.send(Cmd::Abort);
        Ok(())
    }
}

/// A part not yet acknowledged, cut into chunks of at most `MAX_CHUNK`.
struct Pending {
    start: u64,
    end: u64,
    chunks: Vec<Bytes>,
    done: oneshot::Sender<object_store::Result<()>>,
}

/// The state of one object's upload, across connections.
struct Sender {
    inner: Arc<Inner>,
    peer: usize,
    id: String,
    path: String,
    /// Parts sent or to send, oldest first; acknowledged ones are removed.
    pending: VecDeque<Pending>,
    /// Parts accepted from the upload (the next part starts here).
    queued: u64,
    /// The end of the last part sent whole, on any connection: the most
    /// the peer can hold.
    sent: u64,
    finish: Option<(u64, oneshot::Sender<object_store::Result<PutResult>>)>,
    aborted: bool,
    cmds_open: bool,
    /// A connection got as far as the peer's first reply.
    connected: bool,
    /// The most the peer has acknowledged holding.
    durable: u64,
}

/// How one connection ended.
enum Ended {
    /// The object is complete or aborted, or failed for good.
    Done,
    /// The connection broke; try again.
    Broken(Status),
}

impl Sender {
    fn url(&self) -> &str {
        &self.inner.peers[self.peer].url
    }

    fn take(&mut self, cmd: Option<Cmd>) {
        match cmd {
            Some(Cmd::Part { data, done }) => {
                let start = self.queued;
                let mut chunks = Vec::new();
                for b in data.iter() {
                    let mut off = 0;
                    while off < b.len() {
                        let n = (b.len() - off).min(MAX_CHUNK);
                        chunks.push(b.slice(off..off + n));
                        off += n;
                    }
                }
                self.queued += data.content_length() as u64;
                self.pending.push_back(Pending {
                    start,
                    end: self.queued,
                    chunks,
                    done,
                });
            }
            Some(Cmd::Finish { size, done }) => self.finish = Some((size, done)),
            Some(Cmd::Abort) => self.aborted = true,
            None => {
                self.cmds_open = false;
                self.aborted = self.finish.is_none();
            }
        }
    }

    /// A peer that says it holds bytes it was never sent is broken or
    /// lying: believing it would drop parts it does not have.
    fn check_ack(&self, r: &pb::WriteReply) -> Result<(), Status> {
        if r.durable > self.sent {
            return Err(Status::data_loss(format!(
                "the peer acknowledged {} bytes; {} were sent",
                r.durable, self.sent
            )));
        }
        Ok(())
    }

    /// The peer holds everything below `durable`: those parts are done
    /// (their chunks, ring slots, are released by the drop).
    fn acked(&mut self, durable: u64) -> usize {
        self.durable = self.durable.max(durable);
        let mut n = 0;
        while let Some(p) = self.pending.front() {
            if p.end > durable {
                break;
            }
            let p = self.pending.pop_front().expect("front");
            let _ = p.done.send(Ok(()));
            n += 1;
        }
        n
    }

    fn fail(&mut self, e: impl Fn() -> object_store::Error) {
        for p in self.pending.drain(..) {
            let _ = p.done.send(Err(e()));
        }
        if let Some((_, done)) = self.finish.take() {
            let _ = done.send(Err(e()));
        }
    }

    /// One connection: open (or resume) the upload, send what the peer does
    /// not hold, take acknowledgements, finish.
    async fn connection(&mut self, cmds: &mut mpsc::UnboundedReceiver<Cmd>) -> Ended {
        let (out, out_rx) = mpsc::channel::<pb::WriteRequest>(16);
        let open = pb::WriteRequest {
            msg: Some(write_request::Msg::Open(pb::WriteOpen {
                upload_id: self.id.clone(),
                path: self.path.clone(),
            })),
        };
        if out.send(open).await.is_err() {
            return Ended::Broken(Status::unavailable("sender closed"));
        }
        let mut client = self.inner.peers[self.peer].own_client();
        let req = self.inner.request(ReceiverStream::new(out_rx));
        // The first reply: what the peer holds.
        let first = tokio::time::timeout(self.inner.stall, async {
            let mut replies = client.write(req).await?.into_inner();
            let first = replies.message().await?;
            Ok::<_, Status>((replies, first))
        })
        .await;
        let (mut replies, r) = match first {
            Err(_) => return self.stalled(),
            Ok(Err(s)) => return Ended::Broken(s),
            Ok(Ok((_, None))) => return Ended::Broken(Status::unavailable("no reply to open")),
            Ok(Ok((replies, Some(r)))) => (replies, r),
        };
        if let Err(s) = self.check_ack(&r) {
            return self.fatal(s);
        }
        if r.durable > 0 {
            info!(peer = %self.url(), path = %self.path, offset = r.durable, "resuming an upload");
            self.inner.metrics.peer_resumes.fetch_add(1, Relaxed);
        }
        self.acked(r.durable);
        if r.completed {
            return self.completed(r);
        }
        if let Some(p) = self.pending.front() {
            if p.start != r.durable {
                return self.fatal(Status::data_loss(format!(
                    "the peer holds {} bytes, the next part starts at {}",
                    r.durable, p.start
                )));
            }
        } else if r.durable != self.queued {
            return self.fatal(Status::data_loss(format!(
                "the peer holds {} bytes, {} were sent",
                r.durable, self.queued
            )));
        }
        self.inner.peers[self.peer].mark_up();
        self.connected = true;
        // Resend every pending part from its first chunk.
        let (mut part, mut chunk, mut offset) = (0usize, 0usize, 0u64);
        let mut finish_sent = false;
        // Since when the peer has held bytes (or the finish) it has not
        // answered, without progress in between: a reply that acknowledges
        // nothing new (a peer repeating itself) does not count.
        let mut unanswered: Option<tokio::time::Instant> = None;
        let mut durable = r.durable;
        loop {
            let has_next = part < self.pending.len();
            let want_finish =
                !has_next && self.pending.is_empty() && !finish_sent && self.finish.is_some();
            if self.aborted {
                let _ = out
                    .send(pb::WriteRequest {
                        msg: Some(write_request::Msg::Abort(pb::WriteAbort {})),
                    })
                    .await;
                self.fail(|| object_store::Error::Generic {
                    store: "peer",
                    source: "upload aborted".into(),
                });
                return Ended::Done;
            }
            let stall_at = unanswered.map_or_else(far_future, |t| t + self.inner.stall);
            tokio::select! {
                biased;
                reply = replies.message() => match reply {
                    Ok(Some(r)) => {
                        if let Err(s) = self.check_ack(&r) {
                            return self.fatal(s);
                        }
                        // Acknowledged parts were sent whole.
                        part -= self.acked(r.durable).min(part);
                        if r.completed {
                            return self.completed(r);
                        }
                        let waiting = part > 0 || chunk > 0 || finish_sent;
                        let progress = r.durable > durable;
                        durable = durable.max(r.durable);
                        if !waiting {
                            unanswered = None;
                        } else if progress || unanswered.is_none() {
                            unanswered = Some(tokio::time::Instant::now());
                        }
                    }
                    Ok(None) => return Ended::Broken(Status::unavailable("the peer closed the stream")),
                    Err(s) => return Ended::Broken(s),
                },
                () = tokio::time::sleep_until(stall_at), if unanswered.is_some() => {
                    return self.stalled();
                }
                cmd = cmds.recv(), if self.cmds_open => self.take(cmd),
                permit = out.reserve(), if has_next || want_finish => {
                    let Ok(permit) = permit else {
                        return Ended::Broken(Status::unavailable("the request stream closed"));
                    };
                    unanswered.get_or_insert_with(tokio::time::Instant::now);
                    if want_finish {
                        let size = self.finish.as_ref().map_or(0, |f| f.0);
                        permit.send(pb::WriteRequest {
                            msg: Some(write_request::Msg::Finish(pb::WriteFinish { size })),
                        });
                        finish_sent = true;
                        continue;
                    }
                    let p = &self.pending[part];
                    let end = p.end;
                    let mut part_size = 0;
                    if chunk == 0 {
                        offset = p.start;
                        part_size = p.end - p.start;
                    }
                    let last = chunk + 1 >= p.chunks.len();
                    let data = p.chunks.get(chunk).cloned().unwrap_or_default();
                    let len = data.len() as u64;
                    self.inner.metrics.peer_bytes_out.fetch_add(data.len() as u64, Relaxed);
                    permit.send(pb::WriteRequest {
                        msg: Some(write_request::Msg::Chunk(pb::Chunk { offset, data, part_end: last, part_size })),
                    });
                    offset += len;
                    if last {
                        self.sent = self.sent.max(end);
                        part += 1;
                        chunk = 0;
                    } else {
                        chunk += 1;
                    }
                }
            }
        }
    }

    /// The peer's answer to a plain call, if it says we are not allowed.
    async fn refused(&self) -> Option<Status> {
        let req = self.inner.request(pb::StatRequest {
            path: self.path.clone(),
        });
        let mut client = self.inner.peers[self.peer].client();
        match self.inner.answer(client.stat(req)).await {
            Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied) => Some(s),
            _ => None,
        }
    }

    fn completed(&mut self, r: pb::WriteReply) -> Ended {
        if let Some((size, done)) = self.finish.take() {
            let res = if r.durable == size {
                Ok(PutResult {
                    e_tag: Some(r.e_tag).filter(|t| !t.is_empty()),
                    version: None,
                    extensions: Default::default(),
                })
            } else {
                Err(store_error(
                    self.url(),
                    &self.path,
                    Status::data_loss(format!("the peer completed {} bytes of {size}", r.durable)),
                ))
            };
            let _ = done.send(res);
        }
        Ended::Done
    }

    /// The peer left this upload unanswered past `stall`.
    fn stalled(&mut self) -> Ended {
        let s = self.inner.stalled(self.peer, &self.path);
        let (url, path) = (self.url().to_string(), self.path.clone());
        self.fail(|| store_error(&url, &path, s.clone()));
        Ended::Done
    }

    fn fatal(&mut self, s: Status) -> Ended {
        let url = self.url().to_string();
        let path = self.path.clone();
        warn!(peer = %url, path = %path, error = %s.message(), "upload to peer failed");
        self.fail(|| store_error(&url, &path, s.clone()));
        Ended::Done
    }
}

/// Sends one object to a peer, across as many connections as it takes.
async fn send_object(
    inner: Arc<Inner>,
    peer: usize,
    id: String,
    path: String,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
) {
    let mut s = Sender {
        inner,
        peer,
        id,
        path,
        pending: VecDeque::new(),
        queued: 0,
        sent: 0,
        finish: None,
        aborted: false,
        cmds_open: true,
        connected: false,
        durable: 0,
    };
    // Nothing to send before the first part (or finish, or abort).
    let first = cmds.recv().await;
    s.take(first);
    if s.aborted && s.pending.is_empty() {
        return;
    }
    let mut broken_since: Option<Instant> = None;
    let mut pause = Duration::from_millis(50);
    loop {
        s.connected = false;
        let (started, durable) = (Instant::now(), s.durable);
        let ended = s.connection(&mut cmds).await;
        // A connection that got the peer to hold more, or that stayed up
        // for the whole timeout, ends the broken spell. One that was
        // answered and then closed without progress does not: a peer that
        // drops every stream after its first reply would be retried for
        // good.
        if s.connected && (s.durable > durable || started.elapsed() >= s.inner.timeout) {
            broken_since = None;
            pause = Duration::from_millis(50);
        }
        match ended {
            Ended::Done => return,
            Ended::Broken(e) if !retryable(&e) => {
                s.fatal(e);
                return;
            }
            Ended::Broken(e) => {
                // A refused stream can surface as a mere reset: ask the
                // peer in a plain call whether it refuses us.
                if !s.connected {
                    if let Some(refused) = s.refused().await {
                        s.fatal(refused);
                        return;
                    }
                }
                let since = *broken_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= s.inner.timeout {
                    s.inner.peers[s.peer].mark_down();
                    s.inner.metrics.peer_failovers.fetch_add(1, Relaxed);
                    let waited = since.elapsed().as_secs();
                    s.fatal(Status::unavailable(format!(
                        "unreachable for {waited} s: {}",
                        e.message()
                    )));
                    return;
                }
                warn!(peer = %s.url(), path = %s.path, error = %e.message(), "connection to peer broke; reconnecting");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}
