//! Watch: kube-apiserver's streaming protocol over the shared watch caches.
//!
//! * `resourceVersion` unset or `0`: synthetic `ADDED` events for every matching object (in key
//!   order), then the changes after that snapshot.
//! * `resourceVersion=N`: the changes after `N`, from the cache window or, if older, from the
//!   store's history; if the store compacted `N` away, one `ERROR` event with a 410 `Expired`
//!   Status ends the stream.
//! * `sendInitialEvents=true` (with `resourceVersionMatch=NotOlderThan`): the initial events,
//!   then a `BOOKMARK` annotated `k8s.io/initial-events-end`, then changes.
//! * Objects moving in or out of the selectors produce `ADDED` / `DELETED`; `BOOKMARK`s every
//!   minute with `allowWatchBookmarks`; the stream ends after `timeoutSeconds` (default 30 to
//!   60 minutes) and, like kube-apiserver, silently when the watcher falls too far behind.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode, header};
use rand::RngExt;
use serde_json::{Value, json};
use vt_store::{Revision, StoreError};

use crate::body::{self, Body};
use crate::negotiate::Output;
use crate::registry::ResourceType;
use crate::rest::Op;
use crate::rest::list::{Filter, wait_for_revision};
use crate::status::{ApiError, ApiResult, FieldError};
use crate::watchcache::Change;
use crate::{object, rest, strategy};

fn frame(kind: &str, object_json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(object_json.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object_json);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

/// A BOOKMARK event's object.
fn bookmark(rt: &ResourceType, rv: Revision, initial_end: bool) -> Vec<u8> {
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    crate::gojson::to_vec(&json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta}))
}

/// An ERROR event's Status.
fn error_status(e: &ApiError) -> Vec<u8> {
    crate::gojson::to_vec(&e.to_status())
}

/// How each event's object is rendered: as stored, as a one-row Table (`as=Table`; column
/// definitions only in the connection's first event, as kube-apiserver), or as
/// `PartialObjectMetadata`.
enum Transform {
    None,
    Table {
        converter: crate::table::Converter,
        headers_sent: bool,
    },
    Partial(String),
    /// Length-prefixed protobuf `WatchEvent`s.
    Protobuf,
}

impl Transform {
    fn of(op: &Op<'_>) -> Transform {
        match &op.output {
            Output::Table(version) => Transform::Table { converter: op.table_converter(version), headers_sent: false },
            Output::PartialMetadata(version) => Transform::Partial(version.clone()),
            Output::Protobuf => Transform::Protobuf,
            _ => Transform::None,
        }
    }

    fn content_type(&self) -> &'static str {
        match self {
            Transform::Protobuf => "application/vnd.kubernetes.protobuf;stream=watch",
            _ => "application/json",
        }
    }

    /// The frame of one event.
    fn frame(&mut self, kind: &str, object_json: &[u8]) -> Bytes {
        let converted = match self {
            Transform::None => return frame(kind, object_json),
            Transform::Protobuf => {
                let obj: Value = serde_json::from_slice(object_json).unwrap_or(Value::Null);
                // Every object of a protobuf-capable kind encodes; an empty frame would only
                // desynchronise the length framing, so a failure ends nothing but this event.
                return crate::protobuf::encode::watch_frame(kind, &obj).map(Bytes::from).unwrap_or_default();
            }
            _ if kind == "ERROR" => {
                if let Transform::Table { headers_sent, .. } = self {
                    *headers_sent = true;
                }
                return frame(kind, object_json);
            }
            Transform::Table { converter, headers_sent } => {
                let obj: Value = serde_json::from_slice(object_json).unwrap_or(Value::Null);
                let t = converter.convert(&obj, !*headers_sent);
                *headers_sent = true;
                t
            }
            Transform::Partial(version) => {
                let obj: Value = serde_json::from_slice(object_json).unwrap_or(Value::Null);
                rest::partial_metadata(&obj, version)
            }
        };
        frame(kind, &crate::gojson::to_vec(&converted))
    }
}

/// Where a watcher's changes come from.
enum Source {
    /// The shared cache.
    Cache(crate::watchcache::Subscription),
    /// A watch of its own on the store's history (for starts older than the cache window).
    Store(vt_store::WatchStream),
}

impl Source {
    /// The next change; `None` ends the watch (closed, or fell behind).
    async fn next(&mut self) -> Option<Result<Arc<Change>, StoreError>> {
        match self {
            Source::Cache(sub) => match sub.recv().await {
                Ok(c) => Some(Ok(c)),
                // Too slow or cache gone: end the watch; the client resumes from its last RV.
                Err(_) => None,
            },
            Source::Store(s) => loop {
                match s.next().await? {
                    Ok(ev) => {
                        if let Some(c) = Change::from_event(&ev) {
                            return Some(Ok(Arc::new(c)));
                        }
                    }
                    Err(e) => return Some(Err(e)),
                }
            },
        }
    }
}

