//! Ingresses: a tenant's Ingress routes on the host's ingress controller only for host names
//! the tenant owns — `*.<tenant>.<ingress domain>` by default, plus names the operator grants
//! in its Tenant — through an ingress class the tenant may use, to its own Services (renamed
//! as on the host). An Ingress asking for anything else is refused with an event and never
//! created; two tenants can never claim the same name (each owns its own subdomain). TLS
//! Secrets are copied like other referenced Secrets; the host's status (load balancer
//! addresses) comes back.

use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::{Map, Value, json};

use crate::guard::{as_seen, unless_missing};
use crate::tenant::{Result, Tenant, unless_gone};
use crate::translate::{Refusal, Target, host_meta};

/// What a tenant may claim on the host's ingress controllers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressRules {
    /// The domain under which the tenant owns `*.<tenant>.<domain>`.
    pub domain: String,
    /// More host names the operator granted (exact, or `*.suffix`).
    pub granted: Vec<String>,
    /// The host ingress classes the tenant may use.
    pub classes: Vec<String>,
    /// The class an Ingress without one gets (none: the host's default class).
    pub default_class: Option<String>,
}

impl IngressRules {
    /// Whether the tenant owns host name `host` (a name, or a `*.` wildcard).
    pub fn owns(&self, tenant: &str, host: &str) -> bool {
        let host = canonical_host(host);
        let suffix = format!(".{tenant}.{}", canonical_host(&self.domain));
        if !self.domain.is_empty() && host.ends_with(&suffix) && host.len() > suffix.len() {
            return true;
        }
        self.granted.iter().any(|g| {
            let g = canonical_host(g);
            match g.strip_prefix('*') {
                // `*.example.com` grants the names under it (and the same wildcard).
                Some(rest) => host.ends_with(rest) && host.len() > rest.len(),
                None => host == g,
            }
        })
    }
}

/// A host name or `*.` wildcard in canonical form (lower case, no trailing dot).
fn canonical_host(h: &str) -> String {
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether two grants (names or `*.` wildcards) could both match one host name.
pub fn grants_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (canonical_host(a), canonical_host(b));
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (None, None) => a == b,
        (Some(sa), None) => b.ends_with(sa) && b.len() > sa.len(),
        (None, Some(sb)) => a.ends_with(sb) && a.len() > sb.len(),
        (Some(sa), Some(sb)) => sa.ends_with(sb) || sb.ends_with(sa),
    }
}

/// Why the operator's grant `g` cannot be given to any tenant, if it cannot: not a DNS name
/// (or `*.` wildcard), or under the ingress domain, whose names belong to the tenants by
/// their subdomain.
pub fn invalid_grant(g: &str, domain: &str) -> Option<String> {
    let name = canonical_host(g);
    let bare = name.strip_prefix("*.").unwrap_or(&name);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if bare.len() > 253 || !bare.contains('.') || !bare.split('.').all(label_ok) {
        return Some(format!("{g:?} is not a DNS name or a \"*.\" wildcard of one"));
    }
    let domain = canonical_host(domain);
    if !domain.is_empty() && (bare == domain || bare.ends_with(&format!(".{domain}"))) {
        return Some(format!("{g:?} is under the ingress domain {domain:?}, whose names belong to tenants by name"));
    }
    None
}

fn refusal(message: String) -> Refusal {
    Refusal { reason: "IngressRefused", message }
}

/// Annotations that make ingress controllers take configuration verbatim (nginx snippets run
/// in the controller shared by every tenant; CVE-2021-25742).
fn dangerous_annotation(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.ends_with("snippet") || name.ends_with("snippets") || name == "auth-tls-secret" || name == "auth-secret"
}

