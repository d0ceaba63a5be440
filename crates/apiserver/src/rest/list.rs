//! List, with kube-apiserver's resourceVersion, resourceVersionMatch, limit/continue and
//! selector semantics.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Response, StatusCode};
use serde_json::{Value, json};
use vt_store::{ListOptions, Revision, StoreError, key_successor};

use super::{Op, invalid_options};
use crate::body::Body;
use crate::negotiate::Output;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult, FieldError, from_store};
use crate::{object, strategy};

/// Selectors of a list or watch.
pub(crate) struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// The namespace the request is scoped to (empty for all).
    pub namespace: String,
    /// The name the request is scoped to (the legacy `/watch/.../name` path).
    pub name: String,
    /// The kind listed (field values are computed per kind).
    pub kind: String,
}

impl Filter {
    /// Parses `labelSelector` and `fieldSelector`.
    pub fn parse(op: &Op<'_>) -> ApiResult<Filter> {
        let labels = LabelSelector::parse(op.param("labelSelector"))?;
        let supported = op.rt.field_selectors();
        let fields = FieldSelector::parse(op.param("fieldSelector"), &supported, &op.rt.kind, &op.rt.version)?;
        Ok(Filter { labels, fields, namespace: op.ns.clone(), name: op.name.clone(), kind: op.rt.kind.clone() })
    }

    /// Whether any selector is set.
    pub fn is_selective(&self) -> bool {
        !self.labels.is_empty() || !self.fields.is_empty()
    }

    /// Whether `obj` passes the filter.
    pub fn matches(&self, obj: &Value) -> bool {
        (self.namespace.is_empty() || object::namespace(obj) == self.namespace)
            && (self.name.is_empty() || object::name(obj) == self.name)
            && (self.labels.is_empty() || self.labels.matches(&object::labels(obj)))
            && (self.fields.is_empty() || self.fields.matches(|f| object::selectable_field(&self.kind, obj, f)))
    }
}

/// A decoded continue token.
struct Continue {
    rv: Revision,
    start: String,
}

fn encode_continue(rv: Revision, start: &str) -> String {
    // Field order as kube-apiserver writes it (serde_json would sort the keys).
    let start = serde_json::to_string(start).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(format!(r#"{{"v":"meta.k8s.io/v1","rv":{rv},"start":{start}}}"#))
}

fn decode_continue(token: &str) -> ApiResult<Continue> {
    let bad = |why: &str| ApiError::bad_request(format!("invalid continue token: continue key is not valid: {why}"));
    let raw = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).map_err(|_| bad("illegal base64 data"))?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad("invalid JSON"))?;
    let version = v.get("v").and_then(Value::as_str).unwrap_or("");
    if version != "meta.k8s.io/v1" {
        return Err(bad(&format!("server does not recognize this encoded version {version}")));
    }
    let rv = v.get("rv").and_then(Value::as_i64).unwrap_or(0);
    if rv == 0 {
        return Err(bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"));
    }
    let start = v.get("start").and_then(Value::as_str).unwrap_or("").trim_start_matches('/').to_string();
    if start.is_empty() {
        return Err(bad("encoded start key empty (version meta.k8s.io/v1)"));
    }
    if start.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err(bad("continue key is not valid"));
    }
    Ok(Continue { rv, start })
}

/// How a list chooses the revision it reads at.
enum ReadAt {
    /// The latest revision (optionally no older than a revision).
    Latest { not_older_than: Revision },
    /// Exactly this revision.
    Exact(Revision),
}

/// Validates list options and decides the read revision.
fn read_at(op: &Op<'_>, cont: &Option<Continue>, limit: usize) -> ApiResult<ReadAt> {
    let rv = op.param("resourceVersion");
    let rvm = op.param("resourceVersionMatch");
    let invalid = |field: &str, cause: FieldError| {
        let _ = field;
        invalid_options("ListOptions", cause)
    };
    if !rvm.is_empty() && rv.is_empty() {
        return Err(invalid(
            "resourceVersionMatch",
            FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ),
        ));
    }
    if !rvm.is_empty() && cont.is_some() {
        return Err(invalid(
            "resourceVersionMatch",
            FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided",
            ),
        ));
    }
    if !matches!(rvm, "" | "Exact" | "NotOlderThan") {
        return Err(invalid(
            "resourceVersionMatch",
            FieldError::not_supported(
                "resourceVersionMatch",
                &Value::String(rvm.into()),
                &["Exact", "NotOlderThan", ""],
            ),
        ));
    }
    if rvm == "Exact" && rv == "0" {
        return Err(invalid(
            "resourceVersionMatch",
            FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ),
        ));
    }
    if op.query.contains_key("sendInitialEvents") {
        return Err(invalid(
            "sendInitialEvents",
            FieldError::forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"),
        ));
    }
    if let Some(c) = cont {
        if !rv.is_empty() && rv != "0" {
            return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
        }
        return Ok(if c.rv < 0 { ReadAt::Latest { not_older_than: 0 } } else { ReadAt::Exact(c.rv) });
    }
    if rv.is_empty() || rv == "0" {
        return Ok(ReadAt::Latest { not_older_than: 0 });
    }
    let n: Revision = rv.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid resource version: resourceVersion: Invalid value: {rv:?}: strconv.ParseUint: parsing {rv:?}: invalid syntax"
        ))
    })?;
    Ok(match rvm {
        "Exact" => ReadAt::Exact(n),
        "NotOlderThan" => ReadAt::Latest { not_older_than: n },
        // Legacy: with a limit, an exact read; without, not older than.
        _ if limit > 0 => ReadAt::Exact(n),
        _ => ReadAt::Latest { not_older_than: n },
    })
}

