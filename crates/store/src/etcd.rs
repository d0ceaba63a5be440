//! The etcd backend, for users who outgrow one machine.
//!
//! Many stores share one etcd cluster: each store's keys live under its own prefix (always
//! ending in `/`, so that the prefix of tenant `a` never covers tenant `ab`). Guarded writes are
//! etcd transactions comparing `mod_revision`; watches ask for previous values from a start
//! revision; keys with a time to live are attached to leases that are shared by keys with the
//! same TTL for a short while, as kube-apiserver does, so Events do not cost a lease each.
//!
//! Revisions are etcd's: shared by every store in the cluster, so one store's revisions are
//! increasing but not contiguous. Compaction is etcd's too, and therefore cluster-wide: one
//! party (the manager) should run it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use tonic::{Code, Status};

use crate::{Event, KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError, WatchStream, prefix_end};

mod client;
mod wire;

use client::Client;
use wire::{
    CompactionRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest, EventType, LeaseGrantRequest,
    PutRequest, RangeRequest, Request, RequestOp, Response, ResponseOp, TargetUnion, TxnRequest, WatchCreateRequest,
};
/// Longest time a lease is shared among keys of one TTL (kube-apiserver uses the same bound).
const MAX_LEASE_REUSE: Duration = Duration::from_secs(60);

/// Settings of an [`EtcdStore`].
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Client URLs of the etcd cluster, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// The key prefix of this store, e.g. `/vt/acme/`. A missing trailing `/` is added.
    pub prefix: Vec<u8>,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// How long to wait for any single request.
    pub request_timeout: Duration,
}

impl EtcdOptions {
    /// Options for a store under `prefix` on the cluster at `endpoints`.
    pub fn new(endpoints: Vec<String>, prefix: impl Into<Vec<u8>>) -> Self {
        EtcdOptions {
            endpoints,
            prefix: prefix.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A [`Store`] on an etcd cluster, under one key prefix. Cloning is cheap.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: Bytes,
    leases: Arc<Mutex<HashMap<i64, LeaseSlot>>>,
}

/// A lease that keys with the same TTL may join until `reusable_until`.
#[derive(Clone, Copy)]
struct LeaseSlot {
    id: i64,
    reusable_until: Instant,
}

impl EtcdStore {
    /// Connects to the cluster and checks that it answers.
    pub async fn connect(opts: EtcdOptions) -> Result<Self> {
        let mut prefix = opts.prefix.clone();
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
        let client = Client::new(&opts.endpoints, opts.connect_timeout, opts.request_timeout).map_err(|e| {
            StoreError::Unavailable(format!("cannot reach etcd at {:?}: {}", opts.endpoints, e.message()))
        })?;
        let store = EtcdStore { client, prefix: Bytes::from(prefix), leases: Arc::new(Mutex::new(HashMap::new())) };
        store.current_revision().await.map_err(|e| match e {
            StoreError::Unavailable(m) | StoreError::Backend(m) => {
                StoreError::Unavailable(format!("etcd at {:?} does not answer: {m}", opts.endpoints))
            }
            other => other,
        })?;
        Ok(store)
    }

    /// This store's key prefix in etcd.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    fn full(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    fn strip(&self, key: &[u8]) -> Bytes {
        Bytes::copy_from_slice(key.strip_prefix(&self.prefix[..]).unwrap_or(key))
    }

    fn convert(&self, kv: wire::KeyValue) -> KeyValue {
        KeyValue {
            key: self.strip(&kv.key),
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        }
    }

    /// A lease for a key with time to live `ttl`, shared with other keys of the same TTL
    /// for up to 5% of the TTL (at most a minute), so keys live between `ttl` and `ttl` plus
    /// that reuse window.
    async fn lease_for(&self, ttl: Duration) -> Result<i64> {
        let secs = (ttl.as_millis().div_ceil(1000) as i64).max(1);
        let reuse = Duration::from_millis((secs as u64) * 50).min(MAX_LEASE_REUSE);
        let now = Instant::now();
        if let Some(slot) = self.leases.lock().unwrap_or_else(|p| p.into_inner()).get(&secs)
            && slot.reusable_until > now
        {
            return Ok(slot.id);
        }
        let req = LeaseGrantRequest { ttl: secs + reuse.as_millis().div_ceil(1000) as i64, id: 0 };
        let granted = self.client.lease_grant(req).await.map_err(map_err)?;
        if !granted.error.is_empty() {
            return Err(StoreError::Backend(format!("etcd: {}", granted.error)));
        }
        if !reuse.is_zero() {
            self.leases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(secs, LeaseSlot { id: granted.id, reusable_until: now + reuse });
        }
        Ok(granted.id)
    }

    async fn put(&self, key: Vec<u8>, value: Bytes, ttl: Option<Duration>) -> Result<RequestOp> {
        let lease = match ttl {
            Some(ttl) => self.lease_for(ttl).await?,
            None => 0,
        };
        Ok(RequestOp { request: Some(Request::Put(PutRequest { key, value, lease })) })
    }

    /// Runs a guarded write: `then` if `compare` holds, otherwise a read of `key`.
    async fn guarded(
        &self,
        key: Vec<u8>,
        compare: Compare,
        then: RequestOp,
    ) -> Result<(bool, Revision, Vec<ResponseOp>)> {
        let read = RequestOp { request: Some(Request::Range(RangeRequest { key, ..Default::default() })) };
        let txn = TxnRequest { compare: vec![compare], success: vec![then], failure: vec![read] };
        let resp = self.client.txn(txn).await.map_err(map_err)?;
        let rev = resp.header.map(|h| h.revision).unwrap_or_default();
        Ok((resp.succeeded, rev, resp.responses))
    }

    /// The key read by the `else` branch of a failed guarded write.
    fn read_back(&self, responses: Vec<ResponseOp>) -> Option<KeyValue> {
        responses.into_iter().find_map(|r| match r.response {
            Some(Response::Range(g)) => g.kvs.into_iter().next().map(|kv| self.convert(kv)),
            _ => None,
        })
    }

    /// Fails with `Compacted` if reading at `revision` is no longer possible.
    async fn check_not_compacted(&self, revision: Revision) -> Result<()> {
        let req = RangeRequest { key: self.prefix.to_vec(), revision, count_only: true, ..Default::default() };
        match self.client.range(req).await {
            Ok(_) => Ok(()),
            Err(e) if is_compacted(&e) => Err(StoreError::Compacted { requested: revision }),
            Err(e) if is_future(&e) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }
}

fn is_compacted(e: &Status) -> bool {
    e.message().contains("required revision has been compacted")
}

fn is_future(e: &Status) -> bool {
    e.message().contains("future revision")
}

/// Maps a gRPC status from etcd (or from the transport, which reports unreachable servers as
/// `Unavailable`) to a store error.
fn map_err(s: Status) -> StoreError {
    let msg = s.message();
    if msg.contains("database space exceeded") {
        StoreError::Full(format!("etcd: {msg}"))
    } else if msg.contains("request is too large") {
        StoreError::InvalidArgument(format!("etcd: {msg}"))
    } else {
        match s.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                StoreError::Unavailable(format!("etcd: {msg}"))
            }
            Code::Unknown if is_transport(&s) => StoreError::Unavailable(format!("etcd: {msg}")),
            _ => StoreError::Backend(format!("etcd: {msg}")),
        }
    }
}