/// The JSON of an object for `rt`'s version (converted if it is not the storage version).
fn object_json(rt: &ResourceType, change: &Change, obj: &Value, is_change_object: bool) -> Bytes {
    if strategy::converts(rt) {
        let mut v = obj.clone();
        strategy::from_storage(rt, &mut v);
        return Bytes::from(crate::gojson::to_vec(&v));
    }
    if is_change_object { change.object_json().clone() } else { Bytes::from(crate::gojson::to_vec(obj)) }
}

/// The event a change produces for a watcher with `filter`, if any: its type and object.
fn event_for(rt: &ResourceType, change: &Change, filter: &Filter) -> Option<(&'static str, Bytes)> {
    let view = |o: &Value| -> Value {
        if strategy::converts(rt) {
            let mut v = o.clone();
            strategy::from_storage(rt, &mut v);
            v
        } else {
            o.clone()
        }
    };
    let matches = |o: &Value| {
        if strategy::converts(rt) { filter.matches(&view(o)) } else { filter.matches(o) }
    };
    let cur = !change.deleted && matches(&change.object);
    let old = change.prev.as_deref().is_some_and(matches);
    if change.deleted {
        return old.then(|| ("DELETED", object_json(rt, change, &change.object, true)));
    }
    match (cur, old) {
        (true, false) => Some(("ADDED", object_json(rt, change, &change.object, true))),
        (true, true) => Some(("MODIFIED", object_json(rt, change, &change.object, true))),
        (false, true) => {
            // Left the selection: the previous state, at the change's revision.
            let mut prev = change.prev.as_deref().cloned().unwrap_or(Value::Null);
            object::set_resource_version(&mut prev, change.revision);
            Some(("DELETED", object_json(rt, change, &prev, false)))
        }
        (false, false) => None,
    }
}

/// Unsent bytes a watch may hold in the server before it waits for its client: with the
/// connection's own buffers, this is what an unread watch costs, whatever the cluster holds.
pub(crate) const WATCH_BUFFER: usize = 8 << 10;
/// Objects read from the store per page of initial events, at first: the initial state is
/// streamed a page at a time from one snapshot revision, never held whole for one watcher,
/// and later pages are sized to hold about [`WATCH_BUFFER`] bytes of the objects seen so far
/// (between [`INITIAL_PAGE`] and [`MAX_PAGE`] objects).
const INITIAL_PAGE: usize = 2;
const MAX_PAGE: usize = 500;
/// How long a watcher may leave its buffer full while changes wait: then it is closed, as
/// kube-apiserver closes unresponsive watchers, and its client resumes or re-lists.
const SLOW_WATCHER: Duration = Duration::from_secs(5);
/// How long a client may leave its buffer full while its initial events are sent (a big list
/// takes a slow client a while to decode).
const SLOW_INITIAL: Duration = Duration::from_secs(60);

/// `GET ...?watch=true`.
pub(crate) async fn watch(op: &Op<'_>) -> ApiResult<Response<Body>> {
    let filter = Filter::parse(op)?;
    let rv = op.param("resourceVersion").to_string();
    let rvm = op.param("resourceVersionMatch");
    let send_initial_param = op.query.get("sendInitialEvents").map(|v| crate::request::parse_bool(v));
    let bookmarks = op.flag("allowWatchBookmarks");
    let invalid = |c: FieldError| rest::invalid_options("ListOptions", c);
    if send_initial_param.is_some() && rvm != "NotOlderThan" {
        return Err(invalid(FieldError::forbidden(
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        )));
    }
    if !rvm.is_empty() && send_initial_param.is_none() {
        return Err(invalid(FieldError::forbidden(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        )));
    }
    if !matches!(rvm, "" | "NotOlderThan") {
        return Err(invalid(FieldError::not_supported("resourceVersionMatch", &json!(rvm), &["NotOlderThan"])));
    }
    let start: Option<Revision> = match rv.as_str() {
        "" | "0" => None,
        s => Some(s.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid resource version: resourceVersion: Invalid value: {s:?}: strconv.ParseUint: parsing {s:?}: invalid syntax"))
        })?),
    };
    let send_initial = send_initial_param.unwrap_or(start.is_none());
    let timeout = match op.param("timeoutSeconds") {
        "" => Duration::from_secs(rand::rng().random_range(1800..3600)),
        t => Duration::from_secs(
            t.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
    };
    let cache = op.api.cache(&op.rt.key_prefix()).await?;
    let (tx, body) = body::channel(WATCH_BUFFER);
    let transform = Transform::of(op);
    let content_type = transform.content_type();
    // The initial state: its first page is read now (fixing the snapshot's revision and
    // answering errors as HTTP errors), the rest as the client takes it.
    let (after, initial) = if send_initial {
        if let (Some(n), Some(true)) = (start, send_initial_param) {
            wait_for_revision(op, n).await?;
        }
        let pager = Pager::new(op);
        let (first, revision, more) = pager.page(None, 0, INITIAL_PAGE).await.map_err(|e| rest_err(op, e))?;
        let end_bookmark = send_initial_param == Some(true) && bookmarks;
        (revision, Some(Initial { pager, first, more, end_bookmark }))
    } else {
        let after = match start {
            Some(n) => n,
            None => op.store().current_revision().await.map_err(|e| rest_err(op, e))?,
        };
        (after, None)
    };
    let state = Stream {
        rt: op.rt.clone(),
        filter,
        tx,
        last: after,
        start: after,
        bookmarks,
        every: op.api.config().bookmark_interval,
        timeout,
        cache,
        transform,
        store: op.store().clone(),
        prefix: op.rt.key_prefix(),
        stopped: op.api.stopped(),
        api: op.api.downgrade(),
    };
    tokio::spawn(state.run(initial));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .expect("valid response"))
}

