//! The conformance cases. Every case states the semantics it pins.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use vt_store::{Event, KeyValue, ListOptions, Revision, Store, StoreError, WatchStream, key_successor};

use crate::fixture::Fixture;

/// Upper bound for waiting on a stream, so a broken watch fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn next_event(w: &mut WatchStream) -> Event {
    match tokio::time::timeout(PATIENCE, w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {PATIENCE:?}"),
    }
}

async fn take_events(w: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_event(w).await);
    }
    out
}

/// A compact, comparable summary of an event: (kind, key, revision, value, prev value).
fn summary(ev: &Event) -> (char, Bytes, Revision, Option<Bytes>, Option<Bytes>) {
    match ev {
        Event::Put { kv, prev } => {
            ('P', kv.key.clone(), kv.mod_revision, Some(kv.value.clone()), prev.as_ref().map(|p| p.value.clone()))
        }
        Event::Delete { key, revision, prev } => {
            ('D', key.clone(), *revision, None, prev.as_ref().map(|p| p.value.clone()))
        }
    }
}

/// Applies a mix of creates, updates and deletes on 20 keys under `prefix` and returns the
/// events they must produce, as summaries in revision order.
async fn churn(
    store: &dyn Store,
    prefix: &str,
    ops: usize,
) -> Vec<(char, Bytes, Revision, Option<Bytes>, Option<Bytes>)> {
    let mut live: BTreeMap<Bytes, KeyValue> = BTreeMap::new();
    let mut expected = Vec::new();
    for i in 0..ops {
        let key = b(&format!("{prefix}k{:02}", i % 20));
        let value = b(&format!("v{i}"));
        match live.get(&key).cloned() {
            None => {
                let rev = store.create(&key, value.clone(), None).await.expect("create");
                expected.push(('P', key.clone(), rev, Some(value.clone()), None));
                live.insert(key.clone(), KeyValue { key, value, create_revision: rev, mod_revision: rev });
            }
            Some(cur) if i % 3 == 0 => {
                let (rev, prev) = store.delete(&key, Some(cur.mod_revision)).await.expect("delete");
                assert_eq!(prev, cur, "delete returns the deleted key as it was");
                expected.push(('D', key.clone(), rev, None, Some(cur.value.clone())));
                live.remove(&key);
            }
            Some(cur) => {
                let rev = store.update(&key, value.clone(), cur.mod_revision, None).await.expect("update");
                expected.push(('P', key.clone(), rev, Some(value.clone()), Some(cur.value.clone())));
                live.insert(
                    key.clone(),
                    KeyValue { key, value, create_revision: cur.create_revision, mod_revision: rev },
                );
            }
        }
    }
    expected
}

/// Create, read, update and delete, with the revisions etcd gives: creation sets both
/// revisions, an update moves only `mod_revision`, and every write moves the store revision.
pub async fn crud_round_trip(fx: &Fixture) {
    let s = &*fx.store;
    let r0 = s.current_revision().await.unwrap();
    assert!(r0 >= 1, "an empty store starts at revision 1, like etcd");
    let r1 = s.create(b"/crud/a", b("one"), None).await.unwrap();
    assert!(r1 > r0);
    if fx.exclusive {
        assert_eq!(r1, r0 + 1, "every write bumps the revision by one");
    }
    let got = s.get(b"/crud/a").await.unwrap().expect("created key is readable");
    assert_eq!(got, KeyValue { key: b("/crud/a"), value: b("one"), create_revision: r1, mod_revision: r1 });
    let r2 = s.update(b"/crud/a", b("two"), r1, None).await.unwrap();
    assert!(r2 > r1);
    let got = s.get(b"/crud/a").await.unwrap().unwrap();
    assert_eq!((got.value, got.create_revision, got.mod_revision), (b("two"), r1, r2));
    assert!(s.current_revision().await.unwrap() >= r2);
    let (r3, prev) = s.delete(b"/crud/a", Some(r2)).await.unwrap();
    assert!(r3 > r2);
    assert_eq!((prev.value, prev.mod_revision), (b("two"), r2));
    assert_eq!(s.get(b"/crud/a").await.unwrap(), None);
    // A deleted key can be created again, with a new create revision.
    let r4 = s.create(b"/crud/a", b("again"), None).await.unwrap();
    assert_eq!(s.get(b"/crud/a").await.unwrap().unwrap().create_revision, r4);
    // An unguarded delete works too.
    let (r5, prev) = s.delete(b"/crud/a", None).await.unwrap();
    assert!(r5 > r4);
    assert_eq!(prev.value, b("again"));
    if fx.exclusive {
        assert_eq!(s.current_revision().await.unwrap(), r5);
    }
}

