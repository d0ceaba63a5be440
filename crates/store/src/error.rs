//! The store's error type.

use crate::{KeyValue, Revision};

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything a store operation can fail with.
///
/// The first group are *logical* outcomes the caller is expected to handle (the API server maps
/// them to `AlreadyExists`, `Conflict`, `NotFound` and `Gone`); the second group are failures of
/// the storage itself, each with a message that says what is wrong with the file or the cluster.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create` found the key already present.
    #[error("key already exists at revision {revision}")]
    AlreadyExists {
        /// The revision of the existing key's last write.
        revision: Revision,
    },
    /// The key does not exist.
    #[error("key not found")]
    NotFound,
    /// A guarded `update`/`delete` expected another revision than the key's current one.
    #[error("revision conflict: key is at revision {}", current.mod_revision)]
    Conflict {
        /// The key as it currently is, so the caller can retry without another read.
        current: Box<KeyValue>,
    },
    /// The requested revision is older than the store's compacted revision.
    #[error("required revision {requested} has been compacted")]
    Compacted {
        /// The revision the caller asked for.
        requested: Revision,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("required revision {requested} is a future revision (current revision is {current})")]
    FutureRevision {
        /// The revision the caller asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// The caller passed an argument the store cannot accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Another process holds the store's lock.
    #[error("store is locked by another process: {0}")]
    Locked(String),
    /// The store has reached its size limit, or the disk is full.
    #[error("store is full: {0}")]
    Full(String),
    /// The store's file is damaged or is not a vt store.
    #[error("store file is corrupt or not a vt store: {0}")]
    Corrupt(String),
    /// The store cannot be opened or written (permissions, missing directory, unreachable etcd).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Any other failure reported by the backend.
    #[error("store backend error: {0}")]
    Backend(String),
    /// The store has been closed.
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// Whether this error describes a failure of the storage itself rather than a logical
    /// outcome of the request (exists, not found, conflict, compacted, ...).
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Locked(_)
                | StoreError::Full(_)
                | StoreError::Corrupt(_)
                | StoreError::Unavailable(_)
                | StoreError::Backend(_)
                | StoreError::Closed
        )
    }
}