/// The host copy of a tenant's Ingress, or why it may not be made.
pub fn host_ingress(v: &Value, t: &Target) -> std::result::Result<Value, Refusal> {
    let ns = v.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    let spec = v.get("spec").cloned().unwrap_or_else(|| json!({}));
    let rules = &t.ingress;
    if spec.get("defaultBackend").is_some() {
        return Err(refusal(
            "a default backend would catch every host name on the shared ingress controller; give each rule a host"
                .into(),
        ));
    }
    let class = match spec.get("ingressClassName").and_then(Value::as_str) {
        Some(c) if rules.classes.iter().any(|a| a == c) => Some(c.to_string()),
        Some(c) => {
            return Err(refusal(format!(
                "ingress class {c:?} is not granted to this tenant (granted: {})",
                if rules.classes.is_empty() { "none".into() } else { rules.classes.join(", ") }
            )));
        }
        None => rules.default_class.clone(),
    };
    let mut out_rules = Vec::new();
    for r in spec.get("rules").and_then(Value::as_array).into_iter().flatten() {
        let host = r.get("host").and_then(Value::as_str).unwrap_or("");
        if host.is_empty() {
            return Err(refusal(
                "a rule without a host would catch every host name on the shared ingress controller".into(),
            ));
        }
        if !rules.owns(&t.tenant, host) {
            return Err(refusal(format!(
                "host {host:?} is not one this tenant owns (its own: *.{}.{}{})",
                t.tenant,
                rules.domain,
                if rules.granted.is_empty() {
                    String::new()
                } else {
                    format!(", granted: {}", rules.granted.join(", "))
                }
            )));
        }
        let mut rule = r.clone();
        for p in rule.pointer_mut("/http/paths").and_then(Value::as_array_mut).into_iter().flatten() {
            backend(p.get_mut("backend"), ns, t)?;
        }
        out_rules.push(rule);
    }
    let mut tls = Vec::new();
    for entry in spec.get("tls").and_then(Value::as_array).into_iter().flatten() {
        for h in entry.get("hosts").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            if !rules.owns(&t.tenant, h) {
                return Err(refusal(format!("TLS host {h:?} is not one this tenant owns")));
            }
        }
        let mut e = entry.clone();
        if let Some(secret) = entry.get("secretName").and_then(Value::as_str) {
            e["secretName"] = json!(t.name(secret, ns));
        }
        tls.push(e);
    }
    let mut meta = host_meta(v, t);
    if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut)
        && let Some(k) = a.keys().find(|k| dangerous_annotation(k)).cloned()
    {
        return Err(refusal(format!("annotation {k:?} would configure the shared ingress controller itself")));
    }
    let mut out = Map::new();
    if let Some(c) = class {
        out.insert("ingressClassName".into(), json!(c));
    }
    out.insert("rules".into(), Value::Array(out_rules));
    if !tls.is_empty() {
        out.insert("tls".into(), Value::Array(tls));
    }
    if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        // kubectl's record of the tenant's own manifest means nothing on the host.
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    Ok(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": out}))
}

/// Renames a backend's Service to its host name; resource backends are refused.
fn backend(b: Option<&mut Value>, ns: &str, t: &Target) -> std::result::Result<(), Refusal> {
    let Some(b) = b else { return Ok(()) };
    if b.get("resource").is_some() {
        return Err(refusal("resource backends are not supported: route to a Service".into()));
    }
    if let Some(name) = b.pointer("/service/name").and_then(Value::as_str).map(str::to_string) {
        b["service"]["name"] = json!(t.name(&name, ns));
    }
    Ok(())
}

