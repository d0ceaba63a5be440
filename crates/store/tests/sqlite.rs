//! Behaviour specific to the SQLite backend: durability across reopen, exclusive access, clear
//! errors for unusable files, size limits, history retention, group commit, slow watchers.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use vt_store::sqlite::{CompactionPolicy, SqliteOptions, SqliteStore};
use vt_store::{Event, ListOptions, Store, StoreError};

fn opts() -> SqliteOptions {
    SqliteOptions { compaction: CompactionPolicy::disabled(), ..Default::default() }
}

/// Data and the revision counter survive closing and reopening; revisions stay contiguous.
#[tokio::test]
async fn data_and_revision_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = SqliteStore::open(&path, opts()).await.unwrap();
    assert_eq!(s.current_revision().await.unwrap(), 1);
    let r = s.create(b"/a", Bytes::from_static(b"x"), None).await.unwrap();
    assert_eq!(r, 2);
    let r = s.update(b"/a", Bytes::from_static(b"y"), r, None).await.unwrap();
    s.close().await;
    assert!(matches!(
        s.get(b"/a").await.map(|_| ()).and(s.create(b"/b", Bytes::new(), None).await.map(|_| ())),
        Err(StoreError::Closed)
    ));

    let s = SqliteStore::open(&path, opts()).await.unwrap();
    assert_eq!(s.current_revision().await.unwrap(), r);
    assert_eq!(s.get(b"/a").await.unwrap().unwrap().value, Bytes::from_static(b"y"));
    assert_eq!(s.create(b"/b", Bytes::new(), None).await.unwrap(), r + 1);
    // History from before the reopen is still watchable.
    let mut w = s.watch(b"/", 2).await.unwrap();
    let first = w.next().await.unwrap().unwrap();
    assert_eq!(first.revision(), 2);
}

/// A second opener of the same file is refused with `Locked`, until the first one closes.
#[tokio::test]
async fn second_opener_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = SqliteStore::open(&path, opts()).await.unwrap();
    match SqliteStore::open(&path, opts()).await {
        Err(StoreError::Locked(msg)) => assert!(msg.contains("in use by another process"), "{msg}"),
        Ok(_) => panic!("a second writer opened the same store"),
        Err(e) => panic!("wrong error: {e}"),
    }
    s.close().await;
    let again = SqliteStore::open(&path, opts()).await.expect("open after close");
    assert_eq!(again.current_revision().await.unwrap(), 1);
}

/// Paths that cannot hold a store give clear errors instead of panics.
#[tokio::test]
async fn unusable_paths_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    match SqliteStore::open(dir.path(), opts()).await {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("is a directory"), "{msg}"),
        other => panic!("directory as store: {:?}", other.map(|_| ())),
    }
    // A regular file where a directory should be.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    match SqliteStore::open(file.join("t.db"), opts()).await {
        Err(StoreError::Unavailable(msg)) => {
            assert!(msg.contains("cannot create directory"), "{msg}")
        }
        other => panic!("store under a file: {:?}", other.map(|_| ())),
    }
}

/// Garbage, a foreign SQLite database, and a store with damaged pages are reported as
/// `Corrupt`; nothing panics.
#[tokio::test]
async fn corrupt_and_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 64 * 1024]).unwrap();
    match SqliteStore::open(&garbage, opts()).await {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("garbage.db"), "{msg}"),
        other => panic!("garbage file: {:?}", other.map(|_| ())),
    }

    let foreign = dir.path().join("foreign.db");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
    drop(conn);
    match SqliteStore::open(&foreign, opts()).await {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("another application"), "{msg}"),
        other => panic!("foreign database: {:?}", other.map(|_| ())),
    }
    assert_eq!(std::fs::read(&foreign).unwrap().len() % 4096, 0, "the foreign file is left alone");

    // A real store whose b-tree pages are overwritten after the header.
    let damaged = dir.path().join("damaged.db");
    let s = SqliteStore::open(&damaged, opts()).await.unwrap();
    for i in 0..200 {
        s.create(format!("/k/{i:04}").as_bytes(), Bytes::from(vec![7u8; 300]), None).await.unwrap();
    }
    s.close().await;
    // Fold the WAL into the main file first so the damage hits the pages SQLite reads.
    rusqlite::Connection::open(&damaged).unwrap().execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    let mut bytes = std::fs::read(&damaged).unwrap();
    for b in bytes.iter_mut().skip(4096).step_by(7) {
        *b = 0xa5;
    }
    std::fs::write(&damaged, bytes).unwrap();
    let result = async {
        let s = SqliteStore::open(&damaged, opts()).await?;
        s.list(b"/k/", ListOptions::default()).await.map(|l| l.kvs.len())
    }
    .await;
    match result {
        Err(StoreError::Corrupt(_)) => {}
        other => panic!("damaged store was not reported corrupt: {other:?}"),
    }
}

