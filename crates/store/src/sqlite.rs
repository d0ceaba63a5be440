//! The embedded SQLite backend, vt's default.
//!
//! One database file per store, in WAL mode with `synchronous = FULL`. A single writer thread
//! commits concurrent writes in groups (one `fsync` per group) and acknowledges a write only
//! after its group committed; readers use their own connections concurrently. Every write is
//! appended to a history log that serves watches and reads at older revisions, and that a
//! [`CompactionPolicy`] trims so the file does not grow without bound. An advisory lock on
//! `<file>.lock` keeps a second process from opening the same store.

mod reader;
mod schema;
mod watch;
mod writer;

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{broadcast, oneshot};

use self::reader::Readers;
use self::writer::{Command, Op, Outcome, Request, Shared, Writer, WriterConfig, now_ms};
use crate::{KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError, WatchStream};

/// How history is trimmed automatically.
#[derive(Clone, Debug)]
pub struct CompactionPolicy {
    /// How often to compact; `Duration::ZERO` disables automatic compaction.
    pub interval: Duration,
    /// How many revisions of history to keep behind the current one. Watches and paginated
    /// lists can resume from any revision inside this window.
    pub retain_revisions: i64,
}

impl Default for CompactionPolicy {
    /// Every minute, keeping the last 10,000 revisions.
    fn default() -> Self {
        CompactionPolicy { interval: Duration::from_secs(60), retain_revisions: 10_000 }
    }
}

impl CompactionPolicy {
    /// No automatic compaction: history is only trimmed by explicit [`Store::compact`] calls.
    pub fn disabled() -> Self {
        CompactionPolicy { interval: Duration::ZERO, retain_revisions: 0 }
    }

    fn next_tick(&self) -> Option<Instant> {
        (!self.interval.is_zero()).then(|| Instant::now() + self.interval)
    }
}

/// Settings of a [`SqliteStore`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// Automatic history trimming.
    pub compaction: CompactionPolicy,
    /// Upper bound of the database file size; writes beyond it fail with [`StoreError::Full`].
    pub max_size_bytes: Option<u64>,
    /// Most writes committed in one group.
    pub max_group: usize,
    /// Page cache per connection, in KiB (kept small: a manager holds thousands of stores).
    pub cache_kib: u32,
    /// Read-only connections kept open between reads.
    pub max_idle_readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            compaction: CompactionPolicy::default(),
            max_size_bytes: None,
            max_group: 512,
            cache_kib: 512,
            max_idle_readers: 2,
        }
    }
}

/// Counters of a [`SqliteStore`], for metrics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqliteStats {
    /// The current revision.
    pub revision: Revision,
    /// The compacted revision: history before it is gone.
    pub compacted: Revision,
    /// Writes committed since the store was opened (including the writer's own expiry deletes).
    pub writes: u64,
    /// Transactions committed since the store was opened; each costs one `fsync`, so
    /// `writes / groups` is the group-commit factor.
    pub groups: u64,
}

/// A [`Store`] in one SQLite file. Cloning is cheap; all clones share one writer.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Arc<[crate::Event]>>,
    readers: Arc<Readers>,
    shared: Arc<Shared>,
}

/// Lists of at most this many keys are read inline on the calling task; longer ones (and
/// unlimited ones) on the blocking pool, so no async worker is held for long.
const INLINE_LIST_LIMIT: usize = 1000;

/// Watch groups buffered for live watchers before a slow one has to re-read the log. The
/// ring keeps its groups (whole values) until they are overwritten, watched or not, so an
/// idle cluster holds its last this-many writes in memory: kept small (a lagging watcher
/// reads the log, which it has to do after any gap anyway).
const BROADCAST_CAPACITY: usize = 128;

