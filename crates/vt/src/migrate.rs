//! `vt migrate`: moves a tenant's store between its SQLite file and an etcd prefix — the way
//! to make a tenant survive the loss of its manager's machine (an etcd tenant can be served
//! by any replica), and back.
//!
//! The copy is consistent: the tenant must be asleep or paused (its store closed), and the
//! source store is opened here, which takes its lock (SQLite's lock file) until the manager
//! has taken the new spec, so a request that would wake the tenant meanwhile fails and
//! retries rather than writing behind the copy. Moving back out of etcd needs a paused tenant
//! (nothing locks an etcd prefix). All
//! keys are read at one revision and written to the destination, which must be empty; then
//! the Tenant's `spec.store` is switched and the tenant wakes on its new store. Objects,
//! UIDs and the tenant's credentials are unchanged; resource versions restart at the
//! destination's revisions, so clients watching across the move re-list, as after a restore
//! from backup. Events (which expire) are not copied. The source stays where it was, as a
//! backup (the SQLite file is renamed `store.db.migrated-<time>`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use vt_manager::tenant::Tenant;
use vt_store::etcd::{EtcdOptions, EtcdStore};
use vt_store::sqlite::{SqliteOptions, SqliteStore};
use vt_store::{ListOptions, Store, key_successor};

use crate::tenants::{HostArgs, explain, get_tenant, host, phase};

/// Where a tenant's store goes.
pub enum Destination {
    /// An etcd cluster, under a prefix (`/vt/<tenant>/` by default).
    Etcd { endpoints: Vec<String>, prefix: Option<String> },
    /// The tenant's SQLite file in the manager's data directory.
    Sqlite,
}

fn sqlite_path(data_dir: &Path, tenant: &str) -> PathBuf {
    data_dir.join("tenants").join(tenant).join("store.db")
}

/// Copies every key of `from` (but events) into the empty `to`, at one revision; how many.
async fn copy(from: &dyn Store, to: &dyn Store) -> Result<(usize, vt_store::Revision), String> {
    let existing = to.list(b"/", ListOptions { limit: 1, ..Default::default() }).await.map_err(|e| e.to_string())?;
    if !existing.kvs.is_empty() {
        return Err("the destination already holds objects: migrate into an empty store".into());
    }
    let revision = from.current_revision().await.map_err(|e| e.to_string())?;
    let mut start = None;
    let mut copied = 0;
    loop {
        let page = from
            .list(b"/", ListOptions { limit: 500, start: start.clone(), revision })
            .await
            .map_err(|e| format!("reading the source: {e}"))?;
        for kv in &page.kvs {
            if kv.key.starts_with(b"/registry/events/") {
                continue;
            }
            to.create(&kv.key, kv.value.clone(), None).await.map_err(|e| format!("writing the destination: {e}"))?;
            copied += 1;
        }
        match (page.more, page.kvs.last()) {
            (true, Some(last)) => start = Some(key_successor(&last.key)),
            _ => break,
        }
    }
    Ok((copied, revision))
}

/// Sets the Tenant's store and waits until the manager has seen it (its status observes the
/// new generation).
async fn switch(api: &Api<Tenant>, name: &str, patch: serde_json::Value) -> Result<(), String> {
    let t = api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.map_err(explain)?;
    let want = t.metadata.generation.unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let t = get_tenant(api, name).await?;
        if t.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0) >= want {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("the manager did not take tenant {name:?}'s new store within 60s"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `vt migrate NAME --etcd ...` / `vt migrate NAME --sqlite`.
pub async fn migrate(host_args: &HostArgs, name: &str, to: Destination) -> Result<(), String> {
    let client = host(host_args).await?;
    let api: Api<Tenant> = Api::all(client);
    let t = get_tenant(&api, name).await?;
    let p = phase(&t);
    // Out of etcd, nothing would keep a wake from writing behind the copy: paused only.
    let back = matches!(to, Destination::Sqlite);
    if p != "Paused" && (back || p != "Sleeping") {
        let how = if back { format!("`vt pause {name}`") } else { format!("`vt sleep {name}` (or `vt pause {name}`)") };
        return Err(format!(
            "tenant {name:?} is {p}: its store must be closed to be copied consistently — {how} first"
        ));
    }
    let path = sqlite_path(&host_args.data_dir, name);
    let sqlite_opts = SqliteOptions { cache_kib: 256, max_idle_readers: 1, ..Default::default() };
    let (copied, revision, store) = match (&to, &t.spec.store.etcd) {
        (Destination::Etcd { endpoints, prefix }, None) => {
            if !path.exists() {
                return Err(format!("no SQLite store at {} (is --data-dir the manager's?)", path.display()));
            }
            let from = SqliteStore::open(&path, sqlite_opts).await.map_err(|e| format!("{}: {e}", path.display()))?;
            let prefix = prefix.clone().unwrap_or_else(|| format!("/vt/{name}/"));
            let dest = EtcdStore::connect(EtcdOptions::new(endpoints.clone(), prefix.clone()))
                .await
                .map_err(|e| format!("etcd: {e}"))?;
            let (n, rev) = copy(&from, &dest).await?;
            // Switched while the source is still locked, and kept locked until the manager
            // has taken the new spec: no wake can open the old store behind the copy.
            let spec = json!({"spec": {"store": {"etcd": {"endpoints": endpoints, "prefix": prefix}}}});
            switch(&api, name, spec).await?;
            from.close().await;
            let backup = path.with_extension(format!("db.migrated-{}", jiff::Timestamp::now().as_second()));
            std::fs::rename(&path, &backup).map_err(|e| format!("keeping {} as a backup: {e}", path.display()))?;
            (
                n,
                rev,
                format!(
                    "etcd {} (prefix {prefix}); the SQLite file stays at {}",
                    endpoints.join(","),
                    backup.display()
                ),
            )
        }
        (Destination::Sqlite, Some(etcd)) => {
            if path.exists() {
                return Err(format!("{} exists: move it away first", path.display()));
            }
            let prefix = etcd.prefix.clone().unwrap_or_else(|| format!("/vt/{name}/"));
            let from: Arc<dyn Store> = Arc::new(
                EtcdStore::connect(EtcdOptions::new(etcd.endpoints.clone(), prefix.clone()))
                    .await
                    .map_err(|e| format!("etcd: {e}"))?,
            );
            std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(|e| e.to_string())?;
            let dest = SqliteStore::open(&path, sqlite_opts).await.map_err(|e| format!("{}: {e}", path.display()))?;
            let (n, rev) = copy(from.as_ref(), &dest).await?;
            dest.close().await;
            switch(&api, name, json!({"spec": {"store": {"etcd": null}}})).await?;
            (n, rev, format!("SQLite {} (the etcd prefix {prefix} is left as it was)", path.display()))
        }
        (Destination::Etcd { .. }, Some(_)) => {
            return Err(format!("tenant {name:?} already stores its objects in etcd"));
        }
        (Destination::Sqlite, None) => return Err(format!("tenant {name:?} already stores its objects in SQLite")),
    };
    println!("tenant {name}: {copied} objects copied at revision {revision}; it now stores them in {store}");
    Ok(())
}