fn rest_err(op: &Op<'_>, e: StoreError) -> ApiError {
    crate::status::from_store(e, &op.gr(), "")
}

/// Reads a watch's initial state from the store, a page at a time, at one revision.
struct Pager {
    store: Arc<dyn vt_store::Store>,
    prefix: String,
}

impl Pager {
    fn new(op: &Op<'_>) -> Pager {
        Pager { store: op.store().clone(), prefix: op.rt.list_prefix(&op.ns) }
    }

    /// The page of `limit` objects after `start` at `revision` (0: the latest, which the
    /// answer names), and whether more follow.
    async fn page(
        &self,
        start: Option<bytes::Bytes>,
        revision: Revision,
        limit: usize,
    ) -> Result<(Vec<vt_store::KeyValue>, Revision, bool), StoreError> {
        let opts = vt_store::ListOptions { limit, start, revision };
        let page = self.store.list(self.prefix.as_bytes(), opts).await?;
        Ok((page.kvs, page.revision, page.more))
    }
}

/// The initial events still to send.
struct Initial {
    pager: Pager,
    first: Vec<vt_store::KeyValue>,
    more: bool,
    /// Whether the initial events end with the `k8s.io/initial-events-end` bookmark.
    end_bookmark: bool,
}

struct Stream {
    rt: Arc<ResourceType>,
    filter: Filter,
    tx: body::Sender,
    last: Revision,
    start: Revision,
    bookmarks: bool,
    every: Duration,
    timeout: Duration,
    cache: Arc<crate::watchcache::WatchCache>,
    transform: Transform,
    store: Arc<dyn vt_store::Store>,
    prefix: String,
    /// Fires when the server stops (or sleeps): the watch ends.
    stopped: tokio::sync::watch::Receiver<()>,
    /// The server, for custom resources a conversion webhook converts (weak: a watch does not
    /// keep a stopped server).
    api: crate::WeakApiServer,
}

impl Stream {
    /// Sends a frame; `false` when the watch must end (client gone, or stalled past `patience`).
    async fn send(&self, frame: Bytes, patience: Duration) -> bool {
        if frame.is_empty() {
            return true;
        }
        match self.tx.send_within(frame, patience).await {
            Ok(()) => true,
            Err(body::SendError::Stalled) => {
                tracing::debug!(resource = %self.rt.plural, "closing an unresponsive watcher");
                false
            }
            Err(body::SendError::Closed) => false,
        }
    }

    async fn send_change(&mut self, c: &Change) -> bool {
        if c.revision <= self.last {
            return true;
        }
        self.last = c.revision;
        match event_for(&self.rt, c, &self.filter) {
            Some((kind, object)) => {
                let Some(object) = self.converted(object).await else { return false };
                let f = self.transform.frame(kind, &object);
                self.send(f, SLOW_WATCHER).await
            }
            None => true,
        }
    }

