//! Prometheus metrics and the admin endpoint (`/metrics`, `/healthz`): per-tenant request
//! counts by verb and code, per-tenant request latency, tenants by phase, objects per tenant.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use vt_apiserver::RequestObserver;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    tenant: String,
    verb: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

type HistogramFamily = Family<TenantLabels, Histogram, fn() -> Histogram>;

/// The manager's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    tenants: Family<PhaseLabels, Gauge>,
    objects: Family<TenantLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vt");
        let requests = Family::<RequestLabels, Counter>::default();
        fn hist() -> Histogram {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        }
        let latency: HistogramFamily = Family::new_with_constructor(hist);
        let tenants = Family::<PhaseLabels, Gauge>::default();
        let objects = Family::<TenantLabels, Gauge>::default();
        registry.register("apiserver_requests", "Requests served, by tenant, verb and code", requests.clone());
        registry.register("apiserver_request_duration_seconds", "Request latency, by tenant", latency.clone());
        registry.register("tenants", "Tenants, by phase", tenants.clone());
        registry.register("tenant_objects", "Objects in each tenant's store", objects.clone());
        Metrics { registry, requests, latency, tenants, objects }
    }
}

struct TenantObserver {
    metrics: Arc<Metrics>,
    tenant: String,
}

impl RequestObserver for TenantObserver {
    fn observe(&self, verb: &str, code: u16, elapsed: Duration) {
        let labels = RequestLabels { tenant: self.tenant.clone(), verb: verb.to_string(), code: code.to_string() };
        self.metrics.requests.get_or_create(&labels).inc();
        self.metrics
            .latency
            .get_or_create(&TenantLabels { tenant: self.tenant.clone() })
            .observe(elapsed.as_secs_f64());
    }
}

impl Metrics {
    /// The request observer of one tenant's API server.
    pub fn observer(self: &Arc<Self>, tenant: &str) -> Arc<dyn RequestObserver> {
        Arc::new(TenantObserver { metrics: self.clone(), tenant: tenant.to_string() })
    }

    /// Sets how many tenants are in each phase.
    pub fn set_phases(&self, counts: &[(String, i64)]) {
        self.tenants.clear();
        for (phase, n) in counts {
            self.tenants.get_or_create(&PhaseLabels { phase: phase.clone() }).set(*n);
        }
    }

    /// Sets a tenant's object count.
    pub fn set_objects(&self, tenant: &str, n: i64) {
        self.objects.get_or_create(&TenantLabels { tenant: tenant.to_string() }).set(n);
    }

    /// Forgets a deleted tenant's series.
    pub fn forget(&self, tenant: &str) {
        self.objects.remove(&TenantLabels { tenant: tenant.to_string() });
        self.latency.remove(&TenantLabels { tenant: tenant.to_string() });
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics` and `/healthz` on `listener` (plain HTTP, for scrapers and probes).
pub async fn serve_admin(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let (code, ctype, body) = match req.uri().path() {
                        "/metrics" => {
                            (200, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.encode())
                        }
                        "/healthz" | "/livez" | "/readyz" => (200, "text/plain", "ok".to_string()),
                        _ => (404, "text/plain", "not found".to_string()),
                    };
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .status(code)
                            .header("content-type", ctype)
                            .body(Full::new(Bytes::from(body)))
                            .expect("valid response"),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}