/// Whether a status stands for a transport failure (no connection) rather than an answer.
fn is_transport(s: &Status) -> bool {
    std::error::Error::source(s).is_some()
}

impl Store for EtcdStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        Box::pin(async move {
            let req = RangeRequest { key: self.full(key), ..Default::default() };
            let resp = self.client.range(req).await.map_err(map_err)?;
            Ok(resp.kvs.into_iter().next().map(|kv| self.convert(kv)))
        })
    }

    fn list<'a>(&'a self, prefix: &'a [u8], opts: ListOptions) -> BoxFuture<'a, Result<ListResult>> {
        Box::pin(async move {
            let start = match &opts.start {
                Some(s) if !s.starts_with(prefix) => {
                    return Err(StoreError::InvalidArgument("list start key is outside the prefix".into()));
                }
                Some(s) => self.full(s),
                None => self.full(prefix),
            };
            let req = RangeRequest {
                key: start,
                range_end: prefix_end(&self.full(prefix)).unwrap_or_else(|| vec![0]),
                limit: opts.limit as i64,
                revision: opts.revision.max(0),
                count_only: false,
            };
            let resp = match self.client.range(req).await {
                Ok(r) => r,
                Err(e) if is_compacted(&e) => {
                    return Err(StoreError::Compacted { requested: opts.revision });
                }
                Err(e) if is_future(&e) => {
                    let current = self.current_revision().await?;
                    return Err(StoreError::FutureRevision { requested: opts.revision, current });
                }
                Err(e) => return Err(map_err(e)),
            };
            let revision =
                if opts.revision > 0 { opts.revision } else { resp.header.map(|h| h.revision).unwrap_or_default() };
            Ok(ListResult { kvs: resp.kvs.into_iter().map(|kv| self.convert(kv)).collect(), revision, more: resp.more })
        })
    }

    fn create<'a>(&'a self, key: &'a [u8], value: Bytes, ttl: Option<Duration>) -> BoxFuture<'a, Result<Revision>> {
        Box::pin(async move {
            let k = self.full(key);
            let put = self.put(k.clone(), value, ttl).await?;
            let cmp = compare(k.clone(), CompareResult::Equal, TargetUnion::CreateRevision(0));
            let (ok, rev, responses) = self.guarded(k, cmp, put).await?;
            if ok {
                return Ok(rev);
            }
            let revision = self.read_back(responses).map(|kv| kv.mod_revision).unwrap_or(rev);
            Err(StoreError::AlreadyExists { revision })
        })
    }

    fn update<'a>(
        &'a self,
        key: &'a [u8],
        value: Bytes,
        expected: Revision,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Revision>> {
        Box::pin(async move {
            let k = self.full(key);
            let put = self.put(k.clone(), value, ttl).await?;
            let cmp = compare(k.clone(), CompareResult::Equal, TargetUnion::ModRevision(expected));
            let (ok, rev, responses) = self.guarded(k, cmp, put).await?;
            if ok {
                return Ok(rev);
            }
            match self.read_back(responses) {
                Some(current) => Err(StoreError::Conflict { current: Box::new(current) }),
                None => Err(StoreError::NotFound),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a [u8], expected: Option<Revision>) -> BoxFuture<'a, Result<(Revision, KeyValue)>> {
        Box::pin(async move {
            let k = self.full(key);
            let del =
                RequestOp { request: Some(Request::DeleteRange(DeleteRangeRequest { key: k.clone(), prev_kv: true })) };
            let cmp = match expected {
                Some(rev) => compare(k.clone(), CompareResult::Equal, TargetUnion::ModRevision(rev)),
                None => compare(k.clone(), CompareResult::Greater, TargetUnion::CreateRevision(0)),
            };
            let (ok, rev, responses) = self.guarded(k, cmp, del).await?;
            if ok {
                let prev = responses.into_iter().find_map(|r| match r.response {
                    Some(Response::DeleteRange(d)) => d.prev_kvs.into_iter().next().map(|kv| self.convert(kv)),
                    _ => None,
                });
                // The compare proved the key existed; an empty answer means it vanished in
                // between, which etcd's serializable transactions rule out.
                return prev.map(|p| (rev, p)).ok_or(StoreError::NotFound);
            }
            match self.read_back(responses) {
                Some(current) => Err(StoreError::Conflict { current: Box::new(current) }),
                None => Err(StoreError::NotFound),
            }
        })
    }

    fn watch<'a>(&'a self, prefix: &'a [u8], from: Revision) -> BoxFuture<'a, Result<WatchStream>> {
        Box::pin(async move {
            if from > 0 {
                self.check_not_compacted(from).await?;
            }
            let full = self.full(prefix);
            let create = WatchCreateRequest {
                range_end: prefix_end(&full).unwrap_or_else(|| vec![0]),
                key: full,
                start_revision: from.max(0),
                prev_kv: true,
            };
            let stream = self.client.watch(create).await.map_err(map_err)?;
            let state = WatchState { stream, pending: VecDeque::new(), store: self.clone(), next: from, done: false };
            let events = futures::stream::unfold(state, |mut st| async move {
                let item = st.next_event().await?;
                Some((item, st))
            });
            Ok(Box::pin(events) as WatchStream)
        })
    }

    fn current_revision(&self) -> BoxFuture<'_, Result<Revision>> {
        Box::pin(async move {
            let req = RangeRequest { key: self.prefix.to_vec(), count_only: true, ..Default::default() };
            let resp = self.client.range(req).await.map_err(map_err)?;
            Ok(resp.header.map(|h| h.revision).unwrap_or_default())
        })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            match self.client.compact(CompactionRequest { revision, physical: true }).await {
                Ok(_) => Ok(()),
                Err(e) if is_compacted(&e) => Ok(()),
                Err(e) if is_future(&e) => {
                    let current = self.current_revision().await?;
                    Err(StoreError::FutureRevision { requested: revision, current })
                }
                Err(e) => Err(map_err(e)),
            }
        })
    }
}

