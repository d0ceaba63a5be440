//! An in-memory mirror of the objects under a store prefix: one list, then one watch, with a
//! fresh list whenever the watch ends (compaction, store restart). Authorization and
//! admission read their configuration from mirrors, never from the store on the request path.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use vt_store::{Event, ListOptions, Revision, Store, StoreError, key_successor};

/// A change a mirror applies.
pub(crate) enum Change<'a> {
    /// Everything under the prefix (replaces what was there).
    Reset(Vec<(Bytes, Bytes)>),
    /// A key was written.
    Put(&'a [u8], &'a [u8]),
    /// A key was deleted.
    Delete(&'a [u8]),
}

async fn list_all(store: &dyn Store, prefix: &str) -> Result<(Vec<(Bytes, Bytes)>, Revision), StoreError> {
    let mut out = Vec::new();
    let mut opts = ListOptions { limit: 500, ..Default::default() };
    loop {
        let page = store.list(prefix.as_bytes(), opts.clone()).await?;
        out.extend(page.kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone())));
        if !page.more {
            return Ok((out, page.revision));
        }
        opts.revision = page.revision;
        opts.start = page.kvs.last().map(|kv| key_successor(&kv.key));
    }
}

/// Loads `prefix` into `target` with `apply`, then keeps it current in the background until
/// `target` is dropped or the returned task is aborted (owners abort it when they drop, so
/// the task does not keep the store alive).
pub(crate) async fn follow<T: Send + Sync + 'static>(
    store: Arc<dyn Store>,
    prefix: &'static str,
    target: &Arc<T>,
    apply: fn(&T, Change<'_>),
) -> Result<tokio::task::AbortHandle, StoreError> {
    let (items, rev) = list_all(store.as_ref(), prefix).await?;
    apply(target, Change::Reset(items));
    let weak: Weak<T> = Arc::downgrade(target);
    let task = tokio::spawn(async move {
        let mut from = rev + 1;
        loop {
            if let Ok(mut watch) = store.watch(prefix.as_bytes(), from).await {
                while let Some(ev) = watch.next().await {
                    let Some(t) = weak.upgrade() else { return };
                    match ev {
                        Ok(Event::Put { kv, .. }) => {
                            from = kv.mod_revision + 1;
                            apply(&t, Change::Put(&kv.key, &kv.value));
                        }
                        Ok(Event::Delete { key, revision, .. }) => {
                            from = revision + 1;
                            apply(&t, Change::Delete(&key));
                        }
                        Err(_) => break,
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Some(t) = weak.upgrade() else { return };
            if let Ok((items, rev)) = list_all(store.as_ref(), prefix).await {
                apply(&t, Change::Reset(items));
                from = rev + 1;
            }
        }
    });
    Ok(task.abort_handle())
}
