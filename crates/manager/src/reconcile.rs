//! The Tenant reconciler (a kube-rs Controller against the host cluster): the host namespace
//! and its guardrails, the tenant's credentials and kubeconfig Secrets, the control plane, pause
//! and resume, and cleanup when a Tenant is deleted.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::controlplane::ControlPlanes;
use crate::metrics::Metrics;
use crate::pki::TenantPki;
use crate::tenant::{Condition, FINALIZER, SecretRef, TENANT_LABEL, Tenant, TenantStatus, check_name, host_namespace};
use lifecycle::{preload, requested_state};

mod applied;
mod lifecycle;

pub use lifecycle::{REQUESTED_STATE, REQUESTED_STATE_RESULT};

/// How many Tenants are reconciled at once.
const RECONCILES: u16 = 16;

/// The field manager of everything the manager writes on the host.
pub const MANAGER: &str = "vt-manager";
/// Where earlier versions kept a tenant's PKI, in its host namespace (migrated on upgrade).
const LEGACY_PKI_SECRET: &str = "vt-pki";
/// Where earlier versions kept a tenant's admin kubeconfig, in its host namespace.
pub const KUBECONFIG_SECRET: &str = "vt-admin-kubeconfig";

/// The Secret holding a tenant's PKI (CA, serving and admin certificates, token key), in the
/// manager's namespace: never where the tenant's pods run.
pub fn pki_secret(tenant: &str) -> String {
    format!("vt-{tenant}-pki")
}

/// The Secret holding a tenant's admin kubeconfig (key `kubeconfig`), in the manager's
/// namespace.
pub fn kubeconfig_secret(tenant: &str) -> String {
    format!("vt-{tenant}-kubeconfig")
}

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host API failed.
    #[error("host API: {0}")]
    Kube(#[from] kube::Error),
    /// Starting the control plane failed.
    #[error("control plane: {0}")]
    ControlPlane(String),
    /// The finalizer machinery failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// Another manager replica owns the tenant (it cleans up).
    #[error("owned by another replica")]
    NotOwner,
}

/// What reconciles share.
pub struct Context {
    /// The host cluster.
    pub host: Client,
    /// The running control planes.
    pub planes: Arc<ControlPlanes>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Node pools to provision, if the manager owns the nodes.
    pub pools: Option<Arc<dyn crate::Pools>>,
    /// Each tenant's last phase, and how many are in each (the phase gauge).
    phases: Mutex<(HashMap<String, String>, BTreeMap<String, i64>)>,
    /// What each tenant's last full reconcile acted on, and when: see [`Applied`].
    applied: Mutex<HashMap<String, applied::Applied>>,
}

impl Context {
    /// A context for reconciling against `host`.
    pub fn new(
        host: Client,
        planes: Arc<ControlPlanes>,
        metrics: Arc<Metrics>,
        pools: Option<Arc<dyn crate::Pools>>,
    ) -> Context {
        Context {
            host,
            planes,
            metrics,
            pools,
            phases: Mutex::new((HashMap::new(), BTreeMap::new())),
            applied: Mutex::new(HashMap::new()),
        }
    }

    fn record_phase(&self, tenant: &str, phase: Option<&str>) {
        let mut guard = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        let (by_tenant, counts) = &mut *guard;
        let before = match phase {
            Some(ph) if by_tenant.get(tenant).map(String::as_str) == Some(ph) => return,
            Some(ph) => by_tenant.insert(tenant.to_string(), ph.to_string()),
            None => by_tenant.remove(tenant),
        };
        if let Some(b) = before
            && let Some(n) = counts.get_mut(&b)
        {
            *n -= 1;
        }
        if let Some(ph) = phase {
            *counts.entry(ph.to_string()).or_default() += 1;
        }
        self.metrics.set_phases(&counts.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>());
    }
}