/// Waits up to 3 s for the store to reach `rv` (kube-apiserver waits for its cache), else 504.
pub(crate) async fn wait_for_revision(op: &Op<'_>, rv: Revision) -> ApiResult<()> {
    if rv <= 0 {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let current = op.store().current_revision().await.map_err(|e| from_store(e, &op.gr(), ""))?;
        if current >= rv {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::too_large_rv(rv, current));
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// The result of reading a filtered, possibly paginated list.
pub(crate) struct Listed<T = Value> {
    pub items: Vec<T>,
    pub revision: Revision,
    pub continue_token: Option<String>,
}

/// Reads the objects of `op`'s resource at `at`, starting at `start` (a key relative to the
/// list prefix), keeping up to `limit` (0: all) for which `accept` returns an item.
async fn read_list<T>(
    op: &Op<'_>,
    selective: bool,
    at: Revision,
    start: Option<&str>,
    limit: usize,
    mut accept: impl FnMut(&vt_store::KeyValue) -> Option<T>,
) -> Result<Listed<T>, StoreError> {
    let prefix = op.rt.list_prefix(&op.ns);
    let mut start_key = start.map(|s| format!("{prefix}{s}").into_bytes().into());
    let mut revision = at;
    let mut items = Vec::new();
    loop {
        // Over-fetch when filtering so a selective list needs fewer round trips.
        let page_size = if limit == 0 {
            0
        } else if selective {
            (limit * 2).max(100)
        } else {
            limit
        };
        let page = op
            .store()
            .list(prefix.as_bytes(), ListOptions { limit: page_size, start: start_key.clone(), revision })
            .await?;
        revision = page.revision;
        let mut last_key: Option<bytes::Bytes> = None;
        let mut stopped_early = false;
        for kv in &page.kvs {
            last_key = Some(kv.key.clone());
            if let Some(item) = accept(kv) {
                items.push(item);
                if limit > 0 && items.len() == limit {
                    stopped_early = true;
                    break;
                }
            }
        }
        let more = page.more || (stopped_early && last_key.as_ref() != page.kvs.last().map(|kv| &kv.key));
        if limit > 0 && items.len() == limit {
            let token = if more {
                let last = last_key.expect("a full page has a last key");
                let rel = String::from_utf8_lossy(&last[prefix.len()..]).into_owned();
                Some(encode_continue(revision, &format!("{rel}\u{0}")))
            } else {
                None
            };
            return Ok(Listed { items, revision, continue_token: token });
        }
        if !page.more {
            return Ok(Listed { items, revision, continue_token: None });
        }
        start_key = last_key.map(|k| key_successor(&k));
    }
}

/// Decodes a stored object if it passes `filter` (undecodable objects are skipped, logged).
fn decoded<'a>(op: &'a Op<'_>, filter: &'a Filter) -> impl FnMut(&vt_store::KeyValue) -> Option<Value> + 'a {
    move |kv| match op.decode(kv) {
        Ok(obj) if filter.matches(&obj) => Some(obj),
        Ok(_) => None,
        Err(_) => {
            tracing::warn!(key = %String::from_utf8_lossy(&kv.key), "skipping an undecodable stored object");
            None
        }
    }
}

