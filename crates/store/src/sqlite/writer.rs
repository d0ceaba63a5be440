//! The single writer: one thread per store that commits concurrent writes in groups.
//!
//! Requests queue on a channel. The writer takes every request waiting (up to a bound), applies
//! them in order in one transaction, commits it — one `fsync` of the WAL for the whole group,
//! since the connection runs with `synchronous = FULL` — and only then answers each request and
//! publishes the group's events to watchers. A storage failure (full disk, I/O error) rolls the
//! group back; the writer then retries each request alone so one oversized write cannot fail
//! its neighbours. Between groups it deletes expired keys and compacts history in small chunks.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::{broadcast, oneshot};

use super::CompactionPolicy;
use super::reader::current;
use super::schema::{map_err, next_expiry, read_meta};
use crate::{Event, KeyValue, Result, Revision, StoreError};

/// Revisions of history examined per compaction chunk, so writes interleave with compaction.
const COMPACTION_CHUNK: i64 = 2048;
/// Expired keys deleted per group.
const EXPIRY_BATCH: i64 = 512;

/// A write operation.
pub(super) enum Op {
    Create { key: Bytes, value: Bytes, expires_at: Option<i64> },
    Update { key: Bytes, value: Bytes, expected: Revision, expires_at: Option<i64> },
    Delete { key: Bytes, expected: Option<Revision> },
    Compact { revision: Revision },
}

/// What a successful write produced.
pub(super) enum Outcome {
    Written(Revision),
    Deleted(Revision, KeyValue),
    Compacted,
}

/// A write and where to send its answer (`None` for the writer's own housekeeping).
pub(super) struct Request {
    pub op: Op,
    pub reply: Option<oneshot::Sender<Result<Outcome>>>,
}

/// What the writer thread receives.
pub(super) enum Command {
    Write(Request),
    /// Stop after the requests queued before this one; answered once the file is released.
    Close(oneshot::Sender<()>),
}

/// State shared between the writer and the store handle.
pub(super) struct Shared {
    /// The last committed revision.
    pub revision: AtomicI64,
    /// The compacted revision.
    pub compacted: AtomicI64,
    /// Write requests committed (successfully or not).
    pub writes: AtomicU64,
    /// Transactions committed (each one `fsync`).
    pub groups: AtomicU64,
}

/// Static settings of the writer.
pub(super) struct WriterConfig {
    pub path: PathBuf,
    pub max_group: usize,
    pub compaction: CompactionPolicy,
}

/// A compaction in progress: history below `target` is removed chunk by chunk.
struct CompactionJob {
    target: Revision,
    next: Revision,
}

pub(super) struct Writer {
    conn: Connection,
    cfg: WriterConfig,
    revision: Revision,
    compacted: Revision,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<[Event]>>,
    next_expiry: Option<i64>,
    next_compaction: Option<Instant>,
    job: Option<CompactionJob>,
    /// Held for the writer's lifetime: the advisory lock that keeps other processes out.
    _lock: File,
}

