//! kube-rs against the real `vt apiserver`: pagination, optimistic concurrency, dry-run, the
//! finalizer flow, and watches (bookmarks, resuming after a server restart, 410 handling).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Error};
use vt_testkit::VtServer;

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

async fn client(server: &VtServer) -> Client {
    let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    Client::try_from(cfg).expect("client")
}

async fn namespace(client: &Client, name: &str) -> Api<ConfigMap> {
    let ns = Namespace { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
    Api::namespaced(client.clone(), name)
}

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()),
        ..Default::default()
    }
}

fn api_code(e: &Error) -> (u16, String) {
    match e {
        Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("not an API error: {other}"),
    }
}

/// A list of 5,000 objects in pages of 500: every object exactly once, one snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_over_5000_objects() {
    let server = VtServer::start(vt(), &[]);
    let c = client(&server).await;
    let api = namespace(&c, "pages").await;
    let mut tasks = Vec::new();
    for w in 0..32 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..5000).step_by(32) {
                api.create(&PostParams::default(), &cm(&format!("cm-{i:04}"), &[("i", &i.to_string())]))
                    .await
                    .expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    let mut rv = None;
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.expect("list page");
        pages += 1;
        // Every page of one list reports the first page's snapshot.
        let page_rv = page.metadata.resource_version.clone();
        if rv.is_none() {
            rv = page_rv.clone();
            // A write after the first page is not part of this list.
            api.create(&PostParams::default(), &cm("zz-late", &[])).await.unwrap();
        }
        assert_eq!(page_rv, rv);
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    assert_eq!(pages, 10);
    assert_eq!(names.len(), 5000);
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), 5000, "duplicates across pages");
    assert!(names.windows(2).all(|w| w[0] < w[1]), "pages in key order");
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 5001);
}

/// Two writers with the same resourceVersion: the second gets 409 Conflict.
#[tokio::test]
async fn optimistic_concurrency_conflicts() {
    let server = VtServer::start(vt(), &[]);
    let c = client(&server).await;
    let api = namespace(&c, "occ").await;
    let created = api.create(&PostParams::default(), &cm("shared", &[("v", "0")])).await.unwrap();
    let mut first = created.clone();
    first.data = Some([("v".to_string(), "1".to_string())].into());
    let mut second = created.clone();
    second.data = Some([("v".to_string(), "2".to_string())].into());
    let updated = api.replace("shared", &PostParams::default(), &first).await.expect("first writer");
    assert_ne!(updated.metadata.resource_version, created.metadata.resource_version);
    let err = api.replace("shared", &PostParams::default(), &second).await.expect_err("stale writer");
    assert_eq!(api_code(&err), (409, "Conflict".into()));
    assert_eq!(api.get("shared").await.unwrap().data.unwrap()["v"], "1");
    // Without a resourceVersion the update is unconditional (allowed for built-in kinds).
    second.metadata.resource_version = None;
    api.replace("shared", &PostParams::default(), &second).await.expect("unconditional update");
    assert_eq!(api.get("shared").await.unwrap().data.unwrap()["v"], "2");
}

/// dryRun=All runs every step but the write.
#[tokio::test]
async fn dry_run_changes_nothing() {
    let server = VtServer::start(vt(), &[]);
    let c = client(&server).await;
    let api = namespace(&c, "dry").await;
    let dry = PostParams { dry_run: true, ..Default::default() };
    let out = api.create(&dry, &cm("ghost", &[("a", "b")])).await.expect("dry-run create");
    assert!(out.metadata.uid.is_some() && out.metadata.creation_timestamp.is_some());
    assert_eq!(out.metadata.resource_version, None, "a dry-run create has no resourceVersion");
    assert_eq!(api_code(&api.get("ghost").await.unwrap_err()).0, 404);
    api.create(&PostParams::default(), &cm("real", &[("a", "b")])).await.unwrap();
    let dp = DeleteParams { dry_run: true, ..Default::default() };
    api.delete("real", &dp).await.expect("dry-run delete");
    assert!(api.get("real").await.is_ok(), "a dry-run delete deletes nothing");
    let pp = PatchParams { dry_run: true, ..Default::default() };
    let patched = api.patch("real", &pp, &Patch::Merge(serde_json::json!({"data": {"a": "changed"}}))).await.unwrap();
    assert_eq!(patched.data.unwrap()["a"], "changed");
    assert_eq!(api.get("real").await.unwrap().data.unwrap()["a"], "b");
}

