//! The DaemonSet controller: one pod on every node of the cluster that the template fits (node
//! name, node selector, required node affinity, taints with `NoSchedule`/`NoExecute` against
//! the template's tolerations plus the ones kube adds to daemon pods), pinned to its node by
//! node affinity on `metadata.name` as kube does, and none elsewhere. Templates are versioned
//! as ControllerRevisions; `RollingUpdate` replaces pods within `maxUnavailable` (or surges by
//! `maxSurge`), `OnDelete` only when the user deletes them. Nodes are watched once per cluster
//! and only changes that matter (labels, taints, schedulability, existence) wake DaemonSets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec, Toleration};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::revisions;
use crate::statefulset::REVISION_LABEL;
use crate::util::{self, Error, Result, Result2};

struct Ctx {
    client: Client,
    nodes: Store<Node>,
}

/// What about a node decides where daemons run.
fn fingerprint(node: &Node) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.labels().hash(&mut h);
    let spec = node.spec.clone().unwrap_or_default();
    spec.unschedulable.hash(&mut h);
    for t in spec.taints.iter().flatten() {
        (&t.key, &t.value, &t.effect).hash(&mut h);
    }
    h.finish()
}

/// A trigger each time the nodes change in a way that matters.
fn node_changes(events: impl Stream<Item = watcher::Result<watcher::Event<Node>>>) -> impl Stream<Item = ()> {
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut initial: HashMap<String, u64> = HashMap::new();
    events.filter_map(move |e| {
        let fire = match e {
            Ok(watcher::Event::Apply(n)) => seen.insert(n.name_any(), fingerprint(&n)) != Some(fingerprint(&n)),
            Ok(watcher::Event::Delete(n)) => seen.remove(&n.name_any()).is_some(),
            Ok(watcher::Event::Init) => {
                initial.clear();
                false
            }
            Ok(watcher::Event::InitApply(n)) => {
                initial.insert(n.name_any(), fingerprint(&n));
                false
            }
            Ok(watcher::Event::InitDone) => {
                let changed = initial != seen;
                seen = std::mem::take(&mut initial);
                changed
            }
            Err(_) => false,
        };
        futures::future::ready(fire.then_some(()))
    })
}

/// Runs the controller until the client's server goes away.
pub async fn run(client: Client) {
    let (reader, writer) = reflector::store();
    let nodes = reflector::reflector(writer, watcher(Api::<Node>::all(client.clone()), watcher::Config::default()));
    let sets: Api<DaemonSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    Controller::new(sets, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .reconcile_all_on(node_changes(nodes))
        .run(reconcile, util::retry, Arc::new(Ctx { client, nodes: reader }))
        .for_each(|_| async {})
        .await;
}

fn tolerates(tolerations: &[Toleration], key: &str, value: &str, effect: &str) -> bool {
    tolerations.iter().any(|t| {
        let exists = t.operator.as_deref() == Some("Exists");
        let key_ok = t.key.as_deref().unwrap_or("").is_empty() && exists || t.key.as_deref() == Some(key);
        let value_ok = exists || t.value.as_deref().unwrap_or("") == value;
        let effect_ok = t.effect.as_deref().unwrap_or("").is_empty() || t.effect.as_deref() == Some(effect);
        key_ok && value_ok && effect_ok
    })
}

fn expression_matches(op: &str, value: Option<&str>, values: &[String]) -> bool {
    match op {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(a), Some(b)) =
                (value.and_then(|v| v.parse::<i64>().ok()), values.first().and_then(|v| v.parse::<i64>().ok()))
            else {
                return false;
            };
            if op == "Gt" { a > b } else { a < b }
        }
        _ => false,
    }
}

/// The tolerations kube gives every daemon pod.
fn daemon_tolerations(spec: &PodSpec) -> Vec<Toleration> {
    let mut out = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        out.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    out.into_iter()
        .map(|(k, e)| Toleration {
            key: Some(k.into()),
            operator: Some("Exists".into()),
            effect: Some(e.into()),
            ..Default::default()
        })
        .collect()
}