/// `create` on an existing key, a stale guard, and a missing key each fail with their own error
/// and change nothing.
pub async fn guarded_writes_fail_without_side_effects(fx: &Fixture) {
    let s = &*fx.store;
    let r1 = s.create(b"/g/a", b("one"), None).await.unwrap();
    let r2 = s.update(b"/g/a", b("two"), r1, None).await.unwrap();
    let before = s.current_revision().await.unwrap();

    match s.create(b"/g/a", b("x"), None).await {
        Err(StoreError::AlreadyExists { revision }) => assert_eq!(revision, r2),
        other => panic!("create of an existing key: {other:?}"),
    }
    match s.update(b"/g/a", b("x"), r1, None).await {
        Err(StoreError::Conflict { current }) => {
            assert_eq!(
                (current.mod_revision, current.value.clone()),
                (r2, b("two")),
                "the conflict carries the current key"
            )
        }
        other => panic!("stale update: {other:?}"),
    }
    match s.delete(b"/g/a", Some(r1)).await {
        Err(StoreError::Conflict { current }) => assert_eq!(current.mod_revision, r2),
        other => panic!("stale delete: {other:?}"),
    }
    assert!(matches!(s.update(b"/g/missing", b("x"), r1, None).await, Err(StoreError::NotFound)));
    assert!(matches!(s.delete(b"/g/missing", None).await, Err(StoreError::NotFound)));
    assert!(matches!(s.delete(b"/g/missing", Some(r1)).await, Err(StoreError::NotFound)));

    let got = s.get(b"/g/a").await.unwrap().unwrap();
    assert_eq!((got.value, got.mod_revision), (b("two"), r2), "failed writes changed nothing");
    assert_eq!(s.get(b"/g/missing").await.unwrap(), None);
    if fx.exclusive {
        assert_eq!(s.current_revision().await.unwrap(), before, "failed writes do not bump the revision");
    }
}

/// Many read-modify-write loops on one key: each revision has exactly one winner, no increment
/// is lost, and the winners' values follow revision order (the writes are serializable).
pub async fn concurrent_updaters_one_winner_per_revision(fx: &Fixture) {
    const WORKERS: usize = 16;
    const EACH: usize = 25;
    let s = fx.store.clone();
    s.create(b"/cas/counter", b("0"), None).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let s: Arc<dyn Store> = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = Vec::new();
            let mut cur = s.get(b"/cas/counter").await.unwrap().unwrap();
            while wins.len() < EACH {
                let n: u64 = std::str::from_utf8(&cur.value).unwrap().parse().unwrap();
                let next = Bytes::from((n + 1).to_string());
                match s.update(b"/cas/counter", next.clone(), cur.mod_revision, None).await {
                    Ok(rev) => {
                        wins.push((rev, n + 1));
                        cur = KeyValue { value: next, mod_revision: rev, ..cur };
                    }
                    Err(StoreError::Conflict { current }) => cur = *current,
                    Err(e) => panic!("update failed: {e}"),
                }
            }
            wins
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let total = (WORKERS * EACH) as u64;
    assert_eq!(all.len() as u64, total);
    let revisions: HashSet<Revision> = all.iter().map(|(r, _)| *r).collect();
    assert_eq!(revisions.len(), all.len(), "two updates won the same revision");
    all.sort();
    let values: Vec<u64> = all.iter().map(|(_, v)| *v).collect();
    assert_eq!(values, (1..=total).collect::<Vec<_>>(), "increments lost or reordered");
    let last = s.get(b"/cas/counter").await.unwrap().unwrap();
    assert_eq!(last.value, Bytes::from(total.to_string()));
    assert_eq!(last.mod_revision, all.last().unwrap().0);
}

