//! Counters, and their Prometheus text exposition over a minimal HTTP/1.1
//! endpoint (`--metrics-listen`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Process-wide counters. All monotonic except `streams_open` and
/// `connections_open`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub streams_open: AtomicU64,
    pub connections_open: AtomicU64,
    pub streams_total: AtomicU64,
    pub objects_committed: AtomicU64,
    pub errors: AtomicU64,
    pub refused_peers: AtomicU64,
    pub refused_connections: AtomicU64,
    pub silent_connections: AtomicU64,
    pub store_retries: AtomicU64,
    pub parts_uploaded: AtomicU64,
    pub part_latency_micros: AtomicU64,
    pub peer_bytes_in: AtomicU64,
    pub peer_bytes_out: AtomicU64,
    pub peer_resumes: AtomicU64,
    pub peer_failovers: AtomicU64,
    pub rings_reused: AtomicU64,
    pub manifest_reads: AtomicU64,
    pub manifest_cache_hits: AtomicU64,
    pub memory_waits: AtomicU64,
}

impl Metrics {
    /// The text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut put = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        put(
            "shmover_bytes_in_total",
            "counter",
            "Bytes received from clients through rings.",
            self.bytes_in.load(Relaxed).to_string(),
        );
        put(
            "shmover_bytes_out_total",
            "counter",
            "Bytes sent to clients through rings.",
            self.bytes_out.load(Relaxed).to_string(),
        );
        put(
            "shmover_streams_open",
            "gauge",
            "Streams open now.",
            self.streams_open.load(Relaxed).to_string(),
        );
        put(
            "shmover_connections_open",
            "gauge",
            "Control connections open, refused ones included until they are closed.",
            self.connections_open.load(Relaxed).to_string(),
        );
        put(
            "shmover_streams_total",
            "counter",
            "Streams opened.",
            self.streams_total.load(Relaxed).to_string(),
        );
        put(
            "shmover_rings_reused_total",
            "counter",
            "Streams given the idle ring of an earlier stream of the same user instead of new shared memory.",
            self.rings_reused.load(Relaxed).to_string(),
        );
        put(
            "shmover_catalog_manifest_reads_total",
            "counter",
            "Manifests read from the store to answer a listing.",
            self.manifest_reads.load(Relaxed).to_string(),
        );
        put(
            "shmover_catalog_manifest_cache_hits_total",
            "counter",
            "Manifests a listing took from the mover's cache instead of the store.",
            self.manifest_cache_hits.load(Relaxed).to_string(),
        );
        put(
            "shmover_memory_waits_total",
            "counter",
            "Parts that waited for memory_limit before they were taken: a stream's own parts, and parts a peer sends.",
            self.memory_waits.load(Relaxed).to_string(),
        );
        put(
            "shmover_objects_committed_total",
            "counter",
            "Backups made durable and visible.",
            self.objects_committed.load(Relaxed).to_string(),
        );
        put(
            "shmover_errors_total",
            "counter",
            "Requests answered with an error.",
            self.errors.load(Relaxed).to_string(),
        );
        put(
            "shmover_refused_peers_total",
            "counter",
            "Connections refused by the uid/gid check.",
            self.refused_peers.load(Relaxed).to_string(),
        );
        put(
            "shmover_refused_connections_total",
            "counter",
            "Connections refused because max_connections were open.",
            self.refused_connections.load(Relaxed).to_string(),
        );
        put(
            "shmover_silent_connections_total",
            "counter",
            "Connections closed because they sent no Hello within hello_timeout_secs.",
            self.silent_connections.load(Relaxed).to_string(),
        );
        put(
            "shmover_store_retries_total",
            "counter",
            "Store requests retried after a transient error.",
            self.store_retries.load(Relaxed).to_string(),
        );
        put(
            "shmover_peer_bytes_received_total",
            "counter",
            "Object bytes received from peer movers (uploads to us, reads from them).",
            self.peer_bytes_in.load(Relaxed).to_string(),
        );
        put(
            "shmover_peer_bytes_sent_total",
            "counter",
            "Object bytes sent to peer movers (forwarded uploads, reads we serve).",
            self.peer_bytes_out.load(Relaxed).to_string(),
        );
        put(
            "shmover_peer_resumes_total",
            "counter",
            "Peer transfers resumed after a broken connection.",
            self.peer_resumes.load(Relaxed).to_string(),
        );
        put(
            "shmover_peer_failovers_total",
            "counter",
            "Times a peer was found unreachable and passed over.",
            self.peer_failovers.load(Relaxed).to_string(),
        );
        let parts = self.parts_uploaded.load(Relaxed);
        let micros = self.part_latency_micros.load(Relaxed);
        let _ = writeln!(
            s,
            "# HELP shmover_part_upload_seconds Time to store one multipart part.\n# TYPE shmover_part_upload_seconds summary\nshmover_part_upload_seconds_sum {}\nshmover_part_upload_seconds_count {parts}",
            micros as f64 / 1e6
        );
        s
    }
}

/// Counts object_store's retry log events into `store_retries`.
#[derive(Debug)]
pub struct RetryCounter(pub Arc<Metrics>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RetryCounter {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if event
            .metadata()
            .target()
            .starts_with("object_store::client::retry")
        {
            self.0.store_retries.fetch_add(1, Relaxed);
        }
    }
}

/// Serves `GET /metrics` until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let mut req = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) if n > 0 => req.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let line = String::from_utf8_lossy(req.split(|b| *b == b'\r').next().unwrap_or(b""));
            let (status, body) = if line.starts_with("GET /metrics ") || line.starts_with("GET / ")
            {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        });
    }
}