/// Whether a daemon pod of `spec` should run on `node`.
fn fits(spec: &PodSpec, node: &Node) -> bool {
    let name = node.name_any();
    if spec.node_name.as_deref().is_some_and(|n| !n.is_empty() && n != name) {
        return false;
    }
    let labels = node.labels();
    if spec.node_selector.iter().flatten().any(|(k, v)| labels.get(k) != Some(v)) {
        return false;
    }
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|r| r.node_selector_terms.clone())
        .unwrap_or_default();
    if !terms.is_empty()
        && !terms.iter().any(|t| {
            t.match_expressions.iter().flatten().all(|e| {
                expression_matches(
                    &e.operator,
                    labels.get(&e.key).map(String::as_str),
                    e.values.as_deref().unwrap_or(&[]),
                )
            }) && t.match_fields.iter().flatten().all(|e| {
                let v = (e.key == "metadata.name").then_some(name.as_str());
                expression_matches(&e.operator, v, e.values.as_deref().unwrap_or(&[]))
            })
        })
    {
        return false;
    }
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    tolerations.extend(daemon_tolerations(spec));
    let mut taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        taints.push(k8s_openapi::api::core::v1::Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
    }
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerates(&tolerations, &t.key, t.value.as_deref().unwrap_or(""), &t.effect))
}

/// The node a daemon pod belongs to: where it is bound, else where its affinity pins it.
fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

