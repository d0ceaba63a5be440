//! Requests for an aggregated API, proxied to the server behind its APIService, as
//! kube-aggregator proxies them: authenticated and authorized here first, then sent over TLS
//! with the front proxy's client certificate and the user in `X-Remote-User`,
//! `X-Remote-Group` and `X-Remote-Extra-<key>` headers (whatever the client sent in those, and
//! its own credentials, never leave this server). The answer streams back as it comes, so
//! watches work; an upgrade (a streaming subresource) switches both connections and joins
//! them.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::ApiServer;
use crate::auth::UserInfo;
use crate::body::Body;
use crate::outbound::{self, Target, Trust};

/// How long a proxied request may take to get its answer's head (its body then streams for
/// as long as the client reads it: watches).
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a discovery check may take (kube-aggregator's availability controller: 5 s).
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Discovery answers larger than this are refused.
const MAX_DISCOVERY: usize = 1 << 20;

/// Unsent bytes of a proxied answer the server holds for a slow client.
const RELAY_BUFFER: usize = 64 << 10;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// client's credentials and anything that would speak for the user upstream.
fn dropped(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "authorization"
            | "content-length"
    ) || n.starts_with("impersonate-")
        || n.starts_with("x-remote-")
}

/// A header name's escape for `X-Remote-Extra-<key>` (client-go's `headerKeyEscape`): bytes
/// that may not appear in a header name, and `%`, as `%XX`.
fn header_key_escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        let token = b.is_ascii_alphanumeric() || b"!#$&'*+-.^_`|~".contains(&b);
        if token {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The headers that tell the aggregated server who is asking. Values go as their bytes (as
/// Go sends them: UTF-8 names pass); one that no header can carry (a control character) fails
/// the request rather than leave the server a partial identity.
fn identity_headers(headers: &mut HeaderMap, user: &UserInfo) -> Result<(), String> {
    let mut add = |name: String, value: &str| -> Result<(), String> {
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("identity header {name}: {e}"))?;
        let v = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| format!("{name} cannot carry {value:?}"))?;
        headers.append(n, v);
        Ok(())
    };
    add("x-remote-user".into(), &user.name)?;
    for g in &user.groups {
        add("x-remote-group".into(), g)?;
    }
    for (k, vs) in &user.extra {
        for v in vs {
            add(format!("x-remote-extra-{}", header_key_escape(k)), v)?;
        }
    }
    Ok(())
}

/// The header names a message's `Connection` header lists (hop-by-hop for this message).
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Where an APIService's server is, and how to trust it.
struct Upstream {
    target: Target,
    ca_bundle: Vec<u8>,
    insecure: bool,
}

impl Upstream {
    fn of(apiservice: &Value) -> Upstream {
        let s = |p: &str| apiservice.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
        Upstream {
            target: Target::Service {
                namespace: s("/spec/service/namespace"),
                name: s("/spec/service/name"),
                path: String::new(),
                port: apiservice
                    .pointer("/spec/service/port")
                    .and_then(Value::as_u64)
                    .map_or(443, |p| u16::try_from(p).unwrap_or(0)),
            },
            ca_bundle: apiservice
                .pointer("/spec/caBundle")
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .unwrap_or_default(),
            insecure: apiservice.pointer("/spec/insecureSkipTLSVerify").and_then(Value::as_bool).unwrap_or(false),
        }
    }

    async fn connect(&self, api: &ApiServer) -> Result<(outbound::Sender, outbound::Endpoint), String> {
        let client = api.config().front_proxy.as_ref().map(|f| &f.client);
        let trust = Trust { ca_bundle: &self.ca_bundle, insecure: self.insecure, client };
        outbound::connect(api, &self.target, &trust).await
    }
}

