//! A fault-injecting HTTP proxy between kbackup and Azurite: 500s, 503s, connection resets,
//! slow responses, a long stall, requests applied but answered with 500, and a "down" switch.
//! Seeded, so a failing run can be replayed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Probabilities of each fault per request (PUTs and GETs alike).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub p500: f64,
    pub p503: f64,
    pub reset: f64,
    pub slow: f64,
    /// Forward the request (so it takes effect) but answer 500: the client retries something
    /// that already happened.
    pub applied_then_500: f64,
    /// Stall the next blob PUT for this long before forwarding it (once).
    pub stall_once: Option<Duration>,
    /// Outcomes forced on the first blob PUTs, in order (the probabilities apply after them), so
    /// a test exercises each kind of fault whatever its seed.
    pub forced: std::collections::VecDeque<Forced>,
    /// Every request waits, unanswered, while this is set (storage frozen).
    pub frozen: bool,
    /// Play a store that does not honour create-only writes: a create refused because the name
    /// exists (409 on Azure, 412 on S3 and GCS) is answered as written. Signatures cover the
    /// condition headers, so they cannot be stripped; the client sees what an overwriting
    /// gateway tells it.
    pub accept_second_create: bool,
}

/// A fault forced on one blob PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forced {
    E500,
    E503,
    /// Forwarded (so it takes effect), then answered 500.
    AppliedThen500,
}

/// Counts of what was injected.
#[derive(Debug, Default)]
pub struct FaultStats {
    pub requests: AtomicU64,
    pub e500: AtomicU64,
    pub e503: AtomicU64,
    pub resets: AtomicU64,
    pub slow: AtomicU64,
    pub applied_then_500: AtomicU64,
    pub stalls: AtomicU64,
    pub refused_while_down: AtomicU64,
}

impl FaultStats {
    pub fn injected(&self) -> u64 {
        [&self.e500, &self.e503, &self.resets, &self.slow, &self.applied_then_500, &self.stalls, &self.refused_while_down]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }

    pub fn summary(&self) -> String {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "requests {} 500s {} 503s {} resets {} slow {} applied-then-500 {} stalls {} refused-while-down {}",
            l(&self.requests),
            l(&self.e500),
            l(&self.e503),
            l(&self.resets),
            l(&self.slow),
            l(&self.applied_then_500),
            l(&self.stalls),
            l(&self.refused_while_down)
        )
    }
}

/// A running proxy on 127.0.0.1.
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub stats: Arc<FaultStats>,
    pub down: Arc<AtomicBool>,
    faults: Arc<Mutex<Faults>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (e.g. `http://127.0.0.1:10000`) on the current runtime.
    pub async fn start(upstream: &str, faults: Faults, seed: u64) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(FaultStats::default());
        let down = Arc::new(AtomicBool::new(false));
        let faults = Arc::new(Mutex::new(faults));
        let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        let client = reqwest::Client::builder().pool_max_idle_per_host(16).build().unwrap();
        let upstream = upstream.trim_end_matches('/').to_string();
        let (st, dn, fl) = (stats.clone(), down.clone(), faults.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (stats, down, faults, rng, client, upstream) =
                    (st.clone(), dn.clone(), fl.clone(), rng.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (stats, down, faults, rng, client, upstream) =
                            (stats.clone(), down.clone(), faults.clone(), rng.clone(), client.clone(), upstream.clone());
                        async move { handle(req, &stats, &down, &faults, &rng, &client, &upstream).await }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        });
        FaultProxy { addr, stats, down, faults }
    }

    /// The proxy's base URL (the S3 endpoint that goes through it).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Azurite connection string that goes through this proxy.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};BlobEndpoint=http://{}/devstoreaccount1;",
            super::AZURITE_KEY,
            self.addr
        )
    }

    pub fn set_faults(&self, f: Faults) {
        *self.faults.lock().unwrap() = f;
    }
}

#[derive(Debug)]
struct Reset;
impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected connection reset")
    }
}
impl std::error::Error for Reset {}

fn error_response(code: StatusCode) -> Response<Full<Bytes>> {
    let body = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>InjectedFault</Code><Message>{code}</Message></Error>");
    Response::builder().status(code).header("content-type", "application/xml").body(Full::new(Bytes::from(body))).unwrap()
}

