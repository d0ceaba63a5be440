//! Watches on the SQLite backend.
//!
//! A watcher subscribes to the writer's broadcast of committed groups *before* it reads history
//! from the log, so every revision is covered by one or the other: history up to the snapshot it
//! read, live groups after it. Duplicates are dropped by revision. A watcher that falls behind
//! the broadcast buffer goes back to the log, so a slow consumer never sees a gap — only, if it
//! falls behind compaction too, a final [`StoreError::Compacted`].

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use super::reader::Readers;
use crate::{Event, Result, Revision, StoreError, WatchStream};

/// Events read from the log per page while catching up.
pub(super) const PAGE: usize = 1000;
/// Events buffered between a watcher task and its consumer.
const BUFFER: usize = 256;

/// What goes through a watcher's channel: boxed, because the channel allocates its slots in
/// blocks of 32 whatever it holds — 32 inline events (~7 KiB) per watch, for every watch of
/// every idle cluster, where 32 pointers take 256 bytes.
type Item = Box<Result<Event>>;

/// Starts a watcher task that delivers every event under `prefix` from revision `next` on.
/// `first` is the already read first page of history (it validated `next`).
pub(super) fn spawn(
    readers: Arc<Readers>,
    live: broadcast::Receiver<Arc<[Event]>>,
    prefix: Bytes,
    next: Revision,
    first: Vec<Event>,
    caught_up: bool,
) -> WatchStream {
    let (tx, rx) = mpsc::channel::<Item>(BUFFER);
    tokio::spawn(run(readers, live, prefix, next, first, caught_up, tx));
    Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (*item, rx)) }))
}

async fn run(
    readers: Arc<Readers>,
    mut live: broadcast::Receiver<Arc<[Event]>>,
    prefix: Bytes,
    mut next: Revision,
    first: Vec<Event>,
    mut caught_up: bool,
    tx: mpsc::Sender<Item>,
) {
    for ev in first {
        next = next.max(ev.revision() + 1);
        if tx.send(Box::new(Ok(ev))).await.is_err() {
            return;
        }
    }
    loop {
        // Catch up from the log until a page reaches the head of the store.
        while !caught_up {
            let (r, p) = (readers.clone(), prefix.clone());
            let page = tokio::task::spawn_blocking(move || r.read_log(&p, next, PAGE))
                .await
                .unwrap_or(Err(StoreError::Closed));
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(Box::new(Err(e))).await;
                    return;
                }
            };
            let head = page.head;
            caught_up = page.complete;
            for ev in page.events {
                next = ev.revision() + 1;
                if tx.send(Box::new(Ok(ev))).await.is_err() {
                    return;
                }
            }
            if caught_up {
                next = next.max(head + 1);
            }
        }
        // Follow the writer's committed groups.
        loop {
            match live.recv().await {
                Ok(group) => {
                    for ev in group.iter() {
                        if ev.revision() >= next
                            && ev.key().starts_with(&prefix)
                            && tx.send(Box::new(Ok(ev.clone()))).await.is_err()
                        {
                            return;
                        }
                    }
                    if let Some(last) = group.last() {
                        next = next.max(last.revision() + 1);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    caught_up = false;
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = tx.send(Box::new(Err(StoreError::Closed))).await;
                    return;
                }
            }
        }
    }
}
