//! An HTTP/1.1 proxy on loopback that injects faults between a client and
//! an S3-compatible server: 500 and 503 replies, connections reset before a
//! reply, slow replies, a "down" switch that answers every request with
//! 503, and a "hung" switch that takes requests and never answers them (an
//! endpoint black-holed behind a load balancer that still accepts).
//! Requests are numbered as they arrive; request `i` gets
//! `plan[i % plan.len()]`, so a run is reproducible. Switches on top of
//! the plan hold chosen requests, or answer them with an error and carry
//! them out later.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::http::HttpThread;

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwarded untouched.
    Pass,
    /// Answered with this status (500, 503) and an S3 error body, not
    /// forwarded.
    Status(u16),
    /// The connection is closed without a reply, before forwarding. Only
    /// GET and PUT requests (idempotent: a client may retry them after a
    /// broken connection) get it; others pass.
    Reset,
    /// Forwarded after this delay.
    Slow(Duration),
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    injected: AtomicU64,
    /// Requests held by [`FaultProxy::hold`] and not yet let go.
    held: AtomicU64,
    /// Requests taken by [`FaultProxy::deferring`] and not yet carried out.
    deferred: AtomicU64,
}

/// A switch naming requests by method and a part of their path and query.
type Matcher = Arc<tokio::sync::watch::Sender<Option<(String, String)>>>;

fn matches(m: &Matcher, req: &Request<Incoming>) -> bool {
    m.borrow().as_ref().is_some_and(|(method, part)| {
        let target = req.uri().path_and_query().map_or("", |p| p.as_str());
        req.method().as_str() == method && target.contains(part)
    })
}

/// A running proxy, stopped on drop.
#[derive(Debug)]
pub struct FaultProxy {
    server: HttpThread,
    down: Arc<AtomicBool>,
    hung: Arc<AtomicBool>,
    hold: Matcher,
    defer: Matcher,
    counters: Arc<Counters>,
}

impl FaultProxy {
    /// Proxies to `upstream` with the fault `plan`.
    pub fn start(upstream: SocketAddr, plan: Vec<Fault>) -> std::io::Result<Self> {
        let down = Arc::new(AtomicBool::new(false));
        let hung = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let plan: Arc<[Fault]> = if plan.is_empty() {
            Arc::from([Fault::Pass])
        } else {
            plan.into()
        };
        let hold: Matcher = Arc::new(tokio::sync::watch::Sender::new(None));
        let defer: Matcher = Arc::new(tokio::sync::watch::Sender::new(None));
        let switches = Switches {
            down: Arc::clone(&down),
            hung: Arc::clone(&hung),
            hold: Arc::clone(&hold),
            defer: Arc::clone(&defer),
        };
        let c = Arc::clone(&counters);
        let svc = hyper::service::service_fn(move |req| {
            handle(
                req,
                upstream,
                Arc::clone(&plan),
                switches.clone(),
                Arc::clone(&c),
            )
        });
        Ok(Self {
            server: HttpThread::start("fault-proxy", svc)?,
            down,
            hung,
            hold,
            defer,
            counters,
        })
    }

    /// `http://127.0.0.1:PORT`: the endpoint to give the client.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// While down, every request is answered with 503.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, SeqCst);
    }

    /// While hung, every new request is read and never answered; the
    /// connection stays open until the client gives up on it.
    pub fn set_hung(&self, hung: bool) {
        self.hung.store(hung, SeqCst);
    }

    /// While `Some((method, part))`, a request of that method ("PUT",
    /// "POST") whose path and query contain `part` is held (not forwarded, not
    /// answered) until this is set to `None`, and then forwarded as it came.
    pub fn hold(&self, what: Option<(&str, &str)>) {
        self.hold
            .send_replace(what.map(|(m, p)| (m.to_string(), p.to_string())));
    }

    /// [`FaultProxy::hold`] until the returned guard drops: a failed
    /// assertion then lets the held requests go as it unwinds, instead of
    /// leaving whoever waits on them hung.
    pub fn holding(&self, method: &str, part: &str) -> Held<'_> {
        self.hold(Some((method, part)));
        Held(&self.hold)
    }

    /// Requests being held now.
    pub fn held(&self) -> u64 {
        self.counters.held.load(SeqCst)
    }

    /// Until the returned guard drops, a request of `method` whose path and
    /// query contain `part` is read whole and answered at once with 500
    /// (S3's InternalError, after which the outcome is unknown), and
    /// carried out upstream, as it came, when the guard drops: a request
    /// its client gave up on that lands later.
    pub fn deferring(&self, method: &str, part: &str) -> Held<'_> {
        self.defer
            .send_replace(Some((method.to_string(), part.to_string())));
        Held(&self.defer)
    }

    /// Requests taken by [`FaultProxy::deferring`] and not yet carried
    /// out.
    pub fn deferred(&self) -> u64 {
        self.counters.deferred.load(SeqCst)
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(SeqCst)
    }

    /// Faults injected so far (statuses, resets and delays, not passes).
    pub fn injected(&self) -> u64 {
        self.counters.injected.load(SeqCst)
    }
}