/// When a tenant routed by the preload has its host objects re-applied: 5 s to 30 min after
/// the start, by a hash of its name.
fn preload_spread(name: &str) -> Duration {
    let h = name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    Duration::from_secs(5 + h % 1800)
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// Runs the reconciler until the stream of Tenants ends.
pub async fn run(ctx: Arc<Context>) {
    // A tenant that fell asleep or woke gets its status brought up to date.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    ctx.planes.on_sleep_change(tx);
    let c = ctx.clone();
    tokio::spawn(async move {
        let api: Api<Tenant> = Api::all(c.host.clone());
        while let Some(name) = rx.recv().await {
            // It woke or slept: its status (and host objects) are brought up to date now.
            c.planes.take_preloaded(&name);
            if let Ok(Some(t)) = api.get_opt(&name).await
                && t.metadata.deletion_timestamp.is_none()
                && let Err(e) = apply(Arc::new(t), c.clone()).await
            {
                tracing::debug!(tenant = %name, error = %e, "status after sleep or wake");
            }
        }
    });
    preload(&ctx).await;
    let tenants: Api<Tenant> = Api::all(ctx.host.clone());
    // At most 16 Tenants at a time: a burst of new Tenants (a script creating thousands) must
    // not start thousands of control planes at once — each holds files (its store), memory
    // and CPU until it is running or asleep, and together they ran the manager out of file
    // descriptors at 20,000 (measured: 9,000 Tenants created in a minute).
    Controller::new(tenants, watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(RECONCILES))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile failed");
            }
        })
        .await;
}