    /// An event's object as the watched version serves it: through the CRD's conversion
    /// webhook when it has one. `None` ends the watch: the server is gone, or the conversion
    /// failed, whose error was sent as kube's watch sends one.
    async fn converted(&mut self, object: Bytes) -> Option<Bytes> {
        if crate::crd::conversion::webhook(&self.rt).is_none() {
            return Some(object);
        }
        let api = self.api.upgrade()?;
        let obj: Value = serde_json::from_slice(&object).ok()?;
        // A stopping server does not wait for a slow webhook.
        let answer = tokio::select! {
            a = crate::crd::conversion::served(&api, &self.rt, obj) => a,
            _ = self.stopped.changed() => return None,
        };
        drop(api);
        match answer {
            Ok(v) => Some(Bytes::from(crate::gojson::to_vec(&v))),
            Err(e) => {
                let f = self.transform.frame("ERROR", &error_status(&e));
                let _ = self.send(f, SLOW_WATCHER).await;
                None
            }
        }
    }

    /// Streams the initial events a page at a time; `false` ends the watch.
    async fn send_initial(&mut self, initial: Initial) -> bool {
        let Initial { pager, first, mut more, end_bookmark } = initial;
        let mut page = first;
        let (mut objects, mut bytes) = (0usize, 0usize);
        loop {
            let next_start = page.last().map(|kv| vt_store::key_successor(&kv.key));
            objects += page.len();
            bytes += page.iter().map(|kv| kv.value.len()).sum::<usize>();
            // Sent objects leave memory as they go (the page is consumed front to back).
            page.reverse();
            while let Some(kv) = page.pop() {
                let Ok(obj) = crate::rest::decode(&self.rt, &kv) else {
                    tracing::warn!(key = %String::from_utf8_lossy(&kv.key), "skipping an undecodable stored object");
                    continue;
                };
                if !self.filter.matches(&obj) {
                    continue;
                }
                let Some(object) = self.converted(Bytes::from(crate::gojson::to_vec(&obj))).await else { return false };
                let f = self.transform.frame("ADDED", &object);
                if !self.send(f, SLOW_INITIAL).await {
                    return false;
                }
            }
            if !more {
                break;
            }
            let limit = (WATCH_BUFFER * objects / bytes.max(1)).clamp(INITIAL_PAGE, MAX_PAGE);
            match pager.page(next_start, self.start, limit).await {
                Ok((kvs, _, m)) => {
                    page = kvs;
                    more = m;
                }
                Err(StoreError::Compacted { .. }) => {
                    // The snapshot is gone while a slow client read it: as after any broken
                    // watch, it lists again.
                    let e = ApiError::expired("The resourceVersion for the provided watch is too old.");
                    let f = self.transform.frame("ERROR", &error_status(&e));
                    let _ = self.send(f, SLOW_WATCHER).await;
                    return false;
                }
                Err(_) => return false,
            }
        }
        if end_bookmark {
            let f = self.transform.frame("BOOKMARK", &bookmark(&self.rt, self.start, true));
            return self.send(f, SLOW_INITIAL).await;
        }
        true
    }

    /// Where the changes after `self.start` come from, or `None` after a 410 has been sent.
    async fn source(&mut self) -> Option<Source> {
        if let Some(sub) = self.cache.subscribe(self.start) {
            return Some(Source::Cache(sub));
        }
        match self.store.watch(self.prefix.as_bytes(), self.start + 1).await {
            Ok(s) => Some(Source::Store(s)),
            Err(StoreError::Compacted { .. }) => {
                let current = self.store.current_revision().await.unwrap_or(0);
                let e = ApiError::expired(format!("too old resource version: {} ({current})", self.start));
                let f = self.transform.frame("ERROR", &error_status(&e));
                let _ = self.send(f, SLOW_WATCHER).await;
                None
            }
            Err(_) => None,
        }
    }

    async fn run(mut self, initial: Option<Initial>) {
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut stopped = self.stopped.clone();
        if let Some(initial) = initial {
            let sent = tokio::select! {
                _ = &mut deadline => return,
                _ = stopped.changed() => return,
                sent = self.send_initial(initial) => sent,
            };
            if !sent {
                return;
            }
        }
        let Some(mut source) = self.source().await else { return };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + self.every, self.every);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = stopped.changed() => return,
                _ = tick.tick(), if self.bookmarks => {
                    let rv = self.last.max(self.cache.head());
                    if rv > self.start {
                        let f = self.transform.frame("BOOKMARK", &bookmark(&self.rt, rv, false));
                        if !self.send(f, SLOW_WATCHER).await {
                            return;
                        }
                    }
                }
                _ = self.tx.closed() => return,
                next = source.next() => match next {
                    Some(Ok(c)) => if !self.send_change(&c).await { return },
                    Some(Err(StoreError::Compacted { .. })) => {
                        let e = ApiError::expired("The resourceVersion for the provided watch is too old.");
                        let f = self.transform.frame("ERROR", &error_status(&e));
                        let _ = self.send(f, SLOW_WATCHER).await;
                        return;
                    }
                    Some(Err(_)) | None => return,
                },
            }
        }
    }
}