/// Lists the objects of `op`'s resource in one consistent snapshot, with kube-apiserver's
/// resourceVersion, limit and continue semantics; `accept` turns each stored object into an
/// item or filters it out.
async fn list_with<T>(
    op: &Op<'_>,
    selective: bool,
    accept: impl FnMut(&vt_store::KeyValue) -> Option<T>,
) -> ApiResult<Listed<T>> {
    let limit: usize = match op.param("limit") {
        "" => 0,
        l => l.parse::<i64>().map(|n| n.max(0) as usize).unwrap_or(0),
    };
    let cont = match op.param("continue") {
        "" => None,
        t => Some(decode_continue(t)?),
    };
    let at = read_at(op, &cont, limit)?;
    // resourceVersion=0 serves "any" state without pagination, as kube-apiserver's cache does.
    let limit = if op.param("resourceVersion") == "0" && cont.is_none() { 0 } else { limit };
    let (revision, exact) = match at {
        ReadAt::Latest { not_older_than } => {
            wait_for_revision(op, not_older_than).await?;
            (0, false)
        }
        ReadAt::Exact(rv) => (rv, true),
    };
    let start = cont.as_ref().map(|c| c.start.clone());
    match read_list(op, selective, revision, start.as_deref(), limit, accept).await {
        Ok(l) => Ok(l),
        Err(StoreError::Compacted { .. }) if cont.is_some() => {
            let mut e = ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            );
            e.list_continue = Some(encode_continue(-1, &start.unwrap_or_default()));
            Err(e)
        }
        Err(StoreError::FutureRevision { requested, current }) if exact => {
            wait_for_revision(op, requested).await.and(Err(ApiError::too_large_rv(requested, current)))
        }
        Err(e) => Err(from_store(e, &op.gr(), "")),
    }
}

/// Lists the decoded objects of `op`'s resource that pass `filter`.
pub(crate) async fn list_objects(op: &Op<'_>, filter: &Filter) -> ApiResult<Listed> {
    let mut listed = list_with(op, filter.is_selective(), decoded(op, filter)).await?;
    if crate::crd::conversion::webhook(&op.rt).is_some() {
        // One conversion review for the whole page.
        listed.items = crate::crd::conversion::served_all(op.api, &op.rt, std::mem::take(&mut listed.items)).await?;
    }
    Ok(listed)
}

/// The list object of `items`, which lose their `kind` and `apiVersion` as in kube-apiserver's
/// typed lists (custom resources keep them).
pub(crate) fn list_object(op: &Op<'_>, listed: Listed, keep_type: bool) -> Value {
    let items: Vec<Value> = listed
        .items
        .into_iter()
        .map(|mut i| {
            if !keep_type && let Some(m) = i.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            i
        })
        .collect();
    let mut metadata = json!({"resourceVersion": listed.revision.to_string()});
    if let Some(c) = listed.continue_token {
        metadata["continue"] = json!(c);
    }
    // Built by moving `items` in: `json!` would deep-copy every item through serde.
    let mut list = serde_json::Map::new();
    list.insert("kind".into(), json!(op.rt.list_kind));
    list.insert("apiVersion".into(), json!(op.rt.api_version()));
    list.insert("metadata".into(), metadata);
    list.insert("items".into(), Value::Array(items));
    Value::Object(list)
}

/// `GET` on a collection. Without selectors, conversion or a non-JSON output, stored objects
/// are copied into the response with their resourceVersion spliced in, never decoded.
pub(crate) async fn list(op: &Op<'_>) -> ApiResult<Response<Body>> {
    let filter = Filter::parse(op)?;
    let keep_type = op.rt.roundtrip.is_none();
    if op.output == Output::Json && !filter.is_selective() && !strategy::converts(&op.rt) {
        let listed = list_with(op, false, |kv| object::render_stored(&kv.value, kv.mod_revision, !keep_type)).await?;
        let mut out = Vec::with_capacity(listed.items.iter().map(Vec::len).sum::<usize>() + 256);
        // metav1.List's order: TypeMeta, ListMeta (resourceVersion, continue), items.
        out.extend_from_slice(b"{\"kind\":");
        crate::gojson::write_string(&mut out, &op.rt.list_kind);
        out.extend_from_slice(b",\"apiVersion\":");
        crate::gojson::write_string(&mut out, &op.rt.api_version());
        out.extend_from_slice(b",\"metadata\":{\"resourceVersion\":");
        crate::gojson::write_string(&mut out, &listed.revision.to_string());
        if let Some(c) = &listed.continue_token {
            out.extend_from_slice(b",\"continue\":");
            crate::gojson::write_string(&mut out, c);
        }
        out.extend_from_slice(b"},\"items\":[");
        for (i, item) in listed.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(item);
        }
        out.extend_from_slice(b"]}");
        return Ok(crate::json_bytes_response(StatusCode::OK, out));
    }
    let listed = list_objects(op, &filter).await?;
    Ok(op.respond(StatusCode::OK, &list_object(op, listed, keep_type)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_match_kube_format() {
        let t = encode_continue(12345, "b\u{0}");
        assert_eq!(t, "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MTIzNDUsInN0YXJ0IjoiYlx1MDAwMCJ9");
        let c = decode_continue(&t).unwrap();
        assert_eq!((c.rv, c.start.as_str()), (12345, "b\u{0}"));
        assert!(decode_continue("!!").is_err());
        assert!(decode_continue(&URL_SAFE_NO_PAD.encode(r#"{"v":"meta.k8s.io/v1","rv":0,"start":"a"}"#)).is_err());
    }
}