/// A watch opened before the writes sees every change under its prefix exactly once, in
/// revision order, with the previous value of each key.
pub async fn watch_delivers_every_change_in_order(fx: &Fixture) {
    let s = &*fx.store;
    let mut w = s.watch(b"/w/", 0).await.unwrap();
    // Noise under another prefix must not appear.
    s.create(b"/x/noise", b("n"), None).await.unwrap();
    let expected = churn(s, "/w/", 300).await;
    let got: Vec<_> = take_events(&mut w, expected.len()).await.iter().map(summary).collect();
    assert_eq!(got, expected);
    // And nothing else arrives: the next event is the next write.
    let rev = s.create(b"/w/last", b("z"), None).await.unwrap();
    assert_eq!(next_event(&mut w).await.revision(), rev);
}

/// A watch can start at any retained revision and then sees exactly the changes at or after it
/// (no gaps, no duplicates), followed by live changes.
pub async fn watch_resumes_from_any_retained_revision(fx: &Fixture) {
    let s = &*fx.store;
    let mut expected = churn(s, "/r/", 120).await;
    let first = expected[0].2;
    let last = expected.last().unwrap().2;
    let starts = [first, first + 1, expected[37].2, expected[60].2 - 1, last, last + 1];
    for from in starts {
        let mut w = s.watch(b"/r/", from).await.unwrap();
        let want: Vec<_> = expected.iter().filter(|e| e.2 >= from).cloned().collect();
        let got: Vec<_> = take_events(&mut w, want.len()).await.iter().map(summary).collect();
        assert_eq!(got, want, "watch from revision {from}");
        let key = b(&format!("/r/live-{from}"));
        let rev = s.create(&key, b("l"), None).await.unwrap();
        let ev = next_event(&mut w).await;
        assert_eq!((ev.revision(), ev.key().clone()), (rev, key.clone()), "live event after history from {from}");
        expected.push(('P', key, rev, Some(b("l")), None));
    }
}

/// Prefixes that share leading bytes (`/p/a/` and `/p/ab/`) are independent for list and watch.
pub async fn prefixes_side_by_side_are_isolated(fx: &Fixture) {
    let s = &*fx.store;
    let mut wa = s.watch(b"/p/a/", 0).await.unwrap();
    let mut wab = s.watch(b"/p/ab/", 0).await.unwrap();
    for p in ["/p/a/", "/p/ab/", "/p/b/", "/p/a"] {
        for i in 0..5 {
            s.create(&b(&format!("{p}{i}")), b(p), None).await.unwrap();
        }
    }
    let la = s.list(b"/p/a/", ListOptions::default()).await.unwrap();
    assert_eq!(la.kvs.len(), 5);
    assert!(la.kvs.iter().all(|kv| kv.value == b("/p/a/")));
    let lab = s.list(b"/p/ab/", ListOptions::default()).await.unwrap();
    assert_eq!(lab.kvs.len(), 5);
    assert!(lab.kvs.iter().all(|kv| kv.value == b("/p/ab/")));
    let all = s.list(b"/p/", ListOptions::default()).await.unwrap();
    assert_eq!(all.kvs.len(), 20);
    for ev in take_events(&mut wa, 5).await {
        assert!(ev.key().starts_with(b"/p/a/"));
    }
    for ev in take_events(&mut wab, 5).await {
        assert!(ev.key().starts_with(b"/p/ab/"));
    }
    // The next event each watcher sees is its own prefix's, not the other's.
    let ra = s.create(b"/p/a/next", b("x"), None).await.unwrap();
    let rab = s.create(b"/p/ab/next", b("x"), None).await.unwrap();
    assert_eq!(next_event(&mut wa).await.revision(), ra);
    assert_eq!(next_event(&mut wab).await.revision(), rab);
}