/// kube-aggregator's answer when the proxy fails: `http.Error`'s plain text.
pub(super) fn proxy_error(code: StatusCode, message: &str) -> Response<Body> {
    let mut resp = crate::text_response(code, &format!("{message}\n"));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

/// Relays an upstream body as it streams. It ends — and the upstream connection with it —
/// when the upstream body ends or fails, when the client goes away (even while the upstream
/// is silent: an idle proxied watch holds nothing after its client left), or when the server
/// stops.
fn relay(body: hyper::body::Incoming, mut stopped: tokio::sync::watch::Receiver<()>) -> Body {
    let (tx, out) = crate::body::channel(RELAY_BUFFER);
    tokio::spawn(async move {
        let mut frames = body.into_data_stream();
        loop {
            let chunk = tokio::select! {
                c = frames.next() => c,
                _ = tx.closed() => return,
                _ = stopped.changed() => return,
            };
            let Some(Ok(chunk)) = chunk else { return };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    out
}

/// Sends `req` (already authorized here) for `user` to the server behind `apiservice` (a
/// [`super::Route::Proxy`]).
pub(crate) async fn forward(
    api: &ApiServer,
    apiservice: &Value,
    req: Request<Bytes>,
    user: &UserInfo,
) -> Response<Body> {
    let upgrade = upgrade_of(req.headers());
    let upstream = Upstream::of(apiservice);
    let (parts, body) = req.into_parts();
    let work = async {
        let (mut sender, ep) = upstream.connect(api).await?;
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut out = Request::builder().method(parts.method.clone()).uri(path);
        if let Some(h) = out.headers_mut() {
            let hop = connection_tokens(&parts.headers);
            for (name, value) in &parts.headers {
                if !dropped(name) && !hop.iter().any(|t| t == name.as_str()) {
                    h.append(name.clone(), value.clone());
                }
            }
            if let Ok(host) = HeaderValue::from_str(&ep.authority()) {
                h.insert(header::HOST, host);
            }
            // An upgrade (WebSocket, SPDY) is asked for again on this hop.
            if let Some(protocol) = &upgrade {
                h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                h.insert(header::UPGRADE, protocol.clone());
            }
            identity_headers(h, user)?;
        }
        let out = out.body(Full::new(body)).map_err(|e| e.to_string())?;
        sender.send_request(out).await.map_err(|e| format!("error trying to reach service: {e}"))
    };
    let answer = match tokio::time::timeout(HEAD_TIMEOUT, work).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return proxy_error(StatusCode::SERVICE_UNAVAILABLE, &e),
        Err(_) => {
            return proxy_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "error trying to reach service: timeout awaiting response headers",
            );
        }
    };
    if upgrade.is_some() && answer.status() == StatusCode::SWITCHING_PROTOCOLS {
        return switch(answer, Request::from_parts(parts, ()), api.stopped());
    }
    let (head, body) = answer.into_parts();
    let mut resp = Response::new(relay(body, api.stopped()));
    *resp.status_mut() = head.status;
    let hop = connection_tokens(&head.headers);
    for (name, value) in &head.headers {
        if !dropped(name) && !hop.iter().any(|t| t == name.as_str()) {
            resp.headers_mut().append(name.clone(), value.clone());
        }
    }
    resp
}

/// The protocol a request asks to switch to (`Connection: Upgrade` with `Upgrade: ...`), as
/// `kubectl exec`-style streams and WebSockets do.
fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let asked = connection_tokens(headers).iter().any(|t| t == "upgrade");
    headers.get(header::UPGRADE).filter(|_| asked).cloned()
}

/// The aggregated server switched protocols: so does the client's connection, and the two
/// are joined until either side closes or the server stops (kube-aggregator's upgrade-aware
/// proxy). The 101 carries the upstream's headers but those of its connection.
fn switch(
    answer: Response<hyper::body::Incoming>,
    client: Request<()>,
    mut stopped: tokio::sync::watch::Receiver<()>,
) -> Response<Body> {
    let mut resp = Response::new(crate::body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hop = connection_tokens(answer.headers());
    for (name, value) in answer.headers() {
        if !dropped(name) && !hop.iter().any(|t| t == name.as_str()) {
            resp.headers_mut().append(name.clone(), value.clone());
        }
    }
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Some(protocol) = answer.headers().get(header::UPGRADE) {
        resp.headers_mut().insert(header::UPGRADE, protocol.clone());
    }
    tokio::spawn(async move {
        let (Ok(upstream), Ok(client)) = tokio::join!(hyper::upgrade::on(answer), hyper::upgrade::on(client)) else {
            return;
        };
        let (mut a, mut b) = (hyper_util::rt::TokioIo::new(client), hyper_util::rt::TokioIo::new(upstream));
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
            _ = stopped.changed() => {}
        }
    });
    resp
}

/// kube-aggregator's discovery check of an APIService: `GET /apis/<group>/<version>` as
/// `system:kube-aggregator` must answer 2xx within 5 s. Returns the answer (the group
/// version's `APIResourceList`), or why the check failed in kube's words.
pub(super) async fn discover(api: &ApiServer, apiservice: &Value) -> Result<Value, String> {
    let group = apiservice.pointer("/spec/group").and_then(Value::as_str).unwrap_or("");
    let version = apiservice.pointer("/spec/version").and_then(Value::as_str).unwrap_or("");
    let path = format!("/apis/{group}/{version}");
    let upstream = Upstream::of(apiservice);
    let checker = UserInfo::new("system:kube-aggregator", ["system:masters"]);
    let work = async {
        let (mut sender, ep) = upstream.connect(api).await.map_err(|e| (String::new(), e))?;
        let url = format!("{}{path}", ep.url());
        let mut req = Request::get(path.as_str())
            .header(header::HOST, ep.authority())
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| (url.clone(), e.to_string()))?;
        identity_headers(req.headers_mut(), &checker).map_err(|e| (url.clone(), e))?;
        let resp = sender.send_request(req).await.map_err(|e| (url.clone(), e.to_string()))?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_DISCOVERY)
            .collect()
            .await
            .map_err(|e| (url.clone(), format!("reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err((url.clone(), format!("bad status from {url}: {}", status.as_u16())));
        }
        serde_json::from_slice::<Value>(&body).map_err(|e| (url, format!("invalid discovery answer: {e}")))
    };
    match tokio::time::timeout(CHECK_TIMEOUT, work).await {
        Ok(Ok(list)) => Ok(list),
        Ok(Err((url, e))) if url.is_empty() => Err(format!("failing or missing response from the service: {e}")),
        Ok(Err((url, e))) => Err(format!("failing or missing response from {url}: {e}")),
        Err(_) => Err(format!("failing or missing response from service for {path}: context deadline exceeded")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins client-go's `headerKeyEscape` (transport/round_trippers.go): token bytes stay,
    /// everything else, `%` included, becomes `%XX`.
    #[test]
    fn extra_keys_are_escaped_as_client_go_escapes_them() {
        assert_eq!(header_key_escape("scopes"), "scopes");
        assert_eq!(header_key_escape("example.com/scope"), "example.com%2Fscope");
        assert_eq!(header_key_escape("a b%c"), "a%20b%25c");
    }

    /// Pins RFC 9110 §7.6.1: headers a `Connection` header names are this hop's only.
    #[test]
    fn headers_named_by_connection_are_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.append(header::CONNECTION, HeaderValue::from_static("upgrade"));
        assert_eq!(connection_tokens(&h), ["keep-alive", "x-secret", "upgrade"]);
    }

    #[test]
    fn credentials_and_identity_headers_are_not_passed_on() {
        for h in [
            "authorization",
            "impersonate-user",
            "impersonate-extra-x",
            "x-remote-user",
            "x-remote-group",
            "connection",
        ] {
            assert!(dropped(&HeaderName::from_static(h)), "{h}");
        }
        for h in ["accept", "content-type", "user-agent", "audit-id"] {
            assert!(!dropped(&HeaderName::from_static(h)), "{h}");
        }
        let mut headers = HeaderMap::new();
        let mut user = UserInfo::new("jane", ["dev", "system:authenticated"]);
        user.extra.insert("example.com/scope".into(), vec!["a".into(), "b".into()]);
        identity_headers(&mut headers, &user).unwrap();
        assert_eq!(headers.get("x-remote-user").unwrap(), "jane");
        // UTF-8 names pass as their bytes; a control character fails the request.
        let mut h = HeaderMap::new();
        identity_headers(&mut h, &UserInfo::new("jürgen", ["dev"])).unwrap();
        assert_eq!(h.get("x-remote-user").unwrap().as_bytes(), "jürgen".as_bytes());
        assert!(identity_headers(&mut HeaderMap::new(), &UserInfo::new("a\nb", ["dev"])).is_err());
        assert_eq!(headers.get_all("x-remote-group").iter().count(), 2);
        assert_eq!(headers.get_all("x-remote-extra-example.com%2Fscope").iter().count(), 2);
    }
}