impl SqliteStore {
    /// Opens the store in the file at `path`, creating it (and its directory) if needed.
    ///
    /// Fails with [`StoreError::Locked`] if another process has it open,
    /// [`StoreError::Corrupt`] if the file is damaged or not a vt store, and
    /// [`StoreError::Unavailable`] if it cannot be created or written.
    pub async fn open(path: impl AsRef<Path>, opts: SqliteOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, opts))
            .await
            .map_err(|e| StoreError::Backend(format!("opening the store panicked: {e}")))?
    }

    fn open_blocking(path: PathBuf, opts: SqliteOptions) -> Result<Self> {
        if path.is_dir() {
            return Err(StoreError::Unavailable(format!(
                "{}: is a directory, expected a database file path",
                path.display()
            )));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("cannot create directory {}: {e}", dir.display())))?;
        }
        let lock = lock_file(&path)?;
        let conn = schema::open_writer(&path, opts.cache_kib, opts.max_size_bytes)?;
        let shared = Arc::new(Shared {
            revision: AtomicI64::new(0),
            compacted: AtomicI64::new(0),
            writes: AtomicU64::new(0),
            groups: AtomicU64::new(0),
        });
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let cfg =
            WriterConfig { path: path.clone(), max_group: opts.max_group.max(1), compaction: opts.compaction.clone() };
        let writer = Writer::new(conn, lock, cfg, shared.clone(), events.clone())?;
        let (commands, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("vt-store-writer".into())
            .spawn(move || {
                if let Some(ack) = writer.run(rx) {
                    // `writer` (connection and lock) is gone once `run` returned.
                    let _ = ack.send(());
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        let readers = Arc::new(Readers::new(path.clone(), opts.max_idle_readers, opts.cache_kib));
        Ok(SqliteStore { inner: Arc::new(Inner { path, commands, events, readers, shared }) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Counters of this store since it was opened.
    pub fn stats(&self) -> SqliteStats {
        let s = &self.inner.shared;
        SqliteStats {
            revision: s.revision.load(Ordering::Acquire),
            compacted: s.compacted.load(Ordering::Acquire),
            writes: s.writes.load(Ordering::Relaxed),
            groups: s.groups.load(Ordering::Relaxed),
        }
    }

    /// Finishes the queued writes, closes the file and releases its lock. Later calls on any
    /// clone fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.inner.commands.send(Command::Close(ack)).is_ok() {
            let _ = done.await;
        }
    }

    async fn write(&self, op: Op) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.inner.commands.send(Command::Write(Request { op, reply: Some(reply) })).map_err(|_| StoreError::Closed)?;
        answer.await.unwrap_or(Err(StoreError::Closed))
    }

    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Readers) -> Result<T> + Send + 'static) -> Result<T> {
        let readers = self.inner.readers.clone();
        tokio::task::spawn_blocking(move || f(&readers))
            .await
            .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

/// Takes the store's advisory lock so that no second process writes the same file.
fn lock_file(path: &Path) -> Result<File> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked(format!(
            "{} is in use by another process (lock {})",
            path.display(),
            lock_path.display()
        ))),
        Err(TryLockError::Error(e)) => {
            Err(StoreError::Unavailable(format!("cannot lock {}: {e}", lock_path.display())))
        }
    }
}

fn expires_at(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| now_ms().saturating_add(t.as_millis().min(i64::MAX as u128) as i64))
}

impl Store for SqliteStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        // A point read takes microseconds: cheaper inline than a hop to the blocking pool.
        Box::pin(async move { self.inner.readers.get(key) })
    }

    fn list<'a>(&'a self, prefix: &'a [u8], opts: ListOptions) -> BoxFuture<'a, Result<ListResult>> {
        if (1..=INLINE_LIST_LIMIT).contains(&opts.limit) {
            return Box::pin(async move { self.inner.readers.list(prefix, &opts) });
        }
        let prefix = prefix.to_vec();
        Box::pin(self.read(move |r| r.list(&prefix, &opts)))
    }

    fn create<'a>(&'a self, key: &'a [u8], value: Bytes, ttl: Option<Duration>) -> BoxFuture<'a, Result<Revision>> {
        let op = Op::Create { key: Bytes::copy_from_slice(key), value, expires_at: expires_at(ttl) };
        Box::pin(async move {
            match self.write(op).await? {
                Outcome::Written(rev) => Ok(rev),
                _ => Err(StoreError::Backend("unexpected outcome of create".into())),
            }
        })
    }

    fn update<'a>(
        &'a self,
        key: &'a [u8],
        value: Bytes,
        expected: Revision,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Revision>> {
        let op = Op::Update { key: Bytes::copy_from_slice(key), value, expected, expires_at: expires_at(ttl) };
        Box::pin(async move {
            match self.write(op).await? {
                Outcome::Written(rev) => Ok(rev),
                _ => Err(StoreError::Backend("unexpected outcome of update".into())),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a [u8], expected: Option<Revision>) -> BoxFuture<'a, Result<(Revision, KeyValue)>> {
        let op = Op::Delete { key: Bytes::copy_from_slice(key), expected };
        Box::pin(async move {
            match self.write(op).await? {
                Outcome::Deleted(rev, prev) => Ok((rev, prev)),
                _ => Err(StoreError::Backend("unexpected outcome of delete".into())),
            }
        })
    }

    fn watch<'a>(&'a self, prefix: &'a [u8], from: Revision) -> BoxFuture<'a, Result<WatchStream>> {
        let prefix = Bytes::copy_from_slice(prefix);
        Box::pin(async move {
            // Subscribe first: everything committed from now on reaches `live`.
            let live = self.inner.events.subscribe();
            if from <= 0 {
                let next = self.inner.shared.revision.load(Ordering::Acquire) + 1;
                return Ok(watch::spawn(self.inner.readers.clone(), live, prefix, next, Vec::new(), true));
            }
            let p = prefix.clone();
            let page = self.read(move |r| r.read_log(&p, from, watch::PAGE)).await?;
            let next = if page.complete { page.head + 1 } else { from };
            Ok(watch::spawn(self.inner.readers.clone(), live, prefix, next.max(from), page.events, page.complete))
        })
    }

    fn current_revision(&self) -> BoxFuture<'_, Result<Revision>> {
        Box::pin(async move { Ok(self.inner.shared.revision.load(Ordering::Acquire)) })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            match self.write(Op::Compact { revision }).await? {
                Outcome::Compacted => Ok(()),
                _ => Err(StoreError::Backend("unexpected outcome of compact".into())),
            }
        })
    }
}