/// A paginated list pinned to the first page's revision is one consistent snapshot even while a
/// writer keeps changing the keys: the writer moves keys 0..N to generation g in key order, so
/// any snapshot shows generations that never increase along the keys and differ by at most one.
pub async fn list_snapshot_is_consistent_under_writes(fx: &Fixture) {
    const N: usize = 40;
    let s = fx.store.clone();
    let key = |i: usize| b(&format!("/snap/k{i:03}"));
    for i in 0..N {
        s.create(&key(i), b("0"), None).await.unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let mut g = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                g += 1;
                for i in 0..N {
                    let cur = s.get(&key(i)).await.unwrap().unwrap();
                    s.update(&key(i), Bytes::from(g.to_string()), cur.mod_revision, None).await.unwrap();
                }
            }
            g
        })
    };
    for _ in 0..15 {
        let mut opts = ListOptions { limit: 7, ..Default::default() };
        let mut seen = Vec::new();
        let mut revision = 0;
        loop {
            let page = s.list(b"/snap/", opts.clone()).await.unwrap();
            if revision == 0 {
                revision = page.revision;
            }
            assert_eq!(page.revision, revision, "later pages read the first page's snapshot");
            for kv in &page.kvs {
                assert!(kv.mod_revision <= revision, "a key newer than the snapshot");
            }
            seen.extend(page.kvs.iter().map(|kv| std::str::from_utf8(&kv.value).unwrap().parse::<u64>().unwrap()));
            if !page.more {
                break;
            }
            opts = ListOptions { limit: 7, start: Some(key_successor(&page.kvs.last().unwrap().key)), revision };
        }
        assert_eq!(seen.len(), N);
        assert!(seen.windows(2).all(|w| w[0] >= w[1]), "torn snapshot: {seen:?}");
        assert!(seen[0] - seen[N - 1] <= 1, "torn snapshot: {seen:?}");
        // Reading the same revision again gives the same answer.
        let again = s.list(b"/snap/", ListOptions { revision, ..Default::default() }).await.unwrap();
        let again: Vec<u64> =
            again.kvs.iter().map(|kv| std::str::from_utf8(&kv.value).unwrap().parse().unwrap()).collect();
        assert_eq!(again, seen);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.await.unwrap() >= 1);
}

/// 10,000 keys listed in pages of 250: every key exactly once, in byte order; the last page
/// says no more follow; and a pinned revision hides writes made between pages.
pub async fn pagination_over_10000_keys(fx: &Fixture) {
    const KEYS: usize = 10_000;
    let s = fx.store.clone();
    let key = |i: usize| format!("/page/{:05}", (i * 7919) % KEYS);
    let mut tasks = Vec::new();
    for w in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..KEYS).step_by(32) {
                s.create(key(i).as_bytes(), Bytes::from(format!("value-{i}")), None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut opts = ListOptions { limit: 250, ..Default::default() };
    let mut keys = Vec::new();
    let mut pages = 0;
    let mut revision = 0;
    loop {
        let page = s.list(b"/page/", opts.clone()).await.unwrap();
        pages += 1;
        if revision == 0 {
            revision = page.revision;
            // A write after the first page must not show in later pages.
            let cur = s.get(b"/page/09999").await.unwrap().unwrap();
            s.update(b"/page/09999", b("changed"), cur.mod_revision, None).await.unwrap();
            s.create(b"/page/10000-late", b("late"), None).await.unwrap();
        }
        assert!(page.kvs.len() <= 250);
        keys.extend(page.kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone())));
        if !page.more {
            break;
        }
        opts = ListOptions { limit: 250, start: Some(key_successor(&page.kvs.last().unwrap().key)), revision };
    }
    assert_eq!(pages, KEYS / 250);
    assert_eq!(keys.len(), KEYS);
    let expected: Vec<Bytes> = (0..KEYS).map(|i| b(&format!("/page/{i:05}"))).collect();
    assert_eq!(keys.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), expected, "every key once, in order");
    assert_ne!(keys.last().unwrap().1, b("changed"), "the pinned snapshot hides later writes");
    let everything = s.list(b"/page/", ListOptions::default()).await.unwrap();
    assert_eq!(everything.kvs.len(), KEYS + 1, "an unlimited latest list sees the late key");
    assert!(!everything.more);
}

