#!/usr/bin/env python3
# Usage: hack/gen-builtin-registry.py hack/data/kube-1.33-resources.json crates/apiserver/src/registry/builtin.rs
# The JSON is the table of resources kube-apiserver 1.33 serves by default, compiled from the
# Kubernetes 1.33 sources (discovery docs, REST strategies, field label conversions).
# Generates crates/apiserver/src/registry/builtin.rs from the researched 1.33 resource table.
import json, sys
d = json.load(open(sys.argv[1]))
mod = {'': 'core', 'apps': 'apps', 'batch': 'batch', 'autoscaling': 'autoscaling', 'policy': 'policy',
       'networking.k8s.io': 'networking', 'rbac.authorization.k8s.io': 'rbac', 'storage.k8s.io': 'storage',
       'admissionregistration.k8s.io': 'admissionregistration', 'authentication.k8s.io': 'authentication',
       'authorization.k8s.io': 'authorization', 'certificates.k8s.io': 'certificates',
       'coordination.k8s.io': 'coordination', 'discovery.k8s.io': 'discovery', 'events.k8s.io': 'events',
       'flowcontrol.apiserver.k8s.io': 'flowcontrol', 'node.k8s.io': 'node', 'scheduling.k8s.io': 'scheduling'}
def rust_path(g, v, k):
    if g == 'apiextensions.k8s.io':
        return f'k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::{v}::{k}'
    if g == 'apiregistration.k8s.io':
        return f'k8s_openapi::kube_aggregator::pkg::apis::apiregistration::{v}::{k}'
    return f'k8s_openapi::api::{mod[g]}::{v}::{k}'
def definition_name(g, v, k):
    # The name k8s-openapi (and kube's /openapi documents) give the kind's schema.
    if g == 'apiextensions.k8s.io':
        return f'io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{v}.{k}'
    if g == 'apiregistration.k8s.io':
        return f'io.k8s.kube-aggregator.pkg.apis.apiregistration.{v}.{k}'
    return f'io.k8s.api.{mod[g]}.{v}.{k}'