/// The current time in Unix milliseconds.
pub(super) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        lock: File,
        cfg: WriterConfig,
        shared: Arc<Shared>,
        events: broadcast::Sender<Arc<[Event]>>,
    ) -> Result<Self> {
        let (revision, compacted) = read_meta(&conn).map_err(|e| map_err(e, &cfg.path))?;
        let next_expiry = next_expiry(&conn).map_err(|e| map_err(e, &cfg.path))?;
        shared.revision.store(revision, Ordering::Release);
        shared.compacted.store(compacted, Ordering::Release);
        let next_compaction = cfg.compaction.next_tick();
        Ok(Writer {
            conn,
            cfg,
            revision,
            compacted,
            shared,
            events,
            next_expiry,
            next_compaction,
            job: None,
            _lock: lock,
        })
    }

    /// Runs until the store is closed or dropped; returns the close acknowledgement, if any.
    pub(super) fn run(mut self, rx: Receiver<Command>) -> Option<oneshot::Sender<()>> {
        loop {
            let first = if self.job.is_some() {
                match rx.try_recv() {
                    Ok(c) => c,
                    Err(TryRecvError::Empty) => {
                        self.compaction_step();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => return None,
                }
            } else {
                match self.until_housekeeping() {
                    Some(wait) => match rx.recv_timeout(wait) {
                        Ok(c) => c,
                        Err(RecvTimeoutError::Timeout) => {
                            self.housekeeping();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => return None,
                    },
                    None => match rx.recv() {
                        Ok(c) => c,
                        Err(_) => return None,
                    },
                }
            };
            let mut batch = match first {
                Command::Close(ack) => return Some(ack),
                Command::Write(req) => vec![req],
            };
            let mut close = None;
            while batch.len() < self.cfg.max_group {
                match rx.try_recv() {
                    Ok(Command::Write(req)) => batch.push(req),
                    Ok(Command::Close(ack)) => {
                        close = Some(ack);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
            if close.is_some() {
                return close;
            }
            if self.housekeeping_due() {
                self.housekeeping();
            }
        }
    }

    /// How long until the next expiry or compaction tick, if any is scheduled.
    fn until_housekeeping(&self) -> Option<Duration> {
        let expiry = self.next_expiry.map(|at| Duration::from_millis(at.saturating_sub(now_ms()).max(0) as u64));
        let compaction = self.next_compaction.map(|t| t.saturating_duration_since(Instant::now()));
        match (expiry, compaction) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn housekeeping_due(&self) -> bool {
        self.until_housekeeping().is_some_and(|d| d.is_zero())
    }

    /// Deletes expired keys and starts a policy compaction when their time has come.
    fn housekeeping(&mut self) {
        if self.next_expiry.is_some_and(|at| at <= now_ms()) {
            self.expire();
        }
        if self.next_compaction.is_some_and(|t| t <= Instant::now()) {
            self.next_compaction = self.cfg.compaction.next_tick();
            let target = self.revision - self.cfg.compaction.retain_revisions;
            if target > self.compacted {
                self.commit_batch(vec![Request { op: Op::Compact { revision: target }, reply: None }]);
            }
        }
    }

    /// Deletes keys whose time to live has passed, each as an ordinary delete.
    fn expire(&mut self) {
        let now = now_ms();
        let expired: rusqlite::Result<Vec<(Vec<u8>, i64)>> = self
            .conn
            .prepare_cached("SELECT key, rev FROM kv WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2")
            .and_then(|mut s| s.query_map(params![now, EXPIRY_BATCH], |r| Ok((r.get(0)?, r.get(1)?)))?.collect());
        match expired {
            Ok(keys) => {
                let full = keys.len() as i64 == EXPIRY_BATCH;
                let batch = keys
                    .into_iter()
                    .map(|(key, rev)| Request {
                        op: Op::Delete { key: Bytes::from(key), expected: Some(rev) },
                        reply: None,
                    })
                    .collect();
                self.commit_batch(batch);
                self.next_expiry = if full { Some(now) } else { next_expiry(&self.conn).ok().flatten() };
            }
            Err(e) => {
                tracing::warn!(path = %self.cfg.path.display(), error = %e, "store: reading expired keys failed");
                // Try again a little later rather than spinning.
                self.next_expiry = Some(now + 1000);
            }
        }
    }

    /// Commits `batch` as one group, falling back to one transaction per request when the
    /// group fails at the storage level.
    fn commit_batch(&mut self, batch: Vec<Request>) {
        if batch.is_empty() {
            return;
        }
        let ops: Vec<&Op> = batch.iter().map(|r| &r.op).collect();
        match self.execute(&ops) {
            Ok(results) => reply_all(batch, results),
            Err(err) if batch.len() == 1 => reply_all(batch, vec![Err(err)]),
            Err(err) => {
                tracing::debug!(error = %err, size = batch.len(), "store: group failed, retrying each write alone");
                for req in batch {
                    let result = match self.execute(&[&req.op]) {
                        Ok(mut r) => r.pop().unwrap_or(Err(StoreError::Closed)),
                        Err(e) => Err(e),
                    };
                    if let Some(reply) = req.reply {
                        let _ = reply.send(result);
                    }
                }
            }
        }
    }

    /// Applies `ops` in one transaction. The outer error is a storage failure of the whole
    /// group (nothing was written); the inner results are each operation's own outcome.
    fn execute(&mut self, ops: &[&Op]) -> Result<Vec<Result<Outcome>>> {
        let path = self.cfg.path.clone();
        let storage = |e: rusqlite::Error| map_err(e, &path);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(storage)?;
        let mut rev = self.revision;
        let mut compacted = self.compacted;
        let mut events = Vec::with_capacity(ops.len());
        let mut results = Vec::with_capacity(ops.len());
        let mut expiry: Option<i64> = None;
        for op in ops {
            let r = apply(&tx, op, &mut rev, &mut compacted, &mut events).map_err(storage)?;
            if r.is_ok()
                && let Op::Create { expires_at: Some(at), .. } | Op::Update { expires_at: Some(at), .. } = op
            {
                expiry = Some(expiry.map_or(*at, |e: i64| e.min(*at)));
            }
            results.push(r);
        }
        if rev != self.revision {
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'revision'")
                .and_then(|mut s| s.execute([rev]))
                .map_err(storage)?;
        }
        if compacted != self.compacted {
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'compacted'")
                .and_then(|mut s| s.execute([compacted]))
                .map_err(storage)?;
        }
        tx.commit().map_err(storage)?;

        // Committed and durable: publish.
        self.revision = rev;
        self.shared.revision.store(rev, Ordering::Release);
        self.shared.groups.fetch_add(1, Ordering::Relaxed);
        self.shared.writes.fetch_add(ops.len() as u64, Ordering::Relaxed);
        if compacted != self.compacted {
            self.compacted = compacted;
            self.shared.compacted.store(compacted, Ordering::Release);
            let first = self.conn.query_row("SELECT min(rev) FROM log", [], |r| r.get::<_, Option<i64>>(0));
            let next = first.ok().flatten().unwrap_or(compacted);
            self.job = Some(CompactionJob { target: compacted, next });
        }
        if let Some(at) = expiry {
            self.next_expiry = Some(self.next_expiry.map_or(at, |e| e.min(at)));
        }
        if !events.is_empty() {
            // No receivers is fine: nobody watches.
            let _ = self.events.send(Arc::from(events));
        }
        Ok(results)
    }

    /// Removes one chunk of history that no read at or after the compacted revision needs:
    /// rows below the target that are deletions or are superseded by a later write at or
    /// before the target. The row of each key's last write at the target stays, so the state at
    /// the compacted revision remains readable.
    fn compaction_step(&mut self) {
        let Some(job) = &mut self.job else { return };
        let hi = (job.next + COMPACTION_CHUNK).min(job.target);
        let result = self
            .conn
            .prepare_cached(
                "DELETE FROM log WHERE rev >= ?1 AND rev < ?2 AND (deleted = 1 OR EXISTS (
                     SELECT 1 FROM log n WHERE n.key = log.key AND n.rev > log.rev AND n.rev <= ?3))",
            )
            .and_then(|mut s| s.execute(params![job.next, hi, job.target]));
        match result {
            Ok(_) if hi >= job.target => {
                self.job = None;
                if let Err(e) = self.conn.execute_batch("PRAGMA incremental_vacuum;") {
                    tracing::warn!(error = %e, "store: incremental vacuum failed");
                }
            }
            Ok(_) => job.next = hi,
            Err(e) => {
                // Leave the rest for the next compaction; nothing needed was deleted.
                tracing::warn!(path = %self.cfg.path.display(), error = %e, "store: compaction chunk failed");
                self.job = None;
            }
        }
    }
}

/// Sends each request its result.
fn reply_all(batch: Vec<Request>, results: Vec<Result<Outcome>>) {
    for (req, result) in batch.into_iter().zip(results) {
        if let Some(reply) = req.reply {
            let _ = reply.send(result);
        }
    }
}

/// Applies one operation inside the group's transaction. The outer error is a storage failure;
/// the inner result is the operation's logical outcome.
fn apply(
    tx: &Connection,
    op: &Op,
    rev: &mut Revision,
    compacted: &mut Revision,
    events: &mut Vec<Event>,
) -> rusqlite::Result<Result<Outcome>> {
    match op {
        Op::Create { key, value, expires_at } => {
            if let Some(cur) = current(tx, key)? {
                return Ok(Err(StoreError::AlreadyExists { revision: cur.mod_revision }));
            }
            let new = *rev + 1;
            tx.prepare_cached(
                "INSERT INTO log (rev, key, value, create_rev, prev_rev, deleted) VALUES (?1, ?2, ?3, ?1, NULL, 0)",
            )?
            .execute(params![new, &key[..], &value[..]])?;
            tx.prepare_cached("INSERT INTO kv (key, rev, create_rev, expires_at) VALUES (?1, ?2, ?2, ?3)")?
                .execute(params![&key[..], new, expires_at])?;
            *rev = new;
            let kv = KeyValue { key: key.clone(), value: value.clone(), create_revision: new, mod_revision: new };
            events.push(Event::Put { kv, prev: None });
            Ok(Ok(Outcome::Written(new)))
        }
        Op::Update { key, value, expected, expires_at } => {
            let Some(cur) = current(tx, key)? else {
                return Ok(Err(StoreError::NotFound));
            };
            if cur.mod_revision != *expected {
                return Ok(Err(StoreError::Conflict { current: Box::new(cur) }));
            }
            let new = *rev + 1;
            tx.prepare_cached(
                "INSERT INTO log (rev, key, value, create_rev, prev_rev, deleted) VALUES (?1, ?2, ?3, ?4, ?5, 0)",
            )?
            .execute(params![new, &key[..], &value[..], cur.create_revision, cur.mod_revision])?;
            tx.prepare_cached("UPDATE kv SET rev = ?1, expires_at = ?2 WHERE key = ?3")?.execute(params![
                new,
                expires_at,
                &key[..]
            ])?;
            *rev = new;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: cur.create_revision,
                mod_revision: new,
            };
            events.push(Event::Put { kv, prev: Some(cur) });
            Ok(Ok(Outcome::Written(new)))
        }
        Op::Delete { key, expected } => {
            let Some(cur) = current(tx, key)? else {
                return Ok(Err(StoreError::NotFound));
            };
            if expected.is_some_and(|e| e != cur.mod_revision) {
                return Ok(Err(StoreError::Conflict { current: Box::new(cur) }));
            }
            let new = *rev + 1;
            tx.prepare_cached(
                "INSERT INTO log (rev, key, value, create_rev, prev_rev, deleted) VALUES (?1, ?2, NULL, ?3, ?4, 1)",
            )?
            .execute(params![new, &key[..], cur.create_revision, cur.mod_revision])?;
            tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?.execute([&key[..]])?;
            *rev = new;
            events.push(Event::Delete { key: key.clone(), revision: new, prev: Some(cur.clone()) });
            Ok(Ok(Outcome::Deleted(new, cur)))
        }
        Op::Compact { revision } => {
            if *revision > *rev {
                return Ok(Err(StoreError::FutureRevision { requested: *revision, current: *rev }));
            }
            if *revision > *compacted {
                *compacted = *revision;
            }
            Ok(Ok(Outcome::Compacted))
        }
    }
}
