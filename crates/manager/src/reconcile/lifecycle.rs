//! What the reconciler does besides reconciling: `vt sleep`/`vt wake` requests, and routing
//! the tenants that ran before at start.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::{Context, Error, secret_data};
use crate::pki::TenantPki;
use crate::tenant::{TENANT_LABEL, Tenant, host_namespace};

/// The annotation `vt sleep` and `vt wake` set: `Sleeping@<time>` (unless a request came
/// since) or `Awake@<time>`. The manager acts on it, removes it and answers in
/// [`REQUESTED_STATE_RESULT`]: the request, ` -> `, and `done` or why not.
pub const REQUESTED_STATE: &str = "vt.dev/requested-state";
/// See [`REQUESTED_STATE`].
pub const REQUESTED_STATE_RESULT: &str = "vt.dev/requested-state-result";

/// Acts on a `vt sleep`/`vt wake` request and removes it; the tenant's state after.
pub(super) async fn requested_state(
    ctx: &Context,
    t: &Tenant,
    asked: &str,
) -> Result<crate::controlplane::State, Error> {
    use crate::controlplane::State;
    let name = t.name_any();
    let (what, at) = asked.split_once('@').unwrap_or((asked, ""));
    let outcome = match what {
        "Sleeping" => {
            let since = at.parse::<jiff::Timestamp>().map_or(u64::MAX, |ts| ts.as_millisecond().max(0) as u64);
            match ctx.planes.sleep(&name, since).await.map_err(Error::ControlPlane)? {
                true => "done".to_string(),
                false => "refused: it has pods on the host, or a request came in first".to_string(),
            }
        }
        "Awake" => match ctx.planes.wake(&name).await {
            Some(_) => "done".to_string(),
            None => "refused: the control plane could not start (see the manager's log)".to_string(),
        },
        other => format!("refused: unknown state {other:?} (Sleeping or Awake)"),
    };
    let api: Api<Tenant> = Api::all(ctx.host.clone());
    let patch = json!({"metadata": {"annotations": {REQUESTED_STATE: null,
        REQUESTED_STATE_RESULT: format!("{asked} -> {outcome}")}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
    Ok(if ctx.planes.is_asleep(&name) { State::Asleep } else { State::Awake })
}

/// At start, before the reconciler gets to each tenant (thousands take a while): every tenant
/// that ran before, is not paused and has no pods on the host is routed at once, asleep, from
/// three host reads (Tenants, credentials, pods), so its first request can wake it right away.
/// (With replicas, ownership decides first: nothing is preloaded.)
pub(super) async fn preload(ctx: &Context) {
    if ctx.planes.replicas().is_some() {
        return;
    }
    let tenants: Api<Tenant> = Api::all(ctx.host.clone());
    let secrets: Api<Secret> = Api::namespaced(ctx.host.clone(), &ctx.planes.settings().namespace);
    let pods: Api<Pod> = Api::all(ctx.host.clone());
    let label = ListParams::default().labels(TENANT_LABEL);
    let (Ok(tenants), Ok(secrets), Ok(pods)) =
        (tenants.list(&ListParams::default()).await, secrets.list(&label).await, pods.list_metadata(&label).await)
    else {
        return;
    };
    let busy: std::collections::HashSet<String> = pods.items.iter().filter_map(|p| p.namespace()).collect();
    let credentials: BTreeMap<String, Secret> = secrets
        .items
        .into_iter()
        .filter(|s| s.metadata.name.as_deref().is_some_and(|n| n.ends_with("-pki")))
        .filter_map(|s| Some((s.labels().get(TENANT_LABEL)?.clone(), s)))
        .collect();
    let mut n = 0;
    for t in tenants.items {
        let name = t.name_any();
        let ran = t.status.as_ref().is_some_and(|s| matches!(s.phase.as_str(), "Ready" | "Sleeping"));
        if !ran || t.spec.paused || t.metadata.deletion_timestamp.is_some() || busy.contains(&host_namespace(&name)) {
            continue;
        }
        let Some(pki) = credentials.get(&name).and_then(|s| TenantPki::from_data(&secret_data(s.clone())).ok()) else {
            continue;
        };
        ctx.planes.preload_asleep(&name, &t.spec, &pki);
        // Its host objects were applied when it ran: until its turn to be re-applied (spread
        // over the next half hour), waking or sleeping only updates its status.
        ctx.applied_until(&t, super::preload_spread(&name));
        n += 1;
    }
    tracing::info!(tenants = n, "routed the tenants that ran before, asleep until their first request");
}
