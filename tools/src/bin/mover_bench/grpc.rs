//! `mover-bench grpc`: the cross-node path (a C SBT client into a mover
//! that forwards over gRPC to a peer mover) against a plain tonic client
//! stream of the same bytes in the same run.
//!
//! The baseline is what an application would get from tonic as it comes:
//! default client and server settings, a client-streaming call of
//! `block`-sized messages, each copied from a reused buffer (as the SBT
//! client copies each block into a ring slot), to a server that writes
//! them to a file in the directory the peer mover's store uses, and
//! fsyncs it (as the store does). Both paths end in the same place; the
//! directory is a tmpfs when there is one, so that the disk of a shared
//! machine does not decide both figures.

use std::time::Instant;

use bytes::Bytes;
use shmover_proto::peer::{self as pb, peer_client::PeerClient, peer_server, write_request};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The plain server: writes a `Write` stream to a file (or drops it),
/// answers with the byte count.
struct Sink(Option<std::path::PathBuf>);

type Replies<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl peer_server::Peer for Sink {
    type WriteStream = Replies<pb::WriteReply>;
    type ReadStream = Replies<pb::ReadReply>;
    type ListStream = Replies<pb::ListReply>;

    async fn write(
        &self,
        req: Request<Streaming<pb::WriteRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        use std::io::Write;
        let mut inbound = req.into_inner();
        let io = |e: std::io::Error| Status::internal(e.to_string());
        let mut file = match &self.0 {
            Some(p) => Some(std::fs::File::create(p).map_err(io)?),
            None => None,
        };
        let mut n = 0u64;
        while let Some(m) = inbound.message().await? {
            if let Some(write_request::Msg::Chunk(c)) = m.msg {
                if let Some(f) = file.as_mut() {
                    f.write_all(&c.data).map_err(io)?;
                }
                n += c.data.len() as u64;
            }
        }
        if let (Some(f), Some(p)) = (file, &self.0) {
            f.sync_all().map_err(io)?;
            let _ = std::fs::remove_file(p);
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let _ = tx
            .send(Ok(pb::WriteReply {
                durable: n,
                ..Default::default()
            }))
            .await;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn read(
        &self,
        _: Request<pb::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        Err(Status::unimplemented("baseline sink"))
    }
    async fn put(&self, _: Request<pb::PutRequest>) -> Result<Response<pb::PutReply>, Status> {
        Err(Status::unimplemented("baseline sink"))
    }
    async fn stat(&self, _: Request<pb::StatRequest>) -> Result<Response<pb::ObjectMeta>, Status> {
        Err(Status::unimplemented("baseline sink"))
    }
    async fn list(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        Err(Status::unimplemented("baseline sink"))
    }
    async fn list_delimited(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListDelimitedReply>, Status> {
        Err(Status::unimplemented("baseline sink"))
    }
    async fn delete(
        &self,
        _: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteReply>, Status> {
        Err(Status::unimplemented("baseline sink"))
    }
}

/// Seconds to stream `bytes` in `block` messages through plain tonic into
/// a file in `dir`, or to a server that drops them (`None`).
pub fn plain_seconds(
    bytes: u64,
    block: usize,
    dir: Option<&std::path::Path>,
) -> Result<f64, String> {
    let sink = Sink(dir.map(|d| d.join("plain-grpc.bin")));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        // What Server::serve(addr) does: TCP_NODELAY on.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tokio::spawn(
            tonic::transport::Server::builder()
                .serve_with_incoming(peer_server::PeerServer::new(sink), incoming),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let mut client = PeerClient::new(channel);
        let src = shmover_tools::pattern::source(block);
        let k = shmover_tools::pattern::source_blocks(block);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let t0 = Instant::now();
        let feed = tokio::spawn(async move {
            let (mut off, mut i) = (0u64, 0usize);
            while off < bytes {
                let len = ((bytes - off) as usize).min(block);
                let data = Bytes::copy_from_slice(&src[(i % k) * block..][..len]);
                let chunk = pb::Chunk {
                    offset: off,
                    data,
                    part_end: false,
                    part_size: 0,
                };
                let msg = pb::WriteRequest {
                    msg: Some(write_request::Msg::Chunk(chunk)),
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
                off += len as u64;
                i += 1;
            }
        });
        let mut replies = client
            .write(ReceiverStream::new(rx))
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let got = replies
            .message()
            .await
            .map_err(|e| e.to_string())?
            .map_or(0, |r| r.durable);
        let secs = t0.elapsed().as_secs_f64();
        let _ = feed.await;
        if got != bytes {
            return Err(format!("the plain tonic sink got {got} of {bytes} bytes"));
        }
        Ok(secs)
    })
}