fn error_policy(t: Arc<Tenant>, e: &Error, _: Arc<Context>) -> Action {
    if matches!(e, Error::NotOwner) {
        return Action::requeue(Duration::from_secs(2));
    }
    tracing::warn!(tenant = %t.name_any(), error = %e, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(t: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Tenant> = Api::all(ctx.host.clone());
    finalizer(&api, FINALIZER, t, |event| async {
        match event {
            Event::Apply(t) => apply(t, ctx.clone()).await,
            Event::Cleanup(t) => cleanup(t, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn set_status(ctx: &Context, t: &Tenant, mut status: TenantStatus) -> Result<(), Error> {
    let ready = status.phase == "Ready";
    let old = t.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready")).cloned();
    let want = if ready { "True" } else { "False" };
    let time = match &old {
        Some(c) if c.status == want => c.last_transition_time.clone(),
        _ => now(),
    };
    status.conditions = vec![Condition {
        type_: "Ready".into(),
        status: want.into(),
        reason: if ready { "ControlPlaneRunning".into() } else { status.phase.clone() },
        message: status.message.clone(),
        last_transition_time: time,
    }];
    status.observed_generation = t.metadata.generation;
    status.owner = ctx.planes.replicas().map(|r| r.id().to_string());
    ctx.record_phase(&t.name_any(), Some(&status.phase));
    if t.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<Tenant> = Api::all(ctx.host.clone());
    api.patch_status(&t.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await?;
    Ok(())
}

async fn apply(t: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = t.name_any();
    if let Err(why) = check_name(&name).and_then(|_| t.spec.sleep_after().map(|_| ())) {
        set_status(&ctx, &t, TenantStatus { phase: "Failed".into(), message: why, ..Default::default() }).await?;
        return Ok(Action::await_change());
    }
    // With several replicas, only the tenant's owner acts for it (and writes its status).
    if let Some(r) = ctx.planes.replicas()
        && !r.owns(&name)
    {
        ctx.planes.stop(&name);
        return Ok(Action::await_change());
    }
    // Right after a restart, a tenant routed by the preload needs nothing from the host before
    // its first request (its host objects were applied when it ran): re-applying them for
    // every tenant at once would take the cores from the wakes (and, with 10,000 tenants,
    // from everything for minutes). They are spread over the next half hour instead (or done
    // when the tenant changes); a wake or sleep meanwhile only updates its status.
    if ctx.planes.take_preloaded(&name) {
        return Ok(Action::requeue(preload_spread(&name)));
    }
    // Nothing changed since the last full reconcile, and the tenant is as it left it. (A
    // tenant with ingress grants is always reconciled in full: whether it holds them depends
    // on the other tenants.)
    // It may have fallen asleep or woken since: its status says so, nothing more.
    if ctx.unchanged(&t) && t.spec.network.ingress_hosts.is_empty() {
        let phase = t.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
        let (awake, asleep) = (ctx.planes.api(&name).is_some(), ctx.planes.is_asleep(&name));
        match (phase, t.status.clone()) {
            ("Ready" | "Sleeping", Some(mut status)) if awake => {
                let (pods, objects) = counts(&ctx, &name).await;
                if let Some((n, bytes)) = objects {
                    ctx.metrics.set_objects(&name, n, bytes);
                }
                status.phase = "Ready".into();
                status.message = format!("serving as {}", ctx.planes.settings().server_name(&name));
                status.pods = pods.map(|(n, _)| n);
                status.objects = objects.map(|(n, _)| n);
                set_status(&ctx, &t, status).await?;
                return Ok(Action::requeue(Duration::from_secs(300)));
            }
            ("Ready" | "Sleeping", Some(mut status)) if asleep => {
                status.phase = "Sleeping".into();
                status.message =
                    format!("asleep: its first request wakes it ({})", ctx.planes.settings().server_name(&name));
                (status.pods, status.objects) = (None, None);
                set_status(&ctx, &t, status).await?;
                return Ok(Action::await_change());
            }
            ("Paused", _) if t.spec.paused => return Ok(Action::await_change()),
            _ => {}
        }
    }
    let ns = host_namespace(&name);
    guardrails(&ctx, &t, &ns).await?;
    let pki = credentials(&ctx, &name, &ns).await?;
    let own_ns = ctx.planes.settings().namespace.clone();
    let settings = ctx.planes.settings();
    let kubeconfig = crate::kubeconfig::render(
        &format!("vt-{name}"),
        &format!("https://{}", settings.advertise),
        pki.ca.cert_pem(),
        &pki.admin.cert_pem,
        &pki.admin.key_pem,
        Some(&settings.server_name(&name)),
    );
    let secrets: Api<Secret> = Api::namespaced(ctx.host.clone(), &own_ns);
    let kc_name = kubeconfig_secret(&name);
    let kc_secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": kc_name, "labels": {TENANT_LABEL: name}},
        "type": "Opaque",
        "stringData": {"kubeconfig": kubeconfig},
    });
    secrets.patch(&kc_name, &apply_params(), &Patch::Apply(kc_secret)).await?;
    // The copy earlier versions kept where the tenant's pods run goes.
    let legacy: Api<Secret> = Api::namespaced(ctx.host.clone(), &ns);
    delete_if_present(&legacy, KUBECONFIG_SECRET).await?;
    let secret_ref = Some(SecretRef { namespace: own_ns.clone(), name: kc_name });
    let endpoint = format!("https://{}", settings.advertise);
    if t.spec.paused {
        ctx.planes.pause(&name, &pki).await.map_err(Error::ControlPlane)?;
        let pods: Api<Pod> = Api::namespaced(ctx.host.clone(), &ns);
        pods.delete_collection(&DeleteParams::default(), &ListParams::default()).await?;
        set_status(
            &ctx,
            &t,
            TenantStatus {
                phase: "Paused".into(),
                message: "the control plane is stopped and the tenant's pods are removed".into(),
                endpoint,
                kubeconfig_secret: secret_ref,
                ..Default::default()
            },
        )
        .await?;
        ctx.applied(&t);
        return Ok(Action::await_change());
    }
    let (spec, withheld) = ingress_grants(&ctx, &t).await?;
    // A tenant that ran before this manager started may come back asleep.
    let ran = t.status.as_ref().is_some_and(|s| matches!(s.phase.as_str(), "Ready" | "Sleeping"));
    let mut state = ctx.planes.ensure(&name, &spec, &pki, ran).await.map_err(Error::ControlPlane)?;
    // `vt sleep` / `vt wake`.
    if let Some(asked) = t.annotations().get(REQUESTED_STATE).cloned() {
        state = requested_state(&ctx, &t, &asked).await?;
    }
    if state == crate::controlplane::State::Asleep {
        set_status(
            &ctx,
            &t,
            TenantStatus {
                phase: "Sleeping".into(),
                message: format!("asleep: its first request wakes it ({})", settings.server_name(&name)),
                endpoint,
                kubeconfig_secret: secret_ref,
                dns: ctx.planes.dns_status(&name),
                ..Default::default()
            },
        )
        .await?;
        ctx.applied(&t);
        return Ok(Action::await_change());
    }
    if let Some(pools) = &ctx.pools {
        pools.ensure(&t.spec.isolation.pool(&name)).await.map_err(Error::ControlPlane)?;
    }
    let (pods, objects) = counts(&ctx, &name).await;
    if let Some((n, bytes)) = objects {
        ctx.metrics.set_objects(&name, n, bytes);
    }
    set_status(
        &ctx,
        &t,
        TenantStatus {
            phase: "Ready".into(),
            message: format!("serving as {}{withheld}", settings.server_name(&name)),
            endpoint,
            kubeconfig_secret: secret_ref,
            pods: pods.map(|(n, _)| n),
            objects: objects.map(|(n, _)| n),
            dns: ctx.planes.dns_status(&name),
            ..Default::default()
        },
    )
    .await?;
    ctx.applied(&t);
    // Counts are refreshed now and then; nothing else changes without a Tenant event.
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The tenant's spec with the Ingress host names it may not have withheld, and a note saying
/// which and why: names that are not DNS names, names under the ingress domain (they belong to
/// tenants by name), and names another tenant was granted first (by creation time, then name)
/// — two tenants never claim one name.
async fn ingress_grants(ctx: &Context, t: &Tenant) -> Result<(crate::tenant::TenantSpec, String), Error> {
    let mut spec = t.spec.clone();
    if spec.network.ingress_hosts.is_empty() {
        return Ok((spec, String::new()));
    }
    let domain = &ctx.planes.settings().ingress_domain;
    let others: Api<Tenant> = Api::all(ctx.host.clone());
    let key = |x: &Tenant| (x.metadata.creation_timestamp.clone().map(|c| c.0), x.name_any());
    let earlier: Vec<Tenant> =
        others.list(&ListParams::default()).await?.items.into_iter().filter(|o| key(o) < key(t)).collect();
    let mut notes = Vec::new();
    spec.network.ingress_hosts.retain(|g| {
        if let Some(why) = vt_syncer::ingress::invalid_grant(g, domain) {
            notes.push(why);
            return false;
        }
        let holder = earlier
            .iter()
            .find(|o| o.spec.network.ingress_hosts.iter().any(|h| vt_syncer::ingress::grants_overlap(g, h)));
        match holder {
            Some(o) => {
                notes.push(format!("{g:?} overlaps a name granted to tenant {:?}", o.name_any()));
                false
            }
            None => true,
        }
    });
    let note = if notes.is_empty() { String::new() } else { format!("; ingress hosts withheld: {}", notes.join("; ")) };
    Ok((spec, note))
}

/// Pods and objects in a tenant's store, each with the bytes of their values.
async fn counts(ctx: &Context, tenant: &str) -> (Option<(i64, i64)>, Option<(i64, i64)>) {
    let Some(api) = ctx.planes.api(tenant) else { return (None, None) };
    let count = |prefix: &'static str| {
        let store = api.store().clone();
        async move {
            let (mut n, mut bytes) = (0i64, 0i64);
            let mut opts = vt_store::ListOptions { limit: 1000, ..Default::default() };
            loop {
                let Ok(page) = store.list(prefix.as_bytes(), opts.clone()).await else { return None };
                n += page.kvs.len() as i64;
                bytes += page.kvs.iter().map(|kv| (kv.key.len() + kv.value.len()) as i64).sum::<i64>();
                if !page.more {
                    return Some((n, bytes));
                }
                opts.revision = page.revision;
                opts.start = page.kvs.last().map(|kv| vt_store::key_successor(&kv.key));
            }
        }
    };
    (count("/registry/core/pods/").await, count("/registry/").await)
}

/// The host namespace and its guardrails: Pod Security labels, a ResourceQuota, a LimitRange
/// and a default-deny NetworkPolicy allowing DNS and traffic within the tenant.
async fn guardrails(ctx: &Context, t: &Tenant, ns: &str) -> Result<(), Error> {
    let name = t.name_any();
    let level = t.spec.isolation.security_level();
    let labels = json!({
        TENANT_LABEL: name,
        "pod-security.kubernetes.io/enforce": level,
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": level,
        "pod-security.kubernetes.io/audit": level,
    });
    let namespaces: Api<Namespace> = Api::all(ctx.host.clone());
    namespaces
        .patch(
            ns,
            &apply_params(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})),
        )
        .await?;
    let hard = host_quota(&t.spec.quota);
    // The manager's pods: selected in the manager's namespace only, so a tenant pod carrying
    // the same labels (in its own namespace) is never mistaken for the manager.
    let manager = json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ctx.planes.settings().namespace}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "vt"}},
    });
    let objects = [
        json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "vt-quota", "namespace": ns, "labels": {TENANT_LABEL: name}},
            "spec": {"hard": hard}}),
        json!({"apiVersion": "v1", "kind": "LimitRange",
            "metadata": {"name": "vt-defaults", "namespace": ns, "labels": {TENANT_LABEL: name}},
            "spec": {"limits": [{"type": "Container",
                "defaultRequest": {"cpu": "50m", "memory": "64Mi"},
                "default": {"cpu": "1", "memory": "1Gi"}}]}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "vt-isolation", "namespace": ns, "labels": {TENANT_LABEL: name}},
        "spec": {
            // The wall: every pod of the tenant is isolated; what always passes is the manager
            // (its API server, its DNS, its calls to the tenant's webhooks) and the host's DNS.
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [manager]}],
            "egress": [
                {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                 "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"to": [manager]}
            ]
        }}),
        // Inside the wall, as in a cluster without policies: a pod no tenant policy isolates
        // talks to and is reached by every pod of the tenant. A pod a tenant policy selects
        // (the syncer labels it) gets exactly what its policies allow.
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "vt-open-ingress", "namespace": ns, "labels": {TENANT_LABEL: name}},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": vt_syncer::netpol::ISOLATED_INGRESS, "operator": "DoesNotExist"}]},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {}}]}]
        }}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "vt-open-egress", "namespace": ns, "labels": {TENANT_LABEL: name}},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": vt_syncer::netpol::ISOLATED_EGRESS, "operator": "DoesNotExist"}]},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {}}]}]
        }}),
    ];
    for obj in objects {
        let kind = obj["kind"].as_str().unwrap_or("");
        let obj_name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let (group, version, plural) = match kind {
            "ResourceQuota" => ("", "v1", "resourcequotas"),
            "LimitRange" => ("", "v1", "limitranges"),
            _ => ("networking.k8s.io", "v1", "networkpolicies"),
        };
        let ar = kube::discovery::ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() { version.into() } else { format!("{group}/{version}") },
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(ctx.host.clone(), ns, &ar);
        api.patch(&obj_name, &apply_params(), &Patch::Apply(obj)).await?;
    }
    Ok(())
}