/// The TLS Secrets an Ingress references.
pub fn tls_secrets(v: &Value) -> Vec<String> {
    v.pointer("/spec/tls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("secretName").and_then(Value::as_str).map(String::from))
        .collect()
}

impl Tenant {
    /// Syncs one virtual Ingress to the host (or refuses it), and the host's status back.
    pub(crate) async fn sync_ingress(&self, ns: &str, name: &str) -> Result<()> {
        let v = self.ingresses.get(&ObjectRef::new(name).within(ns));
        let host_name = self.target.name(name, ns);
        let api: Api<Ingress> = Api::namespaced(self.host.client.clone(), &self.target.namespace);
        let use_key = (ns.to_string(), format!("ingress:{name}"));
        let delete = |api: Api<Ingress>| async move {
            if let Some(h) = api.get_opt(&host_name).await?
                && h.labels().get(crate::TENANT_LABEL).is_some()
            {
                unless_missing(api.delete(&h.name_any(), &as_seen(&h, None)).await)?;
            }
            Ok::<(), crate::tenant::Error>(())
        };
        let Some(v) = v else {
            self.uses.lock().unwrap_or_else(|p| p.into_inner()).set(use_key, None);
            return delete(api).await;
        };
        let vjson = vt_apiserver::object::to_value(v.as_ref()).unwrap_or(Value::Null);
        let want = match host_ingress(&vjson, &self.target) {
            Ok(w) => w,
            Err(r) => {
                let uid = v.uid().unwrap_or_default();
                let new = self.refused.lock().unwrap_or_else(|p| p.into_inner()).insert(uid.clone(), r.message.clone())
                    != Some(r.message.clone());
                if new {
                    let involved = json!({"kind": "Ingress", "apiVersion": "networking.k8s.io/v1", "namespace": ns,
                        "name": name, "uid": uid});
                    self.warn(involved, r.reason, &r.message).await;
                }
                self.uses.lock().unwrap_or_else(|p| p.into_inner()).set(use_key, None);
                return delete(api).await;
            }
        };
        // Its TLS Secrets first.
        let secrets = tls_secrets(&vjson);
        let refs = crate::translate::References { secrets: secrets.iter().cloned().collect(), ..Default::default() };
        self.uses.lock().unwrap_or_else(|p| p.into_inner()).set(use_key, Some(refs));
        for s in &secrets {
            self.copy_data(true, ns, s).await?;
        }
        let pp = PatchParams::apply(crate::MANAGER).force();
        let h = api.patch(&self.target.name(name, ns), &pp, &Patch::Apply(want)).await?;
        // The host controller's addresses, back in the tenant.
        let lb = h.status.as_ref().and_then(|s| s.load_balancer.clone()).unwrap_or_default();
        let have = v.status.as_ref().and_then(|s| s.load_balancer.clone()).unwrap_or_default();
        if lb != have {
            let vapi: Api<Ingress> = Api::namespaced(self.virt.clone(), ns);
            let patch = json!({"status": {"loadBalancer": lb}});
            unless_gone(vapi.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)).await)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            ingress: IngressRules {
                domain: "apps.example.com".into(),
                granted: vec!["shop.acme.io".into(), "*.acme.dev".into()],
                classes: vec!["nginx".into()],
                default_class: Some("nginx".into()),
            },
            ..crate::translate::test_target()
        }
    }

    fn ingress(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "shop", "uid": "u"}, "spec": spec})
    }

    #[test]
    fn grants_overlap_when_one_name_could_match_both() {
        assert!(grants_overlap("shop.acme.io", "SHOP.acme.io."));
        assert!(grants_overlap("*.acme.io", "shop.acme.io"));
        assert!(grants_overlap("a.b.acme.io", "*.acme.io"));
        assert!(grants_overlap("*.b.acme.io", "*.acme.io"));
        assert!(!grants_overlap("*.acme.io", "acme.io"));
        assert!(!grants_overlap("shop.acme.io", "shop.beta.io"));
        assert!(!grants_overlap("*.acme.io", "*.beta.io"));
        assert!(invalid_grant("shop.acme.io", "vt.local").is_none());
        assert!(invalid_grant("*.acme.io", "vt.local").is_none());
        assert!(invalid_grant("x.beta.vt.local", "vt.local").unwrap().contains("ingress domain"));
        assert!(invalid_grant("*", "vt.local").is_some());
        assert!(invalid_grant("bad_name.io", "vt.local").is_some());
        assert!(invalid_grant("localhost", "vt.local").is_some());
    }

    #[test]
    fn owned_hosts_route_to_the_tenants_services() {
        let v = ingress(json!({"rules": [{"host": "shop.acme.apps.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}],
            "tls": [{"hosts": ["shop.acme.apps.example.com"], "secretName": "web-tls"}]}));
        let h = host_ingress(&v, &target()).unwrap();
        assert_eq!(h["metadata"]["namespace"], "vt-acme");
        assert_eq!(h["spec"]["ingressClassName"], "nginx", "the tenant's default class");
        assert_eq!(h["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"], "web-x-shop-x-acme");
        assert_eq!(h["spec"]["tls"][0]["secretName"], "web-tls-x-shop-x-acme");
        for granted in ["shop.acme.io", "api.acme.dev", "*.acme.apps.example.com"] {
            let v = ingress(json!({"rules": [{"host": granted}]}));
            assert!(host_ingress(&v, &target()).is_ok(), "{granted}");
        }
    }

    #[test]
    fn names_classes_and_catch_alls_not_owned_are_refused() {
        for (spec, why) in [
            (json!({"rules": [{"host": "shop.beta.apps.example.com"}]}), "not one this tenant owns"),
            (json!({"rules": [{"host": "acme.apps.example.com"}]}), "not one this tenant owns"),
            (json!({"rules": [{"host": "evilacme.apps.example.com"}]}), "not one this tenant owns"),
            (json!({"rules": [{"host": "acme.io"}]}), "not one this tenant owns"),
            (json!({"rules": [{"http": {"paths": []}}]}), "without a host"),
            (json!({"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}), "default backend"),
            (json!({"ingressClassName": "traefik", "rules": [{"host": "a.acme.apps.example.com"}]}), "not granted"),
            (
                json!({"rules": [{"host": "a.acme.apps.example.com"}], "tls": [{"hosts": ["x.beta.apps.example.com"]}]}),
                "TLS host",
            ),
        ] {
            let err = host_ingress(&ingress(spec.clone()), &target()).unwrap_err();
            assert!(err.message.contains(why), "{spec}: {}", err.message);
        }
        let mut v = ingress(json!({"rules": [{"host": "a.acme.apps.example.com"}]}));
        v["metadata"]["annotations"] =
            json!({"nginx.ingress.kubernetes.io/configuration-snippet": "more_set_headers x"});
        assert!(host_ingress(&v, &target()).unwrap_err().message.contains("snippet"));
    }
}