/// After `compact(r)`: reads and watches before `r` fail with `Compacted`; the state at `r` and
/// later stays readable and watchable; compacting again lower is a no-op; compacting in the
/// future is refused.
pub async fn compaction_fails_old_reads_and_keeps_new(fx: &Fixture) {
    let s = &*fx.store;
    let r1 = s.create(b"/c/a", b("v1"), None).await.unwrap();
    let r2 = s.update(b"/c/a", b("v2"), r1, None).await.unwrap();
    let rb = s.create(b"/c/b", b("b1"), None).await.unwrap();
    let (rd, _) = s.delete(b"/c/b", None).await.unwrap();
    let r3 = s.update(b"/c/a", b("v3"), r2, None).await.unwrap();
    s.compact(rd).await.unwrap();

    let at = |revision| ListOptions { revision, ..Default::default() };
    assert!(
        matches!(s.list(b"/c/", at(r2)).await, Err(StoreError::Compacted { .. })),
        "list before the compacted revision"
    );
    assert!(
        matches!(s.watch(b"/c/", r1).await, Err(StoreError::Compacted { .. })),
        "watch before the compacted revision"
    );
    let _ = rb;
    let snap = s.list(b"/c/", at(rd)).await.unwrap();
    assert_eq!(
        snap.kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect::<Vec<_>>(),
        vec![(b("/c/a"), b("v2"))]
    );
    // (Whether a deletion exactly at the compacted revision is still watchable differs: etcd
    // drops such tombstones, so the case watches from the next revision.)
    let mut w = s.watch(b"/c/", rd + 1).await.unwrap();
    let ev = next_event(&mut w).await;
    assert_eq!((ev.revision(), ev.key().clone()), (r3, b("/c/a")));
    assert_eq!(summary(&ev).4, Some(b("v2")), "the previous value survives compaction");
    assert_eq!(s.get(b"/c/a").await.unwrap().unwrap().value, b("v3"));
    s.compact(r1).await.expect("compacting below the compacted revision is a no-op");
    let cur = s.current_revision().await.unwrap();
    assert!(matches!(s.compact(cur + 1000).await, Err(StoreError::FutureRevision { .. })));
    // Compacting up to the head keeps the current state whole.
    s.compact(cur).await.unwrap();
    let latest = s.list(b"/c/", ListOptions::default()).await.unwrap();
    assert_eq!(latest.kvs.len(), 1);
    assert_eq!(latest.kvs[0].value, b("v3"));
    let r4 = s.update(b"/c/a", b("v4"), r3, None).await.unwrap();
    assert!(r4 > cur);
}

/// Values of 1.5 MiB (kube-apiserver's object size limit) survive create, get, update, list and
/// watch byte for byte.
pub async fn large_values_round_trip(fx: &Fixture) {
    let s = &*fx.store;
    let big = |seed: u8| {
        Bytes::from((0..1_572_864usize).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>())
    };
    let (v1, v2) = (big(1), big(2));
    let mut w = s.watch(b"/big/", 0).await.unwrap();
    let r1 = s.create(b"/big/one", v1.clone(), None).await.unwrap();
    let r2 = s.update(b"/big/one", v2.clone(), r1, None).await.unwrap();
    assert_eq!(s.get(b"/big/one").await.unwrap().unwrap().value, v2);
    assert_eq!(s.list(b"/big/", ListOptions::default()).await.unwrap().kvs[0].value, v2);
    let evs = take_events(&mut w, 2).await;
    assert_eq!(summary(&evs[0]), ('P', b("/big/one"), r1, Some(v1.clone()), None));
    assert_eq!(summary(&evs[1]), ('P', b("/big/one"), r2, Some(v2.clone()), Some(v1.clone())));
    // History of large values is readable too.
    let mut h = s.watch(b"/big/", r1).await.unwrap();
    assert_eq!(summary(&next_event(&mut h).await).3, Some(v1));
}

