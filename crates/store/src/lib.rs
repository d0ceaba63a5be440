//! A revisioned key-value store with etcd's semantics, the storage layer under every vt API
//! server.
//!
//! * One monotonically increasing **revision** per store; every write bumps it and an object's
//!   `metadata.resourceVersion` is the revision of its last write.
//! * `create` fails when the key exists; `update` and `delete` are guarded by the revision the
//!   caller last saw (optimistic concurrency).
//! * `list` reads a consistent snapshot, paginated, at the latest or an older revision.
//! * `watch` streams every change under a prefix, in revision order and without gaps, from any
//!   revision that has not been compacted, each event carrying the previous value.
//! * `compact` forgets history older than a revision; reads and watches that need it fail with
//!   [`StoreError::Compacted`] (the API server answers `410 Gone`).
//! * Keys may carry a time to live; expired keys are deleted like any other key, so watchers
//!   see the deletion (Kubernetes Events live about an hour).
//!
//! Two backends implement [`Store`]: [`sqlite::SqliteStore`], the embedded default (one file
//! per store, group commit, acknowledged only after `fsync`), and [`etcd::EtcdStore`] for
//! users who outgrow one machine (many stores share one etcd cluster under distinct prefixes).

pub mod error;
pub mod etcd;
mod keys;
pub mod sqlite;

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub use error::{Result, StoreError};
pub use keys::prefix_end;

/// A store revision. Revisions start at 1 for an empty store and grow by one with every write.
pub type Revision = i64;

/// A key with its value and the revisions that created and last modified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, any bytes.
    pub key: Bytes,
    /// The value, any bytes.
    pub value: Bytes,
    /// The revision of the write that created this key (since it last did not exist).
    pub create_revision: Revision,
    /// The revision of the last write to this key.
    pub mod_revision: Revision,
}

/// One change observed by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The key was created or updated.
    Put {
        /// The key as written.
        kv: KeyValue,
        /// The key before this write; `None` when this write created it (or when the previous
        /// value was compacted away, which only happens for an event exactly at the compacted
        /// revision).
        prev: Option<KeyValue>,
    },
    /// The key was deleted (explicitly or because it expired).
    Delete {
        /// The deleted key.
        key: Bytes,
        /// The revision of the deletion.
        revision: Revision,
        /// The key's last value before the deletion.
        prev: Option<KeyValue>,
    },
}

impl Event {
    /// The revision at which this change happened.
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    /// The key this change is about.
    pub fn key(&self) -> &Bytes {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }
}

/// Options of [`Store::list`].
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Return at most this many keys; `0` means no limit.
    pub limit: usize,
    /// Start at this key (inclusive) instead of at the prefix; it must lie under the prefix.
    /// Pagination passes the successor of the last key of the previous page
    /// (see [`key_successor`]).
    pub start: Option<Bytes>,
    /// Read at this revision; `0` reads the latest. Later pages of one paginated list pass the
    /// revision returned by the first page, so the whole list is one consistent snapshot.
    pub revision: Revision,
}

/// The answer of [`Store::list`].
#[derive(Clone, Debug, Default)]
pub struct ListResult {
    /// The keys, in ascending byte order.
    pub kvs: Vec<KeyValue>,
    /// The revision of the snapshot this page was read from.
    pub revision: Revision,
    /// Whether more keys under the prefix follow the last returned one.
    pub more: bool,
}

/// The smallest key greater than `key`: the start of the next page after `key`.
pub fn key_successor(key: &[u8]) -> Bytes {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    Bytes::from(next)
}

/// A stream of watch events. It ends with an error when the watch cannot go on (the store was
/// closed, or the watcher fell behind compaction); the caller then re-lists and watches again.
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// A revisioned key-value store. See the crate documentation for the semantics every backend
/// guarantees; one conformance suite (`tests/conformance.rs`) checks them on every backend.
pub trait Store: Send + Sync + 'static {
    /// Reads a key at the latest revision.
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<KeyValue>>>;

    /// Lists the keys starting with `prefix` from one consistent snapshot.
    fn list<'a>(&'a self, prefix: &'a [u8], opts: ListOptions) -> BoxFuture<'a, Result<ListResult>>;

    /// Creates `key`, failing with [`StoreError::AlreadyExists`] if it exists. Returns the
    /// revision of the write. With `ttl`, the key is deleted once it expires.
    fn create<'a>(&'a self, key: &'a [u8], value: Bytes, ttl: Option<Duration>) -> BoxFuture<'a, Result<Revision>>;

    /// Replaces the value of `key` if its last write was at revision `expected`; otherwise
    /// fails with [`StoreError::Conflict`] (carrying the current key) or
    /// [`StoreError::NotFound`]. Returns the revision of the write.
    fn update<'a>(
        &'a self,
        key: &'a [u8],
        value: Bytes,
        expected: Revision,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Revision>>;

    /// Deletes `key`, if `expected` is given only when its last write was at that revision.
    /// Returns the revision of the deletion and the deleted key.
    fn delete<'a>(&'a self, key: &'a [u8], expected: Option<Revision>) -> BoxFuture<'a, Result<(Revision, KeyValue)>>;

    /// Watches the keys starting with `prefix`. With `from == 0` the stream carries the
    /// changes after the current revision; otherwise every change at `from` or later, which
    /// fails with [`StoreError::Compacted`] if `from` is older than the compacted revision.
    fn watch<'a>(&'a self, prefix: &'a [u8], from: Revision) -> BoxFuture<'a, Result<WatchStream>>;

    /// The store's current revision (the revision of its last write).
    fn current_revision(&self) -> BoxFuture<'_, Result<Revision>>;

    /// Discards the history before `revision`. Reads at older revisions and watches starting
    /// before it fail with [`StoreError::Compacted`] afterwards; the state at `revision` and
    /// everything after it stay readable. Compacting at or below the compacted revision is a
    /// no-op; above the current revision it fails with [`StoreError::FutureRevision`].
    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>>;
}