/// Held or deferred requests, let go on drop ([`FaultProxy::holding`],
/// [`FaultProxy::deferring`]).
#[derive(Debug)]
pub struct Held<'a>(&'a Matcher);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.send_replace(None);
    }
}

#[derive(Clone)]
struct Switches {
    down: Arc<AtomicBool>,
    hung: Arc<AtomicBool>,
    hold: Matcher,
    defer: Matcher,
}

type Body = Either<Incoming, Full<Bytes>>;

fn s3_error(status: u16) -> Response<Body> {
    let code = if status == 503 {
        "SlowDown"
    } else {
        "InternalError"
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the fault proxy</Message></Error>"
    );
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/xml")
        .body(Either::Right(Full::new(Bytes::from(xml))))
        .expect("a valid response")
}

async fn handle(
    req: Request<Incoming>,
    upstream: SocketAddr,
    plan: Arc<[Fault]>,
    switches: Switches,
    counters: Arc<Counters>,
) -> Result<Response<Body>, std::io::Error> {
    let i = counters.requests.fetch_add(1, SeqCst);
    if switches.hung.load(SeqCst) {
        counters.injected.fetch_add(1, SeqCst);
        return std::future::pending().await;
    }
    if switches.down.load(SeqCst) {
        counters.injected.fetch_add(1, SeqCst);
        return Ok(s3_error(503));
    }
    if matches(&switches.defer, &req) {
        counters.injected.fetch_add(1, SeqCst);
        counters.deferred.fetch_add(1, SeqCst);
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                counters.deferred.fetch_sub(1, SeqCst);
                return Err(std::io::Error::other(e));
            }
        };
        let mut rx = switches.defer.subscribe();
        tokio::spawn(async move {
            if rx.wait_for(Option::is_none).await.is_ok() {
                let late = Request::from_parts(parts, Full::new(body));
                if let Err(e) = forward(upstream, late).await {
                    eprintln!("fault proxy: a deferred request failed upstream: {e}");
                }
            }
            counters.deferred.fetch_sub(1, SeqCst);
        });
        return Ok(s3_error(500));
    }
    if matches(&switches.hold, &req) {
        counters.injected.fetch_add(1, SeqCst);
        counters.held.fetch_add(1, SeqCst);
        let mut rx = switches.hold.subscribe();
        let _ = rx.wait_for(Option::is_none).await;
        counters.held.fetch_sub(1, SeqCst);
    }
    let idempotent = matches!(*req.method(), hyper::Method::GET | hyper::Method::PUT);
    match plan[(i % plan.len() as u64) as usize] {
        Fault::Pass => {}
        Fault::Status(s) => {
            counters.injected.fetch_add(1, SeqCst);
            return Ok(s3_error(s));
        }
        Fault::Reset if idempotent => {
            counters.injected.fetch_add(1, SeqCst);
            // An error from the service makes hyper close the connection
            // without a reply.
            return Err(std::io::Error::other("injected reset"));
        }
        Fault::Reset => {}
        Fault::Slow(d) => {
            counters.injected.fetch_add(1, SeqCst);
            tokio::time::sleep(d).await;
        }
    }
    Ok(forward(upstream, req).await?.map(Either::Left))
}

/// Sends `req` to `upstream` on a connection of its own.
async fn forward<B>(upstream: SocketAddr, req: Request<B>) -> std::io::Result<Response<Incoming>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(upstream).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    sender
        .send_request(req)
        .await
        .map_err(std::io::Error::other)
}