async fn handle(
    req: Request<Incoming>,
    stats: &FaultStats,
    down: &AtomicBool,
    faults: &Mutex<Faults>,
    rng: &Mutex<StdRng>,
    client: &reqwest::Client,
    upstream: &str,
) -> Result<Response<Full<Bytes>>, Reset> {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    while faults.lock().unwrap().frozen {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if down.load(Ordering::Relaxed) {
        stats.refused_while_down.fetch_add(1, Ordering::Relaxed);
        return Err(Reset);
    }
    // Blob uploads only (not container creation): the writer's PUTs.
    // (GCS's client percent-encodes every non-alphanumeric byte of the object name.)
    let path = req.uri().path().replace("%2E", ".").replace("%2e", ".").replace("%5F", "_").replace("%5f", "_");
    // Backup files only: kbackup's bookkeeping under `_kbackup/` (topic settings) is not what
    // the faults are aimed at.
    let is_put = req.method() == hyper::Method::PUT && path.contains(".json") && !path.contains("_kbackup");
    let (f, roll, stall, forced) = {
        let mut f = faults.lock().unwrap();
        let stall = if is_put { f.stall_once.take() } else { None };
        // Not on a stalled request: its client gives up before the outcome is delivered.
        let forced = if is_put && stall.is_none() { f.forced.pop_front() } else { None };
        (f.clone(), rng.lock().unwrap().random::<f64>(), stall, forced)
    };
    if let Some(d) = stall {
        stats.stalls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(d).await;
    }
    // A forced outcome replaces the roll (no probability band starts above 1).
    let mut edge = if forced.is_some() { 2.0 } else { 0.0 };
    let mut pick = |p: f64| {
        let hit = roll >= edge && roll < edge + p;
        edge += p;
        hit
    };
    if pick(f.p500) || forced == Some(Forced::E500) {
        stats.e500.fetch_add(1, Ordering::Relaxed);
        return Ok(error_response(StatusCode::INTERNAL_SERVER_ERROR));
    }
    if pick(f.p503) || forced == Some(Forced::E503) {
        stats.e503.fetch_add(1, Ordering::Relaxed);
        return Ok(error_response(StatusCode::SERVICE_UNAVAILABLE));
    }
    if pick(f.reset) {
        stats.resets.fetch_add(1, Ordering::Relaxed);
        return Err(Reset);
    }
    let slow = pick(f.slow);
    let applied_then_500 = pick(f.applied_then_500) || forced == Some(Forced::AppliedThen500);
    if slow {
        stats.slow.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|_| Reset)?.to_bytes();
    let url = format!("{upstream}{}", parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut fwd = client.request(parts.method.clone(), url).body(body);
    for (k, v) in parts.headers.iter() {
        use hyper::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
        if k != HOST && k != CONTENT_LENGTH && k != TRANSFER_ENCODING && k != CONNECTION {
            fwd = fwd.header(k, v);
        }
    }
    let conditional = parts.headers.contains_key("if-none-match") || parts.headers.contains_key("x-goog-if-generation-match");
    let resp = fwd.send().await.map_err(|_| Reset)?;
    if f.accept_second_create && parts.method == hyper::Method::PUT && conditional && matches!(resp.status().as_u16(), 409 | 412) {
        // Azure answers a create with 201, S3 and GCS with 200.
        let status = if resp.status().as_u16() == 409 { StatusCode::CREATED } else { StatusCode::OK };
        return Ok(Response::builder()
            .status(status)
            .header("etag", "\"0x8DD0000000000001\"")
            .header("last-modified", "Thu, 03 Dec 2026 00:00:00 GMT")
            .header("x-goog-generation", "1")
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    if applied_then_500 {
        stats.applied_then_500.fetch_add(1, Ordering::Relaxed);
        return Ok(error_response(StatusCode::INTERNAL_SERVER_ERROR));
    }
    let mut out = Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers() {
        use hyper::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
        if k != CONTENT_LENGTH && k != TRANSFER_ENCODING && k != CONNECTION {
            out = out.header(k, v);
        }
    }
    let bytes = resp.bytes().await.map_err(|_| Reset)?;
    Ok(out.body(Full::new(bytes)).unwrap())
}
