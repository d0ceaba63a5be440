//! Backends under test.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vt_store::Store;
use vt_store::etcd::{EtcdOptions, EtcdStore};
use vt_store::sqlite::{CompactionPolicy, SqliteOptions, SqliteStore};
use vt_testkit::EtcdServer;

/// A store under test, with whatever keeps its backend alive.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    /// Whether revisions are contiguous (no other writer shares the revision counter).
    pub exclusive: bool,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

/// SQLite in a fresh temporary file, without automatic compaction.
pub async fn sqlite(_case: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = SqliteOptions { compaction: CompactionPolicy::disabled(), ..Default::default() };
    let store = SqliteStore::open(dir.path().join("store.db"), opts).await.expect("open sqlite store");
    Fixture { store: Arc::new(store), exclusive: true, _keep: Box::new(dir) }
}

/// etcd: the binary's shared server under a unique prefix, or a dedicated server for cases
/// that compact.
pub async fn etcd(case: &str) -> Fixture {
    static N: AtomicU64 = AtomicU64::new(0);
    let prefix = format!("/vt-test/{case}-{}/", N.fetch_add(1, Ordering::Relaxed));
    if case.contains("compaction") {
        let server = EtcdServer::start();
        let store = EtcdStore::connect(EtcdOptions::new(vec![server.endpoint().to_string()], prefix))
            .await
            .expect("connect etcd");
        return Fixture { store: Arc::new(store), exclusive: true, _keep: Box::new(server) };
    }
    let server = EtcdServer::shared();
    let store =
        EtcdStore::connect(EtcdOptions::new(vec![server.endpoint().to_string()], prefix)).await.expect("connect etcd");
    Fixture { store: Arc::new(store), exclusive: false, _keep: Box::new(()) }
}
