//! Watch fan-out: one store watch per resource type, shared by every watcher of that type.
//!
//! A [`WatchCache`] follows the store under one resource's key prefix, decodes each change
//! once into a [`Change`] (whose JSON encoding is also computed once, on first use) and keeps a
//! window of recent changes. Subscribers read the window itself, each at its own position,
//! woken by a `watch` channel carrying the head revision: there is no per-subscriber buffer
//! and no broadcast ring, so a cache costs its window and nothing else. A watcher starting at a
//! revision inside the window reads on from there; one starting before the window (or falling
//! out of it because it is too slow) reads from the store's own history instead, which the
//! store keeps much longer — and only if that is compacted too does the client get
//! `410 Gone`. The window is bounded in length and age (old changes are dropped by a timer
//! that runs only while the window holds something), so an idle tenant's caches cost almost
//! nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::watch;
use vt_store::{Event, Revision, Store, StoreError};

use crate::object;

/// Changes kept per resource type (a subscriber further behind than this is lagging).
const WINDOW: usize = 512;
/// Oldest change kept in the window.
const MAX_AGE: Duration = Duration::from_secs(120);

/// One change to one object, shared by every watcher.
#[derive(Debug)]
pub struct Change {
    /// The store revision of the change.
    pub revision: Revision,
    /// Whether the object was deleted.
    pub deleted: bool,
    /// The object after the change; for a deletion, its last state, with the deletion's
    /// resource version (as kube-apiserver reports it).
    pub object: Arc<Value>,
    /// The object before the change, if it existed.
    pub prev: Option<Arc<Value>>,
    json: OnceLock<Bytes>,
}

impl Change {
    /// The object's JSON, encoded once.
    pub fn object_json(&self) -> &Bytes {
        self.json.get_or_init(|| Bytes::from(crate::gojson::to_vec(&self.object)))
    }

    /// Builds a change from a store event; `None` for values that are not JSON objects.
    pub fn from_event(ev: &Event) -> Option<Change> {
        let decode = |kv: &vt_store::KeyValue, rv: Revision| -> Option<Arc<Value>> {
            let mut v: Value = serde_json::from_slice(&kv.value).ok()?;
            v.is_object().then(|| {
                object::set_resource_version(&mut v, rv);
                Arc::new(v)
            })
        };
        match ev {
            Event::Put { kv, prev } => Some(Change {
                revision: kv.mod_revision,
                deleted: false,
                object: decode(kv, kv.mod_revision)?,
                prev: prev.as_ref().and_then(|p| decode(p, p.mod_revision)),
                json: OnceLock::new(),
            }),
            Event::Delete { revision, prev, .. } => {
                let prev = prev.as_ref()?;
                Some(Change {
                    revision: *revision,
                    deleted: true,
                    object: decode(prev, *revision)?,
                    prev: decode(prev, prev.mod_revision),
                    json: OnceLock::new(),
                })
            }
        }
    }
}

struct Window {
    changes: VecDeque<(Instant, Arc<Change>)>,
    /// Every change at or before this revision may be missing from the window.
    evicted_up_to: Revision,
    /// The last change seen.
    head: Revision,
}

/// The shared watch of one resource type.
pub struct WatchCache {
    window: Mutex<Window>,
    /// The head revision, for waking subscribers.
    head_tx: watch::Sender<Revision>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A subscriber's position in a cache's window.
pub struct Subscription {
    cache: std::sync::Weak<WatchCache>,
    head: watch::Receiver<Revision>,
    /// The revision of the last change delivered.
    after: Revision,
}

/// Why a subscription ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The subscriber fell out of the window (it resumes from the store's history).
    Lagged,
    /// The cache stopped.
    Closed,
}

impl Subscription {
    /// The next change after the last one delivered, waiting for it if need be.
    pub async fn recv(&mut self) -> Result<Arc<Change>, Ended> {
        loop {
            {
                let cache = self.cache.upgrade().ok_or(Ended::Closed)?;
                let w = cache.window.lock().unwrap_or_else(|p| p.into_inner());
                if self.after < w.evicted_up_to {
                    return Err(Ended::Lagged);
                }
                let i = w.changes.partition_point(|(_, c)| c.revision <= self.after);
                if let Some((_, c)) = w.changes.get(i) {
                    self.after = c.revision;
                    return Ok(c.clone());
                }
                self.head.mark_unchanged();
            }
            self.head.changed().await.map_err(|_| Ended::Closed)?;
        }
    }
}