fn new_pod(
    ds: &DaemonSet,
    template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
    hash: &str,
    node: &str,
) -> Pod {
    let ns = ds.namespace().unwrap_or_default();
    let mut pod = util::pod_from_template(template, &ns, &util::controller_ref(ds));
    pod.metadata.generate_name = Some(format!("{}-", ds.name_any()));
    let labels = pod.metadata.labels.get_or_insert_default();
    labels.insert(REVISION_LABEL.into(), hash.into());
    labels.insert("pod-template-generation".into(), ds.metadata.generation.unwrap_or(1).to_string());
    if let Some(spec) = pod.spec.as_mut() {
        let pin = json!({"key": "metadata.name", "operator": "In", "values": [node]});
        let mut affinity =
            vt_apiserver::object::to_value(spec.affinity.clone().unwrap_or_default()).unwrap_or_default();
        let terms = affinity
            .pointer("/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // kube replaces each term's matchFields with the node pin (one term if there were none).
        let terms: Vec<Value> = if terms.is_empty() {
            vec![json!({"matchFields": [pin]})]
        } else {
            terms
                .into_iter()
                .map(|mut t| {
                    t["matchFields"] = json!([pin]);
                    t
                })
                .collect()
        };
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] =
            json!({"nodeSelectorTerms": terms});
        spec.affinity = vt_apiserver::object::from_value(affinity).ok();
        let extra = daemon_tolerations(spec);
        let tolerations = spec.tolerations.get_or_insert_default();
        for t in extra {
            if !tolerations.iter().any(|x| x.key == t.key && x.effect == t.effect && x.operator == t.operator) {
                tolerations.push(t);
            }
        }
    }
    pod
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let _ = ctx.nodes.wait_until_ready().await;
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let spec = ds.spec.clone().ok_or_else(|| Error::Invalid("no spec".into()))?;
    let status = ds.status.clone().unwrap_or_default();
    let owner = util::controller_ref(ds.as_ref());
    let revs = revisions::sync(
        &ctx.client,
        &ns,
        &owner,
        &spec.selector,
        Some(&spec.template),
        None,
        status.collision_count.unwrap_or(0),
    )
    .await?;
    let hash = revs.update.labels().get(revisions::HASH_LABEL).cloned().unwrap_or_default();
    let template = revisions::template_of(&revs.update).unwrap_or(spec.template.clone());
    let pod_spec = template.spec.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pods = crate::replicaset::owned_pods(&ctx.client, &ns, &owner.uid, &spec.selector, Some(&owner)).await?;
    let nodes: BTreeMap<String, Arc<Node>> = ctx.nodes.state().into_iter().map(|n| (n.name_any(), n)).collect();

    // Daemon pods by node; finished ones are replaced, as kube does.
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in &pods {
        if util::deleting(p) {
            continue;
        }
        if util::terminal(p) {
            util::delete(&api, &p.name_any(), &DeleteParams::default()).await?;
            continue;
        }
        match node_of(p) {
            Some(n) if nodes.contains_key(&n) => by_node.entry(n).or_default().push(p),
            _ => util::delete(&api, &p.name_any(), &DeleteParams::default()).await?,
        }
    }
    let wanted: BTreeSet<&String> = nodes.iter().filter(|(_, n)| fits(&pod_spec, n)).map(|(k, _)| k).collect();
    let desired = wanted.len() as i32;
    let is_new = |p: &Pod| p.labels().get(REVISION_LABEL) == Some(&hash);
    let now = jiff::Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0).into();
    let mut requeue: Option<Duration> = None;
    let mut available = |p: &Pod| match util::available(p, min_ready, now) {
        Result2::Yes => true,
        Result2::After(d) => {
            requeue = Some(requeue.map_or(d, |r| r.min(d)));
            false
        }
        Result2::No => false,
    };
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref() != Some("OnDelete");
    let ru = strategy.rolling_update.clone().unwrap_or_default();
    let max_surge = if rolling { util::int_or_percent(ru.max_surge.as_ref(), desired, "0", true) } else { 0 };
    let max_unavailable = if rolling {
        util::int_or_percent(ru.max_unavailable.as_ref(), desired, if max_surge > 0 { "0" } else { "1" }, true)
    } else {
        0
    };

    let (mut scheduled, mut misscheduled, mut ready, mut updated, mut avail) = (0, 0, 0, 0, 0);
    let mut unavailable_nodes = 0;
    let mut old_available: Vec<&Pod> = Vec::new();
    let mut surge_nodes: Vec<(&String, &Pod)> = Vec::new();
    for (node, here) in &by_node {
        if !wanted.contains(node) {
            misscheduled += 1;
            for p in here {
                util::delete(&api, &p.name_any(), &DeleteParams::default()).await?;
            }
            continue;
        }
        scheduled += 1;
        let mut here = here.clone();
        here.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let new: Vec<&Pod> = here.iter().copied().filter(|p| is_new(p)).collect();
        let old: Vec<&Pod> = here.iter().copied().filter(|p| !is_new(p)).collect();
        // More than one pod of a revision on a node: the oldest stays.
        for p in new.iter().skip(1).chain(old.iter().skip(1)) {
            util::delete(&api, &p.name_any(), &DeleteParams::default()).await?;
        }
        let new = new.first().copied();
        let old = old.first().copied();
        if here.iter().any(|p| util::ready(p)) {
            ready += 1;
        }
        let new_available = new.is_some_and(&mut available);
        let old_avail = old.is_some_and(&mut available);
        if new.is_some() {
            updated += 1;
        }
        if new_available || old_avail {
            avail += 1;
        } else {
            unavailable_nodes += 1;
        }
        match (new, old) {
            // The new pod took over: the old one goes.
            (Some(_), Some(o)) if new_available => util::delete(&api, &o.name_any(), &DeleteParams::default()).await?,
            (Some(_), Some(_)) => {}
            (None, Some(o)) if rolling => {
                if !old_avail {
                    // An old pod that is not serving anyway is replaced at once.
                    util::delete(&api, &o.name_any(), &DeleteParams::default()).await?;
                } else if max_surge > 0 {
                    surge_nodes.push((node, o));
                } else {
                    old_available.push(o);
                }
            }
            _ => {}
        }
    }
    if rolling {
        // Surge: start new pods next to old ones; the old go once the new are available.
        let surging =
            by_node.values().filter(|h| h.iter().any(|p| is_new(p)) && h.iter().any(|p| !is_new(p))).count() as i32;
        for (node, _) in surge_nodes.iter().take((max_surge - surging).max(0) as usize) {
            let pod = new_pod(&ds, Some(&template), &hash, node);
            util::create_pod(&api, &pod, &format!("daemonset {name}")).await?;
        }
        // Without surge: take old pods down within maxUnavailable.
        let budget = (max_unavailable - unavailable_nodes).max(0) as usize;
        for p in old_available.iter().take(budget) {
            util::delete(&api, &p.name_any(), &DeleteParams::default()).await?;
        }
    }
    for node in &wanted {
        if !by_node.contains_key(*node) {
            let pod = new_pod(&ds, Some(&template), &hash, node);
            util::create_pod(&api, &pod, &format!("daemonset {name}")).await?;
        }
    }

    let new_status = json!({
        "observedGeneration": ds.metadata.generation,
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": scheduled,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "updatedNumberScheduled": updated,
        "numberAvailable": avail,
        "numberUnavailable": (desired - avail).max(0),
        "collisionCount": revs.collision_count,
    });
    let old = vt_apiserver::object::to_value(&status).unwrap_or_default();
    let differs = new_status.as_object().into_iter().flatten().any(|(k, v)| {
        let cur = old.get(k).cloned().unwrap_or(Value::Null);
        cur != *v && !(cur.is_null() && v.as_i64() == Some(0))
    }) || old.get("desiredNumberScheduled").is_none();
    if differs {
        let ds_api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
        ds_api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": new_status}))).await?;
    }
    let in_use: BTreeSet<String> =
        pods.iter().filter_map(|p| p.labels().get(REVISION_LABEL)).map(|h| format!("{name}-{h}")).collect();
    revisions::prune(&ctx.client, &ns, &revs, &in_use, spec.revision_history_limit.unwrap_or(10)).await?;
    Ok(match requeue {
        Some(d) => Action::requeue(d + Duration::from_millis(50)),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: Value) -> Node {
        vt_apiserver::object::from_value(v).unwrap()
    }

    #[test]
    fn daemons_fit_nodes_like_kube() {
        let spec = |v: Value| -> PodSpec { vt_apiserver::object::from_value(v).unwrap() };
        let plain = spec(json!({"containers": []}));
        let worker = node(json!({"metadata": {"name": "a", "labels": {"role": "worker"}}}));
        let tainted = node(
            json!({"metadata": {"name": "b"}, "spec": {"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}}),
        );
        let cordoned = node(json!({"metadata": {"name": "c"}, "spec": {"unschedulable": true}}));
        let prefer =
            node(json!({"metadata": {"name": "d"}, "spec": {"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}}));
        assert!(fits(&plain, &worker));
        assert!(!fits(&plain, &tainted), "an untolerated NoSchedule taint keeps daemons off");
        assert!(fits(&plain, &cordoned), "daemons tolerate cordoned nodes");
        assert!(fits(&plain, &prefer));
        let tolerant = spec(json!({"containers": [], "tolerations": [{"key": "gpu", "operator": "Exists"}]}));
        assert!(fits(&tolerant, &tainted));
        let selective = spec(json!({"containers": [], "nodeSelector": {"role": "worker"}}));
        assert!(fits(&selective, &worker) && !fits(&selective, &prefer));
        let by_name = spec(
            json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["d"]}]}]}}}}),
        );
        assert!(fits(&by_name, &prefer) && !fits(&by_name, &worker));
    }

    #[test]
    fn daemon_pods_are_pinned_to_their_node() {
        let ds: DaemonSet = vt_apiserver::object::from_value(json!({"metadata": {"name": "agent", "namespace": "ns", "uid": "u1", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "a"}},
                "spec": {"containers": [{"name": "c", "image": "i"}], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [{"key": "role", "operator": "Exists"}]}]}}}}}}}))
        .unwrap();
        let pod = new_pod(&ds, ds.spec.as_ref().map(|s| &s.template), "h1", "node-7");
        assert_eq!(node_of(&pod).as_deref(), Some("node-7"));
        let v = vt_apiserver::object::to_value(&pod).unwrap();
        let term = &v["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0];
        assert_eq!(term["matchExpressions"][0]["key"], "role", "the template's expressions stay");
        assert_eq!(term["matchFields"][0]["values"][0], "node-7");
        assert_eq!(v["metadata"]["labels"][REVISION_LABEL], "h1");
        assert_eq!(v["metadata"]["labels"]["pod-template-generation"], "2");
        assert!(
            v["spec"]["tolerations"].as_array().unwrap().iter().any(|t| t["key"] == "node.kubernetes.io/unschedulable")
        );
    }
}
