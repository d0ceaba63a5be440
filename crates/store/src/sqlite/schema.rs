//! Opening the database file: pragmas, schema, and mapping SQLite errors to [`StoreError`].

use std::path::Path;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};

use crate::{Result, StoreError};

/// `PRAGMA application_id` of a vt store ("vtst"), so a foreign SQLite file is refused.
const APPLICATION_ID: i32 = 0x7674_7374;
/// `PRAGMA user_version` of the current schema.
const SCHEMA_VERSION: i32 = 1;

/// The schema. `log` holds every write (the history that watches and older reads use); `kv`
/// points each live key at the log row of its last write, so current reads need no scan of
/// the history and values are stored once.
const SCHEMA: &str = "
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE log (
    rev        INTEGER PRIMARY KEY,
    key        BLOB    NOT NULL,
    value      BLOB,
    create_rev INTEGER NOT NULL,
    prev_rev   INTEGER,
    deleted    INTEGER NOT NULL
);
CREATE INDEX log_key_rev ON log (key, rev);
CREATE TABLE kv (
    key        BLOB PRIMARY KEY,
    rev        INTEGER NOT NULL,
    create_rev INTEGER NOT NULL,
    expires_at INTEGER
) WITHOUT ROWID;
CREATE INDEX kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
INSERT INTO meta (name, value) VALUES ('revision', 1), ('compacted', 0);
";

/// Opens (creating if needed) the database for the single writer.
pub(super) fn open_writer(path: &Path, cache_kib: u32, max_size: Option<u64>) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| map_err(e, path))?;
    let setup = || -> rusqlite::Result<std::result::Result<(), String>> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        stable_plans(&conn)?;
        let app_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        if app_id == 0 && tables == 0 {
            // A new file: page-level settings must precede the first table.
            conn.execute_batch(&format!(
                "PRAGMA auto_vacuum = INCREMENTAL;
                 PRAGMA application_id = {APPLICATION_ID};
                 PRAGMA journal_mode = WAL;
                 BEGIN; {SCHEMA} COMMIT;
                 PRAGMA user_version = {SCHEMA_VERSION};"
            ))?;
        } else if app_id != APPLICATION_ID {
            return Ok(Err("the file is an SQLite database of another application".into()));
        }
        let version: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version != SCHEMA_VERSION {
            return Ok(Err(format!("schema version {version} is not supported (expected {SCHEMA_VERSION})")));
        }
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Ok(Err(format!("cannot switch the journal to WAL (mode is {mode})")));
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous = FULL;
             PRAGMA cache_size = -{cache_kib};
             PRAGMA journal_size_limit = 67108864;"
        ))?;
        if let Some(max) = max_size {
            let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            let pages = (max as i64 / page).max(16);
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
        }
        // Both bookkeeping rows must be there; a damaged file usually fails right here.
        let rows: i64 =
            conn.query_row("SELECT count(*) FROM meta WHERE name IN ('revision', 'compacted')", [], |r| r.get(0))?;
        if rows != 2 {
            return Ok(Err("the revision bookkeeping rows are missing".into()));
        }
        Ok(Ok(()))
    };
    match setup() {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(why)) => Err(StoreError::Corrupt(format!("{}: {why}", path.display()))),
        Err(e) => Err(map_err(e, path)),
    }
}

/// Opens a read-only connection for concurrent readers.
pub(super) fn open_reader(path: &Path, cache_kib: u32) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| map_err(e, path))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .and_then(|_| stable_plans(&conn))
        .and_then(|_| conn.execute_batch(&format!("PRAGMA cache_size = -{cache_kib};")))
        .map_err(|e| map_err(e, path))?;
    Ok(conn)
}

/// Keeps query plans stable across parameter bindings (SQLite's QPSG). Without it, STAT4
/// value probes and the partial expiry index mark bound keys "re-prepare on bind", so every
/// read with a new key re-prepared its statement (measured: 11 µs instead of 4 µs per get,
/// and twice the cost of a 100-key page). An unlimited 1,000-key scan pays about 0.3 ms more
/// with it, which the API's paginated reads do not do.
fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map(|_| ())
}

/// Reads the revision and the compacted revision, in the caller's transaction.
pub(super) fn read_meta(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.prepare_cached(
        "SELECT (SELECT value FROM meta WHERE name = 'revision'),
                (SELECT value FROM meta WHERE name = 'compacted')",
    )?
    .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// The earliest expiry among live keys, in Unix milliseconds.
pub(super) fn next_expiry(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT min(expires_at) FROM kv", [], |r| r.get(0)).optional().map(Option::flatten)
}

/// Maps an SQLite error to a store error that says what is wrong with the file.
pub(super) fn map_err(err: rusqlite::Error, path: &Path) -> StoreError {
    let p = path.display();
    match &err {
        rusqlite::Error::SqliteFailure(e, msg) => {
            let detail = msg.clone().unwrap_or_else(|| e.to_string());
            match e.code {
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Locked(format!("{p}: {detail}")),
                ErrorCode::DiskFull => {
                    StoreError::Full(format!("{p}: {detail} (the store reached its size limit or the disk is full)"))
                }
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreError::Corrupt(format!("{p}: {detail}")),
                ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly | ErrorCode::NotFound => {
                    StoreError::Unavailable(format!("{p}: {detail}"))
                }
                ErrorCode::SystemIoFailure => StoreError::Unavailable(format!("{p}: I/O error: {detail}")),
                ErrorCode::TooBig => StoreError::InvalidArgument(format!("value too big: {detail}")),
                _ => StoreError::Backend(format!("{p}: {detail}")),
            }
        }
        _ => StoreError::Backend(format!("{p}: {err}")),
    }
}
