//! Prometheus metrics and the admin endpoint (`/metrics`, `/healthz`).
//!
//! Requests are counted in kube-apiserver's vocabulary, with a `tenant` label added where the
//! series are per tenant, so existing API server dashboards and alerts apply:
//! `apiserver_request_total` (kube's labels: verb as kube's metrics name it — `LIST`, `WATCH`,
//! `POST`, `APPLY`, ... — dry_run, group, version, resource, subresource, scope, component,
//! code), `apiserver_request_duration_seconds` (kube's buckets; by verb and resource, not by
//! tenant, to bound the series) and `apiserver_longrunning_requests` (open watches). vt's own:
//! `vt_tenants{phase}`, `vt_tenant_objects`, `vt_tenant_store_bytes`, and the syncers'
//! `vt_syncer_queue_depth`, `vt_syncer_sync_duration_seconds{kind}` and
//! `vt_syncer_sync_errors_total{tenant,kind,reason}`, `vt_tenant_wake_duration_seconds`, `vt_replica_tenants`, `vt_replica_handoffs_total`. Every label value is bounded: resources
//! come from the registry (unknown paths collapse to `""`), reasons from a fixed list.

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
use vt_apiserver::{RequestLabels, RequestObserver};

/// kube-apiserver's `component` label.
const COMPONENT: &str = "apiserver";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestTotalLabels {
    tenant: String,
    verb: &'static str,
    dry_run: &'static str,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: &'static str,
    component: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    verb: &'static str,
    dry_run: &'static str,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: &'static str,
    component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LongRunningLabels {
    tenant: String,
    verb: &'static str,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: &'static str,
    component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncErrorLabels {
    tenant: String,
    kind: &'static str,
    reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// kube-apiserver's `apiserver_request_duration_seconds` buckets.
fn request_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0,
        30.0, 45.0, 60.0,
    ])
}

fn sync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// The manager's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestTotalLabels, Counter>,
    durations: HistogramFamily<DurationLabels>,
    long_running: Family<LongRunningLabels, Gauge>,
    tenants: Family<PhaseLabels, Gauge>,
    objects: Family<TenantLabels, Gauge>,
    store_bytes: Family<TenantLabels, Gauge>,
    queue_depth: Family<TenantLabels, Gauge>,
    sync_durations: HistogramFamily<KindLabels>,
    sync_errors: Family<SyncErrorLabels, Counter>,
    wakes: Histogram,
    replica_tenants: Gauge,
    handoffs: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestTotalLabels, Counter>::default();
        let durations: HistogramFamily<DurationLabels> = Family::new_with_constructor(request_histogram);
        let long_running = Family::<LongRunningLabels, Gauge>::default();
        let tenants = Family::<PhaseLabels, Gauge>::default();
        let objects = Family::<TenantLabels, Gauge>::default();
        let store_bytes = Family::<TenantLabels, Gauge>::default();
        let queue_depth = Family::<TenantLabels, Gauge>::default();
        let sync_durations: HistogramFamily<KindLabels> = Family::new_with_constructor(sync_histogram);
        let sync_errors = Family::<SyncErrorLabels, Counter>::default();
        let wakes = sync_histogram();
        let replica_tenants = Gauge::default();
        let handoffs = Counter::default();
        registry.register("vt_replica_tenants", "Tenants this manager replica serves", replica_tenants.clone());
        registry.register(
            "vt_replica_handoffs",
            "Tenants this replica handed to another or took over from another",
            handoffs.clone(),
        );
        registry.register(
            "vt_tenant_wake_duration_seconds",
            "Time from a sleeping tenant's first request to its control plane serving",
            wakes.clone(),
        );
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each tenant, verb, dry run value, group, version, resource, scope, component, and HTTP response code.",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.",
            durations.clone(),
        );
        registry.register(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests (watches) broken out by tenant, verb, group, version, resource, scope and component.",
            long_running.clone(),
        );
        registry.register("vt_tenants", "Tenants, by phase", tenants.clone());
        registry.register("vt_tenant_objects", "Objects in each tenant's store", objects.clone());
        registry.register(
            "vt_tenant_store_bytes",
            "Bytes of the current objects in each tenant's store (values, not the file or history)",
            store_bytes.clone(),
        );
        registry.register("vt_syncer_queue_depth", "Keys waiting in each tenant's syncer queue", queue_depth.clone());
        registry.register(
            "vt_syncer_sync_duration_seconds",
            "Time of one syncer reconcile, by kind of object",
            sync_durations.clone(),
        );
        registry.register(
            "vt_syncer_sync_errors",
            "Failed syncer reconciles (retried), by tenant, kind and reason",
            sync_errors.clone(),
        );
        Metrics {
            registry,
            requests,
            durations,
            long_running,
            tenants,
            objects,
            store_bytes,
            queue_depth,
            sync_durations,
            sync_errors,
            wakes,
            replica_tenants,
            handoffs,
        }
    }
}

