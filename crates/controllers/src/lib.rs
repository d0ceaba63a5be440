//! The controllers every virtual cluster runs — what kube-controller-manager would run — in
//! process, on kube-runtime, against the cluster's own API server through an in-process client
//! ([`client::in_process`]): they use exactly the API tenants use. Watch-driven, with no
//! polling, so an idle cluster's controllers cost only their watches.

pub mod client;
mod deployment;
mod endpoints;
mod gc;
mod replicaset;
mod serviceaccounts;
mod util;

use vt_apiserver::ApiServer;

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

/// Starts the controllers of `api`'s cluster; `root_ca` is the CA published in every namespace
/// (`kube-root-ca.crt`).
pub fn start(api: ApiServer, root_ca: String) -> Controllers {
    let client = client::in_process(api);
    let tasks = vec![
        tokio::spawn(serviceaccounts::run(client.clone(), root_ca)).abort_handle(),
        tokio::spawn(replicaset::run(client.clone())).abort_handle(),
        tokio::spawn(deployment::run(client.clone())).abort_handle(),
        tokio::spawn(endpoints::run(client.clone())).abort_handle(),
        tokio::spawn(gc::run(client)).abort_handle(),
    ];
    Controllers { tasks }
}