label = {('', 'Namespace')}
dns1035 = {('', 'Service')}
pathseg = {('rbac.authorization.k8s.io', k) for k in ['Role', 'ClusterRole', 'RoleBinding', 'ClusterRoleBinding']} | {('', 'PersistentVolume'), ('apiregistration.k8s.io', 'APIService')}
create_on_update = {('', 'Endpoints'), ('', 'Event'), ('events.k8s.io', 'Event'), ('', 'LimitRange'), ('coordination.k8s.io', 'Lease')} | {('rbac.authorization.k8s.io', k) for k in ['Role', 'ClusterRole', 'RoleBinding', 'ClusterRoleBinding']}
has_status_extra = set()
def s(x): return '"' + x + '"'
def vec(xs): return 'v(&[' + ', '.join(s(x) for x in xs) + '])'
out = []
out.append('//! The built-in resource types of Kubernetes 1.33, as kube-apiserver 1.33 serves them by default')
out.append('//! (discovery verbs, short names, categories, subresources, strategy flags). Generated from')
out.append('//! the project\'s research notes on the Kubernetes 1.33 source by `hack/gen-builtin-registry.py`;')
out.append('//! edit the generator, not this file.')
out.append('')
out.append('use std::time::Duration;')
out.append('')
out.append('use super::{GcPolicy, Policy, ResourceType, Subresource};')
out.append('use crate::validation::NameRule;')
out.append('')
out.append('fn v(xs: &[&str]) -> Vec<String> {')
out.append('    xs.iter().map(|x| x.to_string()).collect()')
out.append('}')
out.append('')
out.append('fn sub(name: &str, group: &str, version: &str, kind: &str, verbs: &[&str]) -> Subresource {')
out.append('    Subresource { name: name.into(), group: group.into(), version: version.into(), kind: kind.into(), verbs: v(verbs) }')
out.append('}')
out.append('')
out.append('/// Decodes into `T` and encodes back (type check and pruning of unknown fields). Through JSON')
out.append('/// text rather than `from_value`/`to_value`: these are the serde instantiations kube-rs\'s')
out.append('/// clients use for the same types, so the binary carries one copy of each type\'s serde code.')
out.append('fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(value: &serde_json::Value) -> Result<serde_json::Value, String> {')
out.append('    // serde_json\'s message without the position it appends for text input.')
out.append('    let message = |e: serde_json::Error| {')
out.append('        let text = e.to_string();')
out.append('        let at = format!(" at line {} column {}", e.line(), e.column());')
out.append('        text.strip_suffix(&at).map(str::to_string).unwrap_or(text)')
out.append('    };')
out.append('    let text = serde_json::to_string(value).map_err(message)?;')
out.append('    let typed: T = serde_json::from_str(&text).map_err(message)?;')
out.append('    serde_json::from_slice(&serde_json::to_vec(&typed).map_err(message)?).map_err(message)')
out.append('}')
out.append('')
out.append('/// Every built-in type.')
out.append('#[allow(clippy::too_many_lines)]')
out.append('pub(super) fn table() -> Vec<ResourceType> {')
out.append('    vec![')
schemas = []
for e in d:
    g, ver, k = e['group'], e['version'], e['kind']
    key = (g, k)
    rule = 'Label' if key in label else 'Dns1035' if key in dns1035 else 'PathSegment' if key in pathseg else 'Subdomain'
    subs = []
    for sr in e['subresources']:
        sg = sr.get('group', g) if sr.get('group') is not None else g
        sv = sr.get('version', ver) if sr.get('version') is not None else ver
        if sr['kind'] == k and not sr.get('group'):
            sg, sv = g, ver
        if sg == '' and sr.get('group') is None: sg = g
        subs.append(f'sub({s(sr["name"])}, {s(sg)}, {s(sv)}, {s(sr["kind"])}, &[{", ".join(s(x) for x in sr["verbs"])}])')
    has_status = any(sr['name'] == 'status' for sr in e['subresources'])
    fs = [f for f in e['field_selectors'] if not f.startswith('metadata.')]
    ttl = 'Some(Duration::from_secs(3600))' if k == 'Event' else 'None'
    storable = 'watch' in e['verbs'] or k in ('Binding',)
    rt = f'Some(roundtrip::<{rust_path(g, ver, k)}>)' if k not in ('ComponentStatus',) else 'None'
    sc = f'Some("{definition_name(g, ver, k)}")' if k not in ('ComponentStatus',) else 'None'
    if sc != 'None':
        schemas.append(rust_path(g, ver, k))
    out.append('        ResourceType {')
    out.append(f'            group: {s(g)}.into(),')
    out.append(f'            version: {s(ver)}.into(),')
    out.append(f'            kind: {s(k)}.into(),')
    out.append(f'            list_kind: {s(k + "List")}.into(),')
    out.append(f'            plural: {s(e["plural"])}.into(),')
    out.append(f'            singular: {s(e["singular"])}.into(),')
    out.append(f'            namespaced: {str(e["namespaced"]).lower()},')
    out.append(f'            verbs: {vec(e["verbs"])},')
    out.append(f'            short_names: {vec(e["shortNames"])},')
    out.append(f'            categories: {vec(e["categories"])},')
    out.append(f'            subresources: vec![{", ".join(subs)}],')
    out.append(f'            preferred: {str(e["preferred"]).lower()},')
    out.append('            policy: Policy {')
    out.append(f'                name_rule: NameRule::{rule},')
    out.append(f'                sets_generation: {str(e["sets_generation"]).lower()},')
    out.append(f'                has_status: {str(has_status).lower()},')
    out.append(f'                reset_status_on_create: {str(e["status_reset_on_create"]).lower()},')
    out.append(f'                unconditional_update: true,')
    out.append(f'                create_on_update: {str(key in create_on_update).lower()},')
    out.append(f'                default_gc: GcPolicy::{"Orphan" if e["default_gc_policy"] == "orphan" else "Background"},')
    out.append(f'                field_selectors: v(&[{", ".join(s(x) for x in fs)}]),')
    out.append(f'                ttl: {ttl},')
    out.append('            },')
    out.append(f'            roundtrip: {rt},')
    out.append(f'            openapi: {sc},')
    out.append('            custom: None,')
    out.append('        },')
out.append('    ]')
out.append('}')
out.append('')
out.append('/// Adds every built-in kind\'s OpenAPI schema (and what each references) to the generator and')
out.append('/// returns their definition names: what `openapi/definitions.json` is generated from.')
out.append('#[cfg(test)]')
out.append('pub(crate) fn openapi_schemas(generator: &mut schemars::SchemaGenerator) -> Vec<String> {')
out.append('    fn schema<T: schemars::JsonSchema>(generator: &mut schemars::SchemaGenerator) -> String {')
out.append('        generator.subschema_for::<T>();')
out.append('        T::schema_name().into_owned()')
out.append('    }')
out.append('    vec![')
for p in schemas:
    out.append(f'        schema::<{p}>(generator),')
out.append('    ]')
out.append('}')
open(sys.argv[2], 'w').write('\n'.join(out) + '\n')