impl Metrics {
    /// This replica serves `n` tenants.
    pub fn replica_tenants(&self, n: usize) {
        self.replica_tenants.set(n as i64);
    }

    /// A tenant moved to or from this replica.
    pub fn handoff(&self) {
        self.handoffs.inc();
    }

    /// A sleeping tenant woke in `elapsed`.
    pub fn wake(&self, elapsed: Duration) {
        self.wakes.observe(elapsed.as_secs_f64());
    }
}

struct TenantObserver {
    metrics: Arc<Metrics>,
    tenant: String,
}

impl RequestObserver for TenantObserver {
    fn observe(&self, l: &RequestLabels, code: u16, elapsed: Duration) {
        let total = RequestTotalLabels {
            tenant: self.tenant.clone(),
            verb: l.verb,
            dry_run: l.dry_run,
            group: l.group.clone(),
            version: l.version.clone(),
            resource: l.resource.clone(),
            subresource: l.subresource.clone(),
            scope: l.scope,
            component: COMPONENT,
            code,
        };
        self.metrics.requests.get_or_create(&total).inc();
        let duration = DurationLabels {
            verb: l.verb,
            dry_run: l.dry_run,
            group: total.group,
            version: total.version,
            resource: total.resource,
            subresource: total.subresource,
            scope: l.scope,
            component: COMPONENT,
        };
        self.metrics.durations.get_or_create(&duration).observe(elapsed.as_secs_f64());
    }

    fn long_running(&self, l: &RequestLabels, delta: i64) {
        let labels = LongRunningLabels {
            tenant: self.tenant.clone(),
            verb: l.verb,
            group: l.group.clone(),
            version: l.version.clone(),
            resource: l.resource.clone(),
            subresource: l.subresource.clone(),
            scope: l.scope,
            component: COMPONENT,
        };
        self.metrics.long_running.get_or_create(&labels).inc_by(delta);
    }
}

impl vt_syncer::SyncObserver for Metrics {
    fn synced(&self, tenant: &str, kind: &'static str, elapsed: Duration, error: Option<&'static str>) {
        self.sync_durations.get_or_create(&KindLabels { kind }).observe(elapsed.as_secs_f64());
        if let Some(reason) = error {
            self.sync_errors.get_or_create(&SyncErrorLabels { tenant: tenant.to_string(), kind, reason }).inc();
        }
    }

    fn queue_depth(&self, tenant: &str, depth: usize) {
        self.queue_depth.get_or_create(&TenantLabels { tenant: tenant.to_string() }).set(depth as i64);
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

    /// Sets a tenant's object count and the bytes of its objects.
    pub fn set_objects(&self, tenant: &str, objects: i64, bytes: i64) {
        let labels = TenantLabels { tenant: tenant.to_string() };
        self.objects.get_or_create(&labels).set(objects);
        self.store_bytes.get_or_create(&labels).set(bytes);
    }

    /// Forgets a deleted tenant's series.
    pub fn forget(&self, tenant: &str) {
        let labels = TenantLabels { tenant: tenant.to_string() };
        self.objects.remove(&labels);
        self.store_bytes.remove(&labels);
        self.queue_depth.remove(&labels);
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