impl WatchCache {
    /// Starts following the store under `prefix`.
    pub async fn start(store: Arc<dyn Store>, prefix: Bytes) -> Result<Arc<WatchCache>, StoreError> {
        let current = store.current_revision().await?;
        let stream = store.watch(&prefix, current + 1).await?;
        let (head_tx, _) = watch::channel(current);
        let cache = Arc::new_cyclic(|weak: &std::sync::Weak<WatchCache>| {
            let weak = weak.clone();
            let task = tokio::spawn(async move {
                let mut stream = stream;
                let mut next = current + 1;
                loop {
                    // Sleep until the oldest change expires, if there is one.
                    let expiry = match weak.upgrade() {
                        Some(cache) => cache.oldest().map(|at| at + MAX_AGE),
                        None => return,
                    };
                    let event = match expiry {
                        Some(at) => tokio::select! {
                            ev = stream.next() => ev,
                            _ = tokio::time::sleep_until(at.into()) => {
                                if let Some(cache) = weak.upgrade() {
                                    cache.expire();
                                }
                                continue;
                            }
                        },
                        None => stream.next().await,
                    };
                    match event {
                        Some(Ok(ev)) => {
                            next = ev.revision() + 1;
                            let Some(cache) = weak.upgrade() else { return };
                            match Change::from_event(&ev) {
                                Some(change) => cache.push(Arc::new(change)),
                                None => tracing::warn!(
                                    revision = ev.revision(),
                                    "watch cache: skipping an undecodable object"
                                ),
                            }
                        }
                        Some(Err(StoreError::Closed)) | None => return,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "watch cache: store watch failed, restarting");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            let Some(cache) = weak.upgrade() else { return };
                            let from = match &e {
                                StoreError::Compacted { .. } => {
                                    // History is gone: nobody may resume from before now.
                                    let cur = match store.current_revision().await {
                                        Ok(c) => c,
                                        Err(_) => continue,
                                    };
                                    cache.window.lock().unwrap_or_else(|p| p.into_inner()).evicted_up_to = cur;
                                    cur + 1
                                }
                                _ => next,
                            };
                            match store.watch(&prefix, from).await {
                                Ok(s) => {
                                    stream = s;
                                    next = from;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "watch cache: cannot restart the store watch")
                                }
                            }
                        }
                    }
                }
            });
            WatchCache {
                window: Mutex::new(Window { changes: VecDeque::new(), evicted_up_to: current, head: current }),
                head_tx,
                task,
            }
        });
        Ok(cache)
    }

    fn push(&self, change: Arc<Change>) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while let Some((at, front)) = w.changes.front() {
            if w.changes.len() >= WINDOW || now.duration_since(*at) > MAX_AGE {
                let rev = front.revision;
                w.changes.pop_front();
                w.evicted_up_to = rev;
            } else {
                break;
            }
        }
        w.head = change.revision;
        let head = w.head;
        w.changes.push_back((now, change));
        drop(w);
        self.head_tx.send_replace(head);
    }

    /// When the oldest change in the window arrived.
    fn oldest(&self) -> Option<Instant> {
        self.window.lock().unwrap_or_else(|p| p.into_inner()).changes.front().map(|(at, _)| *at)
    }

    /// Drops the changes older than the window's age.
    fn expire(&self) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while let Some((at, front)) = w.changes.front() {
            if now.duration_since(*at) < MAX_AGE {
                break;
            }
            let rev = front.revision;
            w.changes.pop_front();
            w.evicted_up_to = rev;
        }
    }

    /// The last revision this cache has seen a change at.
    pub fn head(&self) -> Revision {
        self.window.lock().unwrap_or_else(|p| p.into_inner()).head
    }

    /// Subscribes to the changes after revision `after`, or `None` if the window no longer
    /// holds all of them (the caller then reads the store's history).
    pub fn subscribe(self: &Arc<Self>, after: Revision) -> Option<Subscription> {
        let w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if after < w.evicted_up_to {
            return None;
        }
        Some(Subscription { cache: Arc::downgrade(self), head: self.head_tx.subscribe(), after })
    }

    /// The number of live subscribers.
    pub fn subscribers(&self) -> usize {
        self.head_tx.receiver_count()
    }
}
