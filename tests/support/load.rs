//! Steady load on tenants, as a well-behaved Kubernetes client sees it: each tenant's loop
//! creates a ConfigMap and reads it back, over and over, on one kube-rs client (kept-alive
//! connections). kube-rs itself retries 429, 503 and 504 after their `Retry-After` (as
//! client-go does); what reaches this loop is counted: a 429 it retries once more, and a
//! request whose connection broke, retried (a create retried after a break may find its
//! object there: that counts as acknowledged). Anything else is a failure, kept with its
//! message. Shared by the
//! replica test (`tests/replicas.rs`) and benchmark (`benches/replicas.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};

/// What the load saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Operations that succeeded (after retries, if any).
    pub ok: usize,
    /// 429s retried after their `Retry-After`.
    pub retried_after: usize,
    /// Broken connections retried.
    pub resets: usize,
    /// Operations that failed, with why.
    pub failed: Vec<String>,
    /// `(tenant, ConfigMap)` of every acknowledged create.
    pub acked: Vec<(String, String)>,
    /// The longest an operation took, retries included.
    pub slowest: Duration,
}

/// A running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Tally>,
}

enum Outcome<T> {
    Done(T),
    Failed(String),
}

/// One operation, retried as client-go would: `create` says whether a 409 on a retry means
/// an earlier attempt landed.
async fn retrying<T, F, Fut>(tally: &mut Tally, create: bool, mut op: F) -> Outcome<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let t0 = Instant::now();
    let mut attempt = 0;
    let out = loop {
        if t0.elapsed() > Duration::from_secs(60) {
            break Outcome::Failed("still failing after 60 s of retries".into());
        }
        match op().await {
            Ok(v) => break Outcome::Done(Some(v)),
            Err(kube::Error::Api(s)) if s.code == 429 => {
                tally.retried_after += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(kube::Error::Api(s)) if s.code == 409 && create && attempt > 0 => break Outcome::Done(None),
            Err(kube::Error::Api(s)) => break Outcome::Failed(format!("{} {}: {}", s.code, s.reason, s.message)),
            Err(_) => {
                tally.resets += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        attempt += 1;
    };
    tally.slowest = tally.slowest.max(t0.elapsed());
    out
}

async fn tenant_loop(tenant: String, kubeconfig: String, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("client config");
    let client = kube::Client::try_from(cfg).expect("client");
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let pp = PostParams::default();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let name = format!("load-{i}");
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "data": {"i": i.to_string()}
        }))
        .expect("configmap");
        match retrying(&mut tally, true, || api.create(&pp, &cm)).await {
            Outcome::Done(_) => {
                tally.ok += 1;
                tally.acked.push((tenant.clone(), name.clone()));
            }
            Outcome::Failed(why) => {
                tally.failed.push(format!("{tenant}: create {name}: {why}"));
                continue;
            }
        }
        match retrying(&mut tally, false, || api.get(&name)).await {
            Outcome::Done(Some(got)) if got.data.as_ref().and_then(|d| d.get("i")) == Some(&i.to_string()) => {
                tally.ok += 1
            }
            Outcome::Done(got) => tally.failed.push(format!("{tenant}: get {name}: wrong object {got:?}")),
            Outcome::Failed(why) => tally.failed.push(format!("{tenant}: get {name}: {why}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tally
}

impl Load {
    /// Starts a loop per `(tenant, kubeconfig)`.
    pub fn start(tenants: Vec<(String, String)>) -> Load {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let loops: Vec<_> =
                    tenants.into_iter().map(|(t, kc)| tokio::spawn(tenant_loop(t, kc, flag.clone()))).collect();
                let mut all = Tally::default();
                for l in loops {
                    let t = l.await.expect("load loop");
                    all.ok += t.ok;
                    all.retried_after += t.retried_after;
                    all.resets += t.resets;
                    all.failed.extend(t.failed);
                    all.acked.extend(t.acked);
                    all.slowest = all.slowest.max(t.slowest);
                }
                all
            })
        });
        Load { stop, thread }
    }

    /// Stops the loops (each finishes its operation) and says what they saw.
    pub fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("load thread")
    }
}