/// The state of one etcd watch as a stream of single events.
struct WatchState {
    stream: tonic::Streaming<wire::WatchResponse>,
    pending: VecDeque<Event>,
    store: EtcdStore,
    next: Revision,
    done: bool,
}

impl WatchState {
    async fn next_event(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                self.next = ev.revision() + 1;
                return Some(Ok(ev));
            }
            if self.done {
                return None;
            }
            let resp = match self.stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    self.done = true;
                    return Some(Err(StoreError::Unavailable("etcd closed the watch".into())));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(map_err(e)));
                }
            };
            if resp.canceled {
                self.done = true;
                return Some(Err(if resp.compact_revision > 0 {
                    StoreError::Compacted { requested: self.next }
                } else {
                    StoreError::Backend(format!("etcd canceled the watch: {}", resp.cancel_reason))
                }));
            }
            for ev in resp.events {
                let Some(kv) = ev.kv else { continue };
                let prev = ev.prev_kv.map(|p| self.store.convert(p));
                self.pending.push_back(if ev.r#type == EventType::Delete as i32 {
                    Event::Delete { key: self.store.strip(&kv.key), revision: kv.mod_revision, prev }
                } else {
                    Event::Put { kv: self.store.convert(kv), prev }
                });
            }
        }
    }
}

/// A comparison of `key`'s create or mod revision, as guarded writes use.
fn compare(key: Vec<u8>, result: CompareResult, target: TargetUnion) -> Compare {
    let kind = match target {
        TargetUnion::CreateRevision(_) => CompareTarget::Create,
        TargetUnion::ModRevision(_) => CompareTarget::Mod,
    };
    Compare { result: result as i32, target: kind as i32, key, target_union: Some(target) }
}
