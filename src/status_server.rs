//! The HTTP endpoint for operators: `/metrics`, `/health/live`, `/health/ready`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::health::Health;

/// Why the status endpoint could not be opened; each names `--metrics-addr`.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("--metrics-addr `{0}` is not HOST:PORT (e.g. 127.0.0.1:9464, localhost:9470, 0.0.0.0:9464, or `off`)")]
    BadAddr(String),
    #[error("--metrics-addr {addr}: the port is taken (another kbackup on this host?); give each copy its own --metrics-addr HOST:PORT (or KBACKUP_METRICS_ADDR), or `off`")]
    InUse { addr: String },
    #[error("--metrics-addr {addr}: {source}")]
    Io { addr: String, source: std::io::Error },
}

/// Resolves `addr` (`host:port`, host names allowed) to the first address it names.
pub async fn resolve(addr: &str) -> Result<SocketAddr, BindError> {
    let bad = || BindError::BadAddr(addr.to_string());
    if addr.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
        return Err(bad());
    }
    tokio::net::lookup_host(addr).await.map_err(|_| bad())?.next().ok_or_else(bad)
}

/// Binds `addr` and serves until the process exits.
pub async fn serve(addr: SocketAddr, metrics: PrometheusHandle, health: Arc<Health>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => BindError::InUse { addr: addr.to_string() },
        _ => BindError::Io { addr: addr.to_string(), source: e },
    })?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, health) = (metrics.clone(), health.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (metrics, health) = (metrics.clone(), health.clone());
                    async move { Ok::<_, std::convert::Infallible>(route(req.uri().path(), &metrics, &health)) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
            });
        }
    });
    Ok(bound)
}

fn route(path: &str, metrics: &PrometheusHandle, health: &Health) -> Response<Full<Bytes>> {
    let text = |code: StatusCode, body: String| {
        Response::builder()
            .status(code)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .expect("static response")
    };
    match path {
        "/metrics" => Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(metrics.render())))
            .expect("static response"),
        "/health/live" => match health.live() {
            Ok(()) => text(StatusCode::OK, "live\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not live: {why}\n")),
        },
        "/health/ready" => match health.ready() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "try /metrics, /health/live or /health/ready\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_with_host_names_and_mistakes() {
        assert_eq!(resolve("127.0.0.1:9470").await.unwrap().port(), 9470);
        assert!(resolve("localhost:9470").await.unwrap().ip().is_loopback());
        for bad in ["9464", "localhost", ":9464", "127.0.0.1:99999"] {
            assert!(matches!(resolve(bad).await, Err(BindError::BadAddr(_))), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_taken_port_names_the_flag() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle();
        let e = serve(addr, handle, Arc::new(Health::default())).await.unwrap_err().to_string();
        assert!(e.contains("--metrics-addr") && e.contains("port is taken"), "{e}");
    }
}
