//! Concurrent readers: a small pool of read-only connections, each read one snapshot
//! transaction (WAL gives every reader a consistent view while the writer commits).

use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior};

use super::schema::{map_err, open_reader, read_meta};
use crate::{Event, KeyValue, ListOptions, ListResult, Result, Revision, StoreError, prefix_end};

/// Read-only connections to one database file.
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    cache_kib: u32,
}

/// One page of history read for a watch.
pub(super) struct LogPage {
    /// The events, in revision order.
    pub events: Vec<Event>,
    /// The store revision of the snapshot the page was read from.
    pub head: Revision,
    /// Whether the page holds every event up to `head`.
    pub complete: bool,
}

impl Readers {
    pub(super) fn new(path: PathBuf, max_idle: usize, cache_kib: u32) -> Self {
        Readers { path, idle: Mutex::new(Vec::new()), max_idle, cache_kib }
    }

    /// Runs `f` in a read transaction on a pooled connection.
    fn read<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<Result<T>>) -> Result<T> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => open_reader(&self.path, self.cache_kib)?,
        };
        let out = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .and_then(|tx| {
                let r = f(&tx)?;
                tx.finish()?;
                Ok(r)
            })
            .map_err(|e| map_err(e, &self.path));
        // A connection that failed at the storage level is dropped rather than reused.
        let healthy = !matches!(&out, Err(e) | Ok(Err(e)) if e.is_storage_failure());
        if healthy {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < self.max_idle {
                idle.push(conn);
            }
        }
        out?
    }

    /// Reads one key at the latest revision.
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.read(|tx| Ok(Ok(current(tx, key)?)))
    }

    /// Lists keys under `prefix` from one snapshot.
    pub(super) fn list(&self, prefix: &[u8], opts: &ListOptions) -> Result<ListResult> {
        let start: Vec<u8> = match &opts.start {
            Some(s) if !s.starts_with(prefix) => {
                return Err(StoreError::InvalidArgument("list start key is outside the prefix".into()));
            }
            Some(s) => s.to_vec(),
            None => prefix.to_vec(),
        };
        let end = prefix_end(prefix);
        self.read(|tx| {
            let (head, compacted) = read_meta(tx)?;
            let at = if opts.revision <= 0 { head } else { opts.revision };
            if at > head {
                return Ok(Err(StoreError::FutureRevision { requested: at, current: head }));
            }
            if at < compacted {
                return Ok(Err(StoreError::Compacted { requested: at }));
            }
            // SQLite's LIMIT takes a signed integer; -1 is "no limit".
            let fetch = if opts.limit == 0 { -1 } else { opts.limit as i64 + 1 };
            let sql = if at == head {
                let bound = if end.is_some() { "AND k.key < ?3" } else { "" };
                format!(
                    "SELECT k.key, l.value, k.create_rev, k.rev FROM kv k JOIN log l ON l.rev = k.rev
                     WHERE k.key >= ?1 {bound} ORDER BY k.key LIMIT ?2"
                )
            } else {
                // The state at `at`: per key, its last write at or before `at`, unless a delete.
                let bound = if end.is_some() { "AND l.key < ?4" } else { "" };
                format!(
                    "SELECT l.key, l.value, l.create_rev, l.rev FROM log l
                     WHERE l.key >= ?1 {bound} AND l.rev <= ?3 AND l.deleted = 0
                       AND l.rev = (SELECT max(m.rev) FROM log m WHERE m.key = l.key AND m.rev <= ?3)
                     ORDER BY l.key LIMIT ?2"
                )
            };
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut rows = match (at == head, &end) {
                (true, Some(end)) => stmt.query(rusqlite::params![start, fetch, end])?,
                (true, None) => stmt.query(rusqlite::params![start, fetch])?,
                (false, Some(end)) => stmt.query(rusqlite::params![start, fetch, at, end])?,
                (false, None) => stmt.query(rusqlite::params![start, fetch, at])?,
            };
            let mut kvs = Vec::new();
            while let Some(row) = rows.next()? {
                kvs.push(kv_from_row(row, 0)?);
            }
            let more = opts.limit != 0 && kvs.len() > opts.limit;
            kvs.truncate(if opts.limit == 0 { kvs.len() } else { opts.limit });
            Ok(Ok(ListResult { kvs, revision: at, more }))
        })
    }

    /// Reads up to `limit` events under `prefix` at revision `from` or later.
    pub(super) fn read_log(&self, prefix: &[u8], from: Revision, limit: usize) -> Result<LogPage> {
        let end = prefix_end(prefix);
        self.read(|tx| {
            let (head, compacted) = read_meta(tx)?;
            if from < compacted {
                return Ok(Err(StoreError::Compacted { requested: from }));
            }
            let range = if end.is_some() { "AND l.key < ?4" } else { "" };
            let sql = format!(
                "SELECT l.rev, l.key, l.value, l.create_rev, l.deleted, p.value, p.create_rev, p.rev
                 FROM log l LEFT JOIN log p ON p.rev = l.prev_rev
                 WHERE l.rev >= ?1 AND l.key >= ?2 {range} ORDER BY l.rev LIMIT ?3"
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut rows = match &end {
                Some(end) => stmt.query(rusqlite::params![from, prefix, limit as i64, end])?,
                None => stmt.query(rusqlite::params![from, prefix, limit as i64])?,
            };
            let mut events = Vec::new();
            while let Some(row) = rows.next()? {
                events.push(event_from_row(row)?);
            }
            let complete = events.len() < limit;
            Ok(Ok(LogPage { events, head, complete }))
        })
    }
}

/// The current state of `key`, read in the caller's transaction.
pub(super) fn current(conn: &Connection, key: &[u8]) -> rusqlite::Result<Option<KeyValue>> {
    conn.prepare_cached(
        "SELECT k.key, l.value, k.create_rev, k.rev FROM kv k JOIN log l ON l.rev = k.rev WHERE k.key = ?1",
    )?
    .query_row([key], |r| kv_from_row(r, 0))
    .optional()
}

/// Builds a key-value from four columns starting at `at`: key, value, create_rev, mod_rev.
fn kv_from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<KeyValue> {
    let key: Vec<u8> = row.get(at)?;
    let value: Option<Vec<u8>> = row.get(at + 1)?;
    Ok(KeyValue {
        key: Bytes::from(key),
        value: Bytes::from(value.unwrap_or_default()),
        create_revision: row.get(at + 2)?,
        mod_revision: row.get(at + 3)?,
    })
}

/// Builds a watch event from a log row joined with its previous row.
fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    let rev: i64 = row.get(0)?;
    let key = Bytes::from(row.get::<_, Vec<u8>>(1)?);
    let deleted: bool = row.get(4)?;
    let prev_rev: Option<i64> = row.get(7)?;
    let prev = match prev_rev {
        Some(prev_rev) => Some(KeyValue {
            key: key.clone(),
            value: Bytes::from(row.get::<_, Option<Vec<u8>>>(5)?.unwrap_or_default()),
            create_revision: row.get(6)?,
            mod_revision: prev_rev,
        }),
        None => None,
    };
    Ok(if deleted {
        Event::Delete { key, revision: rev, prev }
    } else {
        let value: Option<Vec<u8>> = row.get(2)?;
        Event::Put {
            kv: KeyValue {
                key,
                value: Bytes::from(value.unwrap_or_default()),
                create_revision: row.get(3)?,
                mod_revision: rev,
            },
            prev,
        }
    })
}
