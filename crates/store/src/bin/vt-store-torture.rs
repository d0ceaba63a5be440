//! `vt-store-torture PATH [WRITERS]`: writes to a SQLite store as fast as it can from several
//! concurrent writers and prints one line per *acknowledged* write, so that a test (or an
//! operator checking a disk) can kill it at any moment with SIGKILL and verify afterwards that
//! every acknowledged write survived.
//!
//! Output lines: `ready REV` once the store is open, then `ack KEY REV` for every acknowledged
//! create and `cas VALUE REV` for every acknowledged update of the shared counter key.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use vt_store::sqlite::{SqliteOptions, SqliteStore};
use vt_store::{Store, StoreError};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: vt-store-torture PATH [WRITERS]");
        std::process::exit(2);
    };
    let writers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(8);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    if let Err(e) = rt.block_on(run(path, writers)) {
        eprintln!("vt-store-torture: {e}");
        std::process::exit(1);
    }
}

async fn run(path: String, writers: usize) -> Result<(), StoreError> {
    let store = SqliteStore::open(&path, SqliteOptions::default()).await?;
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let say = move |out: &Mutex<std::io::Stdout>, line: String| {
        let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
        // A failed write to stdout means the reader is gone: stop quietly.
        if writeln!(o, "{line}").and_then(|_| o.flush()).is_err() {
            std::process::exit(0);
        }
    };
    let start = store.current_revision().await?;
    say(&out, format!("ready {start}"));
    if store.get(b"/torture/counter").await?.is_none() {
        match store.create(b"/torture/counter", Bytes::from_static(b"0"), None).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, out) = (store.clone(), out.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                if w == 0 && i % 4 == 0 {
                    // One writer also moves a shared counter with compare-and-swap.
                    let cur = store.get(b"/torture/counter").await?.ok_or(StoreError::NotFound)?;
                    let n: u64 = std::str::from_utf8(&cur.value).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
                    let rev = store
                        .update(b"/torture/counter", Bytes::from((n + 1).to_string()), cur.mod_revision, None)
                        .await?;
                    say(&out, format!("cas {} {rev}", n + 1));
                }
                let key = format!("/torture/{start}/w{w}/{i}");
                let rev = store.create(key.as_bytes(), Bytes::from(format!("value of {key}")), None).await?;
                say(&out, format!("ack {key} {rev}"));
            }
            Ok::<(), StoreError>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| StoreError::Backend(e.to_string()))??;
    }
    Ok(())
}