/// Keys and values are bytes: NUL, 0xff and invalid UTF-8 round-trip, order is byte order, and
/// a prefix made of 0xff bytes (whose range has no upper bound) lists and watches correctly.
pub async fn binary_keys_and_values(fx: &Fixture) {
    let s = &*fx.store;
    let all_bytes = Bytes::from((0..=255u8).collect::<Vec<u8>>());
    let keys: Vec<Bytes> = vec![
        Bytes::from_static(b"/bin/\x00"),
        Bytes::from_static(b"/bin/\x00\x00"),
        Bytes::from_static(b"/bin/\x01\xff"),
        Bytes::from_static(b"/bin/\x7f"),
        Bytes::from_static(b"/bin/\xc3\x28"),
        Bytes::from_static(b"/bin/\xff"),
        Bytes::from_static(b"/bin/\xff\xff\x00"),
    ];
    let mut w = s.watch(b"/bin/\xff", 0).await.unwrap();
    for k in &keys {
        s.create(k, all_bytes.clone(), None).await.unwrap();
        assert_eq!(s.get(k).await.unwrap().unwrap().value, all_bytes);
    }
    let listed = s.list(b"/bin/", ListOptions::default()).await.unwrap();
    assert_eq!(listed.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(), keys, "byte order");
    // Pagination steps over keys that differ only by trailing NULs.
    let mut opts = ListOptions { limit: 1, ..Default::default() };
    let mut paged = Vec::new();
    loop {
        let page = s.list(b"/bin/", opts.clone()).await.unwrap();
        paged.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        opts = ListOptions { limit: 1, start: Some(key_successor(&page.kvs[0].key)), revision: page.revision };
    }
    assert_eq!(paged, keys);
    let ff = s.list(b"/bin/\xff", ListOptions::default()).await.unwrap();
    assert_eq!(ff.kvs.len(), 2);
    let evs = take_events(&mut w, 2).await;
    assert_eq!(evs[0].key(), &keys[5]);
    assert_eq!(evs[1].key(), &keys[6]);
    // A raw 0xff-only prefix (no upper bound) still lists only what it covers.
    s.create(b"\xff\xff", b("top"), None).await.unwrap();
    let top = s.list(b"\xff", ListOptions::default()).await.unwrap();
    assert_eq!(top.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(), vec![Bytes::from_static(b"\xff\xff")]);
}

/// A key with a time to live is deleted after it expires, and watchers see the deletion; an
/// update without a TTL makes a key permanent again.
pub async fn expiring_keys_are_deleted_and_watched(fx: &Fixture) {
    let s = &*fx.store;
    let ttl = Some(Duration::from_secs(2));
    let r1 = s.create(b"/ttl/event", b("e"), ttl).await.unwrap();
    let rk = s.create(b"/ttl/kept", b("k"), ttl).await.unwrap();
    s.update(b"/ttl/kept", b("k2"), rk, None).await.unwrap();
    s.create(b"/ttl/plain", b("p"), None).await.unwrap();
    let mut w = s.watch(b"/ttl/", r1).await.unwrap();
    // The four writes above, then the expiry's delete.
    let evs = take_events(&mut w, 5).await;
    match &evs[4] {
        Event::Delete { key, prev, .. } => {
            assert_eq!(key, &b("/ttl/event"));
            assert_eq!(prev.as_ref().map(|p| p.value.clone()), Some(b("e")));
        }
        other => panic!("expected the expiry's delete, got {other:?}"),
    }
    assert_eq!(s.get(b"/ttl/event").await.unwrap(), None);
    assert_eq!(s.get(b"/ttl/kept").await.unwrap().unwrap().value, b("k2"));
    assert_eq!(s.get(b"/ttl/plain").await.unwrap().unwrap().value, b("p"));
}

/// Reads at a revision the store has not reached yet fail with `FutureRevision`, and a list
/// start outside the prefix is an invalid argument.
pub async fn future_revisions_are_refused(fx: &Fixture) {
    let s = &*fx.store;
    s.create(b"/f/a", b("a"), None).await.unwrap();
    let cur = s.current_revision().await.unwrap();
    let far = ListOptions { revision: cur + 1_000_000, ..Default::default() };
    assert!(matches!(s.list(b"/f/", far).await, Err(StoreError::FutureRevision { .. })));
    let outside = ListOptions { start: Some(b("/g/")), ..Default::default() };
    assert!(matches!(s.list(b"/f/", outside).await, Err(StoreError::InvalidArgument(_))));
    // A watch may start in the future: it simply waits for that revision.
    let mut w = s.watch(b"/f/", cur + 1).await.unwrap();
    let rev = s.create(b"/f/b", b("b"), None).await.unwrap();
    assert!(rev > cur);
    assert_eq!(next_event(&mut w).await.key(), &b("/f/b"));
}
