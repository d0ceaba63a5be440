//! A tenant's lifecycle from the command line: `vt pause`/`vt resume` (stopped on purpose, pods
//! removed) and `vt sleep`/`vt wake` (the control plane out of memory until its next request).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use vt_manager::reconcile::{REQUESTED_STATE, REQUESTED_STATE_RESULT};
use vt_manager::tenant::{Tenant, host_namespace};

use crate::tenants::{HostArgs, explain, get_tenant, host, phase, wait_phase};

/// `vt pause` and `vt resume`.
pub async fn set_paused(host_args: &HostArgs, name: &str, paused: bool, timeout: Duration) -> Result<(), String> {
    let client = host(host_args).await?;
    let api: Api<Tenant> = Api::all(client);
    get_tenant(&api, name).await?;
    api.patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"paused": paused}})))
        .await
        .map_err(explain)?;
    let (want, what) = if paused { ("Paused", "pausing") } else { ("Ready", "resuming") };
    wait_phase(&api, name, &[want], timeout, what).await?;
    println!("tenant {name} is {}", want.to_lowercase());
    Ok(())
}

/// `vt sleep`: the tenant sleeps now (unless its pods run on the host, or a request comes in
/// first); `vt wake`: it serves again now rather than at its next request.
pub async fn set_sleeping(host_args: &HostArgs, name: &str, sleep: bool, timeout: Duration) -> Result<(), String> {
    let client = host(host_args).await?;
    let api: Api<Tenant> = Api::all(client.clone());
    let t = get_tenant(&api, name).await?;
    let now = phase(&t);
    if matches!(now.as_str(), "Paused" | "Failed" | "Pending") {
        return Err(format!("tenant {name:?} is {}: only a running tenant sleeps or wakes", now.to_lowercase()));
    }
    if sleep {
        let pods: Api<Pod> = Api::namespaced(client, &host_namespace(name));
        let n = pods.list_metadata(&ListParams::default()).await.map_err(explain)?.items.len();
        if n > 0 {
            return Err(format!(
                "tenant {name:?} has {n} pod(s) on the host: a tenant stays awake while its pods run \
                 (`vt pause {name}` stops them)"
            ));
        }
    }
    let asked = format!("{}@{}", if sleep { "Sleeping" } else { "Awake" }, jiff::Timestamp::now());
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {REQUESTED_STATE: asked}}})),
    )
    .await
    .map_err(explain)?;
    // The manager answers in an annotation (the phase alone could already have moved on: a
    // request may wake the tenant right after it fell asleep).
    let deadline = Instant::now() + timeout;
    let outcome = loop {
        let t = get_tenant(&api, name).await?;
        if let Some(r) = t.annotations().get(REQUESTED_STATE_RESULT)
            && let Some(outcome) = r.strip_prefix(&format!("{asked} -> "))
        {
            break outcome.to_string();
        }
        if Instant::now() > deadline {
            return Err(format!("the manager did not act on the request within {}s", timeout.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if outcome != "done" {
        return Err(format!("tenant {name:?} was not {}: {outcome}", if sleep { "put to sleep" } else { "woken" }));
    }
    println!("tenant {name} is {}", if sleep { "asleep" } else { "awake" });
    Ok(())
}