/// A store at its size limit refuses writes with `Full`, keeps every acknowledged write, and a
/// write too big for the remaining room does not fail the small writes committed with it.
#[tokio::test]
async fn full_store_refuses_writes_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let limited = SqliteOptions { max_size_bytes: Some(2 << 20), ..opts() };
    let s = SqliteStore::open(&path, limited.clone()).await.unwrap();

    // Small writes racing one oversized write: the small ones land.
    let mut tasks = Vec::new();
    for i in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.create(format!("/small/{i}").as_bytes(), Bytes::from(vec![1u8; 512]), None).await
        }));
    }
    let big = s.create(b"/big", Bytes::from(vec![2u8; 3 << 20]), None).await;
    assert!(matches!(big, Err(StoreError::Full(_))), "oversized write: {big:?}");
    for t in tasks {
        t.await.unwrap().expect("small write next to an oversized one");
    }

    let mut acked = Vec::new();
    let err = loop {
        let key = format!("/fill/{:05}", acked.len());
        match s.create(key.as_bytes(), Bytes::from(vec![3u8; 8192]), None).await {
            Ok(rev) => acked.push((key, rev)),
            Err(e) => break e,
        }
        assert!(acked.len() < 10_000, "the size limit was never reached");
    };
    match &err {
        StoreError::Full(msg) => assert!(msg.contains("size limit or the disk is full"), "{msg}"),
        other => panic!("expected Full, got {other}"),
    }
    assert!(acked.len() > 50);
    for (key, rev) in &acked {
        assert_eq!(s.get(key.as_bytes()).await.unwrap().unwrap().mod_revision, *rev);
    }
    let rev_before = s.current_revision().await.unwrap();
    s.close().await;
    let s = SqliteStore::open(&path, limited).await.unwrap();
    assert_eq!(s.current_revision().await.unwrap(), rev_before, "the failed write did not move the revision");
    assert_eq!(s.list(b"/fill/", ListOptions::default()).await.unwrap().kvs.len(), acked.len());
}

/// The compaction policy trims history automatically, so a key rewritten many times does not
/// grow the file without bound, while the recent history stays watchable.
#[tokio::test]
async fn compaction_policy_bounds_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let policy = SqliteOptions {
        compaction: CompactionPolicy { interval: Duration::from_millis(50), retain_revisions: 100 },
        ..opts()
    };
    let s = SqliteStore::open(&path, policy).await.unwrap();
    let value = Bytes::from(vec![9u8; 2048]);
    let mut rev = s.create(b"/hot", value.clone(), None).await.unwrap();
    for _ in 0..6000 {
        rev = s.update(b"/hot", value.clone(), rev, None).await.unwrap();
    }
    // Without compaction the history alone would be 6000 x 2 KiB = 12 MiB.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while s.stats().compacted < rev - 200 {
        assert!(tokio::time::Instant::now() < deadline, "the policy never compacted: {:?}", s.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the chunked deletion and vacuum finish, then reuse of freed pages keeps the file small.
    for _ in 0..2000 {
        rev = s.update(b"/hot", value.clone(), rev, None).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 4 << 20, "database file is {size} bytes");
    let old = ListOptions { revision: 5, ..Default::default() };
    assert!(matches!(s.list(b"/", old).await, Err(StoreError::Compacted { .. })));
    let mut w = s.watch(b"/", rev - 50).await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().revision(), rev - 50);
}

/// Concurrent writers share transactions: fewer commits (fsyncs) than writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path().join("t.db"), opts()).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                s.create(format!("/g/{w}/{i}").as_bytes(), Bytes::from_static(b"v"), None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = s.stats();
    assert_eq!(stats.writes, 64 * 20);
    assert_eq!(stats.revision, 1 + 64 * 20);
    assert!(stats.groups < stats.writes, "no group commit happened: {stats:?}");
}

/// A watcher that does not read while thousands of groups commit falls behind the live
/// broadcast; it must then continue from the log with no gap and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_catches_up_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path().join("t.db"), opts()).await.unwrap();
    let mut w = s.watch(b"/slow/", 0).await.unwrap();
    let first = s.current_revision().await.unwrap() + 1;
    for i in 0..3000 {
        s.create(format!("/slow/{i:05}").as_bytes(), Bytes::from_static(b"v"), None).await.unwrap();
    }
    for (n, expected) in (first..first + 3000).enumerate() {
        let ev = tokio::time::timeout(Duration::from_secs(30), w.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(ev.revision(), expected, "event {n}");
        assert!(matches!(ev, Event::Put { .. }));
    }
}

/// Closing the store ends its watches with `Closed`.
#[tokio::test]
async fn closing_ends_watches() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path().join("t.db"), opts()).await.unwrap();
    let mut w = s.watch(b"/", 0).await.unwrap();
    s.close().await;
    drop(s);
    let end = tokio::time::timeout(Duration::from_secs(10), w.next()).await.expect("the watch ended");
    assert!(matches!(end, Some(Err(StoreError::Closed))), "{end:?}");
}
