//! A work queue that runs each key's reconcile at most once at a time: adding a key that is
//! queued does nothing, adding one that is running runs it again afterwards. Keys can be added
//! after a delay (a sleeping task per delayed key; nothing polls).

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

struct State<K> {
    queued: HashSet<K>,
    running: HashSet<K>,
    again: HashSet<K>,
}

/// The queue.
pub struct Queue<K> {
    tx: mpsc::UnboundedSender<K>,
    state: Mutex<State<K>>,
}

impl<K: Clone + Eq + Hash + Send + 'static> Queue<K> {
    /// A queue and the receiver its worker reads.
    pub fn new() -> (Arc<Queue<K>>, mpsc::UnboundedReceiver<K>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = State { queued: HashSet::new(), running: HashSet::new(), again: HashSet::new() };
        (Arc::new(Queue { tx, state: Mutex::new(state) }), rx)
    }

    /// How many keys wait to be taken.
    pub fn waiting(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).queued.len()
    }

    /// Queues `key`.
    pub fn add(&self, key: K) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.running.contains(&key) {
            s.again.insert(key);
        } else if s.queued.insert(key.clone()) {
            let _ = self.tx.send(key);
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        let weak: Weak<Queue<K>> = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(q) = weak.upgrade() {
                q.add(key);
            }
        });
    }

    /// Marks `key` as running (the worker calls this as it takes the key).
    pub fn start(&self, key: &K) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.queued.remove(key);
        s.running.insert(key.clone());
    }

    /// Marks `key` as done, queueing it again if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let again = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.running.remove(key);
            s.again.remove(key)
        };
        if again {
            self.add(key.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deduplicates_and_reruns() {
        let (q, mut rx) = Queue::new();
        q.add(1);
        q.add(1);
        q.add(2);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert!(rx.try_recv().is_err(), "1 was queued once");
        q.start(&1);
        q.add(1);
        assert!(rx.try_recv().is_err(), "a running key is not queued twice");
        q.done(&1);
        assert_eq!(rx.recv().await, Some(1), "added while running: runs again");
        q.add_after(3, Duration::from_millis(10));
        assert_eq!(rx.recv().await, Some(3));
    }
}
