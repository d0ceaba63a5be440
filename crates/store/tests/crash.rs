//! Crash durability: a write is acknowledged only after it is on stable storage.
//!
//! SQLite: the `vt-store-torture` binary writes from 8 concurrent writers in a separate OS
//! process and prints every acknowledged write; the test kills it with SIGKILL at random
//! moments, reopens the store and checks that every acknowledged write is there with its
//! revision, that the history is gap-free (every revision from 2 to the current one holds
//! exactly one event), and that the store keeps working — for many iterations, bounded in
//! time. etcd: the etcd server itself is killed with SIGKILL while writes are in flight and
//! restarted; every acknowledged write must be there.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use rand::RngExt;
use vt_store::etcd::{EtcdOptions, EtcdStore};
use vt_store::sqlite::{CompactionPolicy, SqliteOptions, SqliteStore};
use vt_store::{ListOptions, Revision, Store, StoreError};
use vt_testkit::EtcdServer;

/// What the torture process acknowledged before it died.
#[derive(Default)]
struct Acked {
    creates: HashMap<String, Revision>,
    cas: Vec<(u64, Revision)>,
}

fn torture(path: &std::path::Path, kill_after: Duration) -> Acked {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vt-store-torture"))
        .arg(path)
        .arg("8")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start vt-store-torture");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(30)).expect("torture process did not start");
    assert!(ready.starts_with("ready "), "unexpected first line {ready:?}");
    std::thread::sleep(kill_after);
    child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
    child.wait().unwrap();
    reader.join().unwrap();
    let mut acked = Acked::default();
    // Only complete lines count: a line is printed after its write was acknowledged.
    for line in rx.try_iter() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["ack", key, rev] => {
                acked.creates.insert(key.to_string(), rev.parse().unwrap());
            }
            ["cas", value, rev] => acked.cas.push((value.parse().unwrap(), rev.parse().unwrap())),
            _ => {}
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let opts = SqliteOptions { compaction: CompactionPolicy::disabled(), ..Default::default() };
    let started = Instant::now();
    let mut rng = rand::rng();
    let mut iterations = 0;
    let mut total_acked = 0;
    let mut all_acked: HashMap<String, Revision> = HashMap::new();
    while iterations < 40 && (iterations < 10 || started.elapsed() < Duration::from_secs(25)) {
        iterations += 1;
        let kill_after = Duration::from_millis(rng.random_range(20..400));
        let acked = torture(&path, kill_after);
        total_acked += acked.creates.len();
        all_acked.extend(acked.creates);

        let store = SqliteStore::open(&path, opts.clone()).await.expect("reopen after SIGKILL");
        let head = store.current_revision().await.unwrap();
        // Every write acknowledged in any iteration is there, at its revision.
        for (key, rev) in &all_acked {
            let kv = store
                .get(key.as_bytes())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged {key} lost (iteration {iterations})"));
            assert_eq!(kv.mod_revision, *rev, "{key}");
            assert_eq!(kv.value, Bytes::from(format!("value of {key}")));
            assert!(*rev <= head);
        }
        let counter = store.get(b"/torture/counter").await.unwrap();
        if let Some((value, rev)) = acked.cas.last() {
            let counter = counter.expect("counter lost");
            let now: u64 = std::str::from_utf8(&counter.value).unwrap().parse().unwrap();
            assert!(now >= *value && counter.mod_revision >= *rev, "counter went back: {now} < {value}");
        }
        // The history is whole: revisions 2..=head each hold exactly one event, in order.
        let mut w = store.watch(b"", 2).await.unwrap();
        for expected in 2..=head {
            let ev = tokio::time::timeout(Duration::from_secs(30), w.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(ev.revision(), expected, "history gap after a crash (iteration {iterations})");
        }
        let listed = store.list(b"/torture/", ListOptions::default()).await.unwrap();
        assert!(listed.kvs.len() > all_acked.len() || all_acked.is_empty(), "the listing lost keys");
        store.close().await;
    }
    assert!(total_acked > 1000, "too few acknowledged writes ({total_acked}) to prove anything");
    println!("{iterations} SIGKILLs, {total_acked} acknowledged writes verified");
}

/// A second process cannot open a store that a live process holds.
#[tokio::test]
async fn sqlite_store_held_by_another_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vt-store-torture"))
        .arg(&path)
        .arg("1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("ready"));
    let result = SqliteStore::open(&path, SqliteOptions::default()).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(matches!(result, Err(StoreError::Locked(_))), "{:?}", result.map(|_| ()));
    // The lock dies with the process.
    SqliteStore::open(&path, SqliteOptions::default()).await.expect("open after the holder died");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_acknowledged_writes_survive_server_sigkill() {
    let mut server = EtcdServer::start();
    let endpoint = server.endpoint().to_string();
    let mut rng = rand::rng();
    let mut acked: HashMap<String, Revision> = HashMap::new();
    for round in 0..4 {
        let store = Arc::new(
            EtcdStore::connect(EtcdOptions {
                request_timeout: Duration::from_secs(3),
                ..EtcdOptions::new(vec![endpoint.clone()], "/crash")
            })
            .await
            .unwrap(),
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut writers = Vec::new();
        for w in 0..8 {
            let (store, tx) = (store.clone(), tx.clone());
            writers.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let key = format!("/r{round}/w{w}/{i}");
                    match store.create(key.as_bytes(), Bytes::from(key.clone()), None).await {
                        Ok(rev) => {
                            let _ = tx.send((key, rev));
                        }
                        Err(_) => break, // the server is gone
                    }
                }
            }));
        }
        drop(tx);
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
        server.kill();
        for w in writers {
            let _ = w.await;
        }
        while let Some((key, rev)) = rx.recv().await {
            acked.insert(key, rev);
        }
        server.restart();
        let store = EtcdStore::connect(EtcdOptions::new(vec![endpoint.clone()], "/crash")).await.unwrap();
        for (key, rev) in &acked {
            let kv = store.get(key.as_bytes()).await.unwrap().unwrap_or_else(|| panic!("acknowledged {key} lost"));
            assert_eq!(kv.mod_revision, *rev);
        }
    }
    assert!(acked.len() > 100, "too few acknowledged writes ({})", acked.len());
}