/// The host ResourceQuota of a tenant: what its Tenant sets, 500 pods if it sets no pod
/// count, and no node ports or load balancers unless it grants them — node ports are one
/// range for the whole host, so one tenant could otherwise take them all.
pub fn host_quota(spec: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut hard = spec.clone();
    if spec.is_empty() {
        hard.insert("pods".into(), "500".into());
    }
    hard.entry("services.nodeports".into()).or_insert_with(|| "0".into());
    hard.entry("services.loadbalancers".into()).or_insert_with(|| "0".into());
    hard
}

async fn delete_if_present(api: &Api<Secret>, name: &str) -> Result<(), Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn secret_data(s: Secret) -> BTreeMap<String, Vec<u8>> {
    s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()
}

/// The tenant's credentials, created once and kept in the manager's namespace. A tenant whose
/// credentials an earlier version kept in its host namespace keeps them — same CA, same keys,
/// so its clients keep working — moved to the manager's namespace.
async fn credentials(ctx: &Context, tenant: &str, ns: &str) -> Result<TenantPki, Error> {
    let own_ns = &ctx.planes.settings().namespace;
    let secrets: Api<Secret> = Api::namespaced(ctx.host.clone(), own_ns);
    let name = pki_secret(tenant);
    if let Some(s) = secrets.get_opt(&name).await? {
        let version = s.metadata.resource_version.clone();
        let mut pki = TenantPki::from_data(&secret_data(s)).map_err(Error::ControlPlane)?;
        // Credentials from before the front proxy get its CA, written only if nobody else
        // wrote theirs first (the resourceVersion precondition).
        if let Some(added) = pki.front_proxy_data(tenant).map_err(Error::ControlPlane)? {
            let patch = json!({"metadata": {"resourceVersion": version}, "stringData": added});
            match secrets.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let s = secrets.get(&name).await?;
                    return TenantPki::from_data(&secret_data(s)).map_err(Error::ControlPlane);
                }
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(pki);
    }
    let legacy: Api<Secret> = Api::namespaced(ctx.host.clone(), ns);
    if let Some(old) = legacy.get_opt(LEGACY_PKI_SECRET).await? {
        let data = secret_data(old);
        let pki = TenantPki::from_data(&data).map_err(Error::ControlPlane)?;
        let moved: Secret = vt_apiserver::object::from_value(json!({
            "metadata": {"name": name, "labels": {TENANT_LABEL: tenant}},
            "type": "Opaque",
            "stringData": pki.to_data(),
        }))
        .map_err(|e| Error::ControlPlane(e.to_string()))?;
        match secrets.create(&PostParams::default(), &moved).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        delete_if_present(&legacy, LEGACY_PKI_SECRET).await?;
        tracing::info!(tenant, namespace = %own_ns, "moved the tenant's credentials out of its host namespace");
        return Ok(pki);
    }
    let settings = ctx.planes.settings();
    let mut names = vec![
        settings.server_name(tenant),
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
    ];
    names.dedup();
    let mut ips = vec![settings.endpoint.ip()];
    if let Some(host) = settings.advertise.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']']))
        && let Ok(ip) = host.parse::<std::net::IpAddr>()
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    let pki = TenantPki::generate(tenant, &names, &ips).map_err(Error::ControlPlane)?;
    let secret: Secret = vt_apiserver::object::from_value(json!({
        "metadata": {"name": name, "labels": {TENANT_LABEL: tenant}},
        "type": "Opaque",
        "stringData": pki.to_data(),
    }))
    .map_err(|e| Error::ControlPlane(e.to_string()))?;
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(pki),
        // Another reconcile won the race: use what it stored.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let s = secrets.get(&name).await?;
            TenantPki::from_data(&secret_data(s)).map_err(Error::ControlPlane)
        }
        Err(e) => Err(e.into()),
    }
}

