//! The controllers every virtual cluster runs — what kube-controller-manager would run — in
//! process, on kube-runtime, against the cluster's own API server through an in-process client
//! ([`client::in_process`]): they use exactly the API tenants use. Watch-driven, with no
//! polling, so an idle cluster's controllers cost only their watches.
//!
//! Two sets: [`Set::Lifecycle`] is what an API server alone needs so that deletes complete
//! (namespace lifecycle, garbage collection, pod GC) — a standalone `vt apiserver` runs it;
//! [`Set::Full`] is what kube-controller-manager runs: those, ServiceAccounts and the root CA,
//! the workload controllers (Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs,
//! CronJobs), Endpoints and EndpointSlices, PodDisruptionBudget status, and the signer of
//! client certificate requests — every tenant and the embedded host run it.

pub mod client;
mod cron;
mod cronjob;
pub mod csrsigning;
mod daemonset;
mod deployment;
mod endpoints;
mod gc;
mod job;
pub mod namespace;
mod pdb;
mod podgc;
mod replicaset;
mod revisions;
mod serviceaccounts;
mod statefulset;
mod util;

use vt_apiserver::ApiServer;

/// Which controllers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Set {
    /// Namespace lifecycle, garbage collector, pod GC.
    Lifecycle,
    /// [`Set::Lifecycle`], ServiceAccounts and the root CA, and the workload, endpoint and
    /// disruption-budget controllers.
    Full,
}

/// The running controllers of one cluster; they stop when this is dropped.
pub struct Controllers {
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Controllers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the controllers of `api`'s cluster; `ca` is its CA: the certificate is published in
/// every namespace (`kube-root-ca.crt`), and with the key [`Set::Full`] signs approved client
/// certificate requests.
pub fn start(api: ApiServer, ca: &vt_pki::CertKey, set: Set) -> Controllers {
    let root_ca = ca.cert_pem.clone();
    let client = client::in_process(api);
    let spawn = |f: futures::future::BoxFuture<'static, ()>| tokio::spawn(f).abort_handle();
    let mut tasks = vec![
        spawn(Box::pin(namespace::run(client.clone()))),
        spawn(Box::pin(gc::run(client.clone()))),
        spawn(Box::pin(podgc::run(client.clone()))),
    ];
    if set == Set::Full {
        tasks.extend([
            spawn(Box::pin(serviceaccounts::run(client.clone(), root_ca))),
            spawn(Box::pin(replicaset::run(client.clone()))),
            spawn(Box::pin(deployment::run(client.clone()))),
            spawn(Box::pin(statefulset::run(client.clone()))),
            spawn(Box::pin(daemonset::run(client.clone()))),
            spawn(Box::pin(job::run(client.clone()))),
            spawn(Box::pin(cronjob::run(client.clone()))),
            spawn(Box::pin(endpoints::run(client.clone()))),
            spawn(Box::pin(pdb::run(client.clone()))),
        ]);
        match vt_pki::Ca::load(ca.clone()) {
            Ok(ca) => tasks.push(spawn(Box::pin(csrsigning::run(client, ca)))),
            Err(e) => tracing::warn!(error = %e, "no CA key: client certificate requests will not be signed"),
        }
    }
    Controllers { tasks }
}
