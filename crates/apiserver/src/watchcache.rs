//! Watch fan-out: one store watch per resource type, shared by every watcher of that type.
//!
//! A [`WatchCache`] follows the store under one resource's key prefix, decodes each change
//! once into a [`Change`] (whose JSON encoding is also computed once, on first use), keeps a
//! short window of recent changes, and broadcasts each change to its subscribers. A watcher
//! starting at a revision inside the window replays the window and follows the broadcast; one
//! starting before the window (or falling behind the broadcast) reads from the store's own
//! history instead, which the store keeps much longer — and only if that is compacted too does
//! the client get `410 Gone`. The window is small and time-bounded so that an idle tenant's
//! caches cost almost nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::broadcast;
use vt_store::{Event, Revision, Store, StoreError};

use crate::object;

/// Changes kept for replay per resource type.
const WINDOW: usize = 128;
/// Oldest change kept in the window.
const MAX_AGE: Duration = Duration::from_secs(120);
/// Changes buffered per subscriber before it counts as lagging.
const BROADCAST: usize = 1024;

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
        self.json.get_or_init(|| Bytes::from(serde_json::to_vec(&*self.object).unwrap_or_default()))
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
    tx: broadcast::Sender<Arc<Change>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a subscriber gets: the changes to replay, then the live broadcast.
pub struct Subscription {
    /// Changes after the requested revision that are already in the window.
    pub replay: Vec<Arc<Change>>,
    /// The live changes.
    pub live: broadcast::Receiver<Arc<Change>>,
}

impl WatchCache {
    /// Starts following the store under `prefix`.
    pub async fn start(store: Arc<dyn Store>, prefix: Bytes) -> Result<Arc<WatchCache>, StoreError> {
        let current = store.current_revision().await?;
        let stream = store.watch(&prefix, current + 1).await?;
        let (tx, _) = broadcast::channel(BROADCAST);
        let cache = Arc::new_cyclic(|weak: &std::sync::Weak<WatchCache>| {
            let weak = weak.clone();
            let task = tokio::spawn(async move {
                let mut stream = stream;
                let mut next = current + 1;
                loop {
                    match stream.next().await {
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
                tx,
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
        w.changes.push_back((now, change.clone()));
        // Sent under the lock, so a subscriber sees each change exactly once: either in its
        // replay or on its receiver.
        let _ = self.tx.send(change);
    }

    /// The last revision this cache has seen a change at.
    pub fn head(&self) -> Revision {
        self.window.lock().unwrap_or_else(|p| p.into_inner()).head
    }

    /// Subscribes to the changes after revision `after`, or `None` if the window no longer
    /// holds all of them (the caller then reads the store's history).
    pub fn subscribe(&self, after: Revision) -> Option<Subscription> {
        let w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if after < w.evicted_up_to {
            return None;
        }
        let replay = w.changes.iter().filter(|(_, c)| c.revision > after).map(|(_, c)| c.clone()).collect();
        Some(Subscription { replay, live: self.tx.subscribe() })
    }

    /// The number of live subscribers.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}