/// A deleted Tenant: stop its control plane, delete its host namespace (and with it every
/// host object of the tenant) and its data.
async fn cleanup(t: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = t.name_any();
    ctx.forget_applied(&name);
    ctx.planes.stop(&name);
    if let Some(r) = ctx.planes.replicas()
        && !r.owns(&name)
    {
        return Err(Error::NotOwner);
    }
    let namespaces: Api<Namespace> = Api::all(ctx.host.clone());
    match namespaces.delete(&host_namespace(&name), &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    // A pool named after the tenant is the tenant's own; shared pools stay.
    if let Some(pools) = &ctx.pools
        && t.spec.isolation.pool(&name) == name
    {
        pools.remove(&name).await.map_err(Error::ControlPlane)?;
    }
    let own: Api<Secret> = Api::namespaced(ctx.host.clone(), &ctx.planes.settings().namespace);
    delete_if_present(&own, &pki_secret(&name)).await?;
    delete_if_present(&own, &kubeconfig_secret(&name)).await?;
    let dir = ctx.planes.settings().tenant_dir(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::ControlPlane(format!("{}: {e}", dir.display())))?;
    }
    ctx.record_phase(&name, None);
    ctx.metrics.forget(&name);
    if let Some(r) = ctx.planes.replicas() {
        r.forget(ctx.host.clone(), &name).await;
    }
    Ok(Action::await_change())
}

/// The tenant's status as JSON (for the CLI).
pub fn status_json(t: &Tenant) -> Value {
    vt_apiserver::object::to_value(t.status.clone().unwrap_or_default()).unwrap_or(Value::Null)
}