/// An object with finalizers stays, marked for deletion, until its finalizers are removed;
/// then it is gone and watchers see it deleted.
#[tokio::test]
async fn finalizer_flow() {
    let server = VtServer::start(vt(), &[]);
    let c = client(&server).await;
    let api = namespace(&c, "fin").await;
    let mut obj = cm("held", &[]);
    obj.metadata.finalizers = Some(vec!["e2e.vt.dev/hold".into()]);
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    let deleted = api.delete("held", &DeleteParams::default()).await.unwrap();
    let pending = deleted.left().expect("the object is returned, not yet gone");
    assert!(pending.metadata.deletion_timestamp.is_some());
    let still = api.get("held").await.expect("still there");
    assert!(still.metadata.deletion_timestamp.is_some());
    // New finalizers cannot be added to an object being deleted.
    let err = api
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": ["e2e.vt.dev/hold", "another.dev/x"]}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (422, "Invalid".into()));
    api.patch("held", &PatchParams::default(), &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})))
        .await
        .expect("remove the finalizer");
    assert_eq!(api_code(&api.get("held").await.unwrap_err()).0, 404);
    let events: Vec<_> = api.watch(&WatchParams::default().timeout(3), &rv).await.unwrap().try_collect().await.unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
            WatchEvent::Bookmark(_) => "BOOKMARK",
            WatchEvent::Error(_) => "ERROR",
        })
        .collect();
    assert_eq!(kinds, vec!["MODIFIED", "DELETED"], "deletion marked, then finalized");
}

/// Bookmarks arrive with allowWatchBookmarks, carrying a resourceVersion to resume from.
#[tokio::test]
async fn watch_bookmarks() {
    let server = VtServer::start(vt(), &["--bookmark-interval", "1"]);
    let c = client(&server).await;
    let api = namespace(&c, "bm").await;
    let created = api.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
    let rv = created.metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &cm("b", &[])).await.unwrap();
    let mut stream = api.watch(&WatchParams::default().timeout(10), &rv).await.unwrap().boxed();
    let mut saw_b = false;
    let bookmark_rv = loop {
        match tokio::time::timeout(Duration::from_secs(15), stream.next()).await.expect("event in time") {
            Some(Ok(WatchEvent::Added(cm))) => saw_b |= cm.metadata.name.as_deref() == Some("b"),
            Some(Ok(WatchEvent::Bookmark(b))) => break b.metadata.resource_version,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(saw_b, "the change after the start arrives before the bookmark");
    assert!(bookmark_rv.parse::<i64>().unwrap() > rv.parse::<i64>().unwrap());
    // Resuming from the bookmark sees only what came after.
    api.create(&PostParams::default(), &cm("c", &[])).await.unwrap();
    let after: Vec<_> =
        api.watch(&WatchParams::default().timeout(2), &bookmark_rv).await.unwrap().try_collect().await.unwrap();
    let names: Vec<String> = after
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Added(c) => c.metadata.name.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(names, vec!["c".to_string()]);
}

/// kube-rs' watcher keeps going across a SIGKILL and restart of the server: it resumes from
/// its last resourceVersion (served from the store's history) and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_resumes_after_server_restart() {
    let mut server = VtServer::start(vt(), &[]);
    let c = client(&server).await;
    let api = namespace(&c, "resume").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let watch_api = api.clone();
    let task = tokio::spawn(async move {
        let mut s = watcher(watch_api, watcher::Config::default()).default_backoff().applied_objects().boxed();
        while let Some(item) = s.next().await {
            if let Ok(cm) = item {
                let _ = tx.send(cm.metadata.name.unwrap_or_default());
            }
        }
    });
    api.create(&PostParams::default(), &cm("before", &[])).await.unwrap();
    wait_for(&mut rx, "before").await;
    server.restart();
    // The client reconnects to the same address; the new server has the same data.
    let c2 = client(&server).await;
    let api2: Api<ConfigMap> = Api::namespaced(c2, "resume");
    api2.create(&PostParams::default(), &cm("after", &[])).await.unwrap();
    wait_for(&mut rx, "after").await;
    task.abort();
}

async fn wait_for(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(n)) if n == name => return,
            Ok(Some(_)) => continue,
            _ => panic!("the watcher never delivered {name}"),
        }
    }
}

/// A watch or a continued list from before the compacted history gets 410 Expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_after_compaction() {
    let server = VtServer::start(vt(), &["--compaction-interval", "1", "--compaction-retain", "5"]);
    let c = client(&server).await;
    let api = namespace(&c, "gone").await;
    for i in 0..3 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), &[])).await.unwrap();
    }
    let first_page = api.list(&ListParams::default().limit(1)).await.unwrap();
    let token = first_page.metadata.continue_.clone().expect("a continue token");
    let old_rv = first_page.metadata.resource_version.clone().unwrap();
    // Push the old revision out of the watch cache window (512 changes) and the store's
    // retained history.
    for i in 0..600 {
        api.patch("c0", &PatchParams::default(), &Patch::Merge(serde_json::json!({"data": {"i": i.to_string()}})))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let err = api.list(&ListParams::default().limit(1).continue_token(&token)).await.unwrap_err();
    assert_eq!(api_code(&err), (410, "Expired".into()), "continue after compaction");
    let mut stream = api.watch(&WatchParams::default().timeout(5), &old_rv).await.unwrap().boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // kube-rs' watcher recovers by re-listing.
    let objs: Vec<ConfigMap> =
        watcher(api.clone(), watcher::Config::default()).applied_objects().take(3).try_collect().await.unwrap();
    assert_eq!(objs.len(), 3);
}
