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
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KvClient,
    LeaseClient, PutOptions, Txn, TxnOp, TxnOpResponse, WatchClient, WatchOptions,
};
use futures::future::BoxFuture;
use tonic::Code;

use crate::{Event, KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError, WatchStream, prefix_end};

/// The largest gRPC message the client accepts (values may be a few MiB; etcd's own
/// `--max-request-bytes` bounds what can be written).
const MAX_MESSAGE: usize = 64 << 20;
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
    kv: KvClient,
    watch: WatchClient,
    lease: LeaseClient,
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
        let connect = ConnectOptions::new()
            .with_connect_timeout(opts.connect_timeout)
            .with_timeout(opts.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(&opts.endpoints, Some(connect))
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot reach etcd at {:?}: {e}", opts.endpoints)))?;
        let store = EtcdStore {
            kv: client.kv_client().max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE),
            watch: client.watch_client().max_decoding_message_size(MAX_MESSAGE),
            lease: client.lease_client(),
            prefix: Bytes::from(prefix),
            leases: Arc::new(Mutex::new(HashMap::new())),
        };
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

    fn convert(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        KeyValue {
            key: self.strip(kv.key()),
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
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
        let granted =
            self.lease.clone().grant(secs + reuse.as_millis().div_ceil(1000) as i64, None).await.map_err(map_err)?;
        if !reuse.is_zero() {
            self.leases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(secs, LeaseSlot { id: granted.id(), reusable_until: now + reuse });
        }
        Ok(granted.id())
    }

    async fn put_options(&self, ttl: Option<Duration>) -> Result<Option<PutOptions>> {
        Ok(match ttl {
            Some(ttl) => Some(PutOptions::new().with_lease(self.lease_for(ttl).await?)),
            None => None,
        })
    }

    /// Runs a guarded write: `then` if `compare` holds, otherwise a read of `key`.
    async fn guarded(
        &self,
        key: Vec<u8>,
        compare: Compare,
        then: TxnOp,
    ) -> Result<(bool, Revision, Vec<TxnOpResponse>)> {
        let txn = Txn::new().when([compare]).and_then([then]).or_else([TxnOp::get(key, None)]);
        let resp = self.kv.clone().txn(txn).await.map_err(map_err)?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or_default();
        Ok((resp.succeeded(), rev, resp.op_responses()))
    }

    /// The key read by the `else` branch of a failed guarded write.
    fn read_back(&self, responses: &[TxnOpResponse]) -> Option<KeyValue> {
        responses.iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| self.convert(kv)),
            _ => None,
        })
    }

    /// Fails with `Compacted` if reading at `revision` is no longer possible.
    async fn check_not_compacted(&self, revision: Revision) -> Result<()> {
        let opts = GetOptions::new().with_count_only().with_revision(revision);
        match self.kv.clone().get(self.prefix.to_vec(), Some(opts)).await {
            Ok(_) => Ok(()),
            Err(e) if is_compacted(&e) => Err(StoreError::Compacted { requested: revision }),
            Err(e) if is_future(&e) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }
}

fn grpc_message(e: &etcd_client::Error) -> Option<&str> {
    match e {
        etcd_client::Error::GRpcStatus(s) => Some(s.message()),
        _ => None,
    }
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    grpc_message(e).is_some_and(|m| m.contains("required revision has been compacted"))
}

fn is_future(e: &etcd_client::Error) -> bool {
    grpc_message(e).is_some_and(|m| m.contains("future revision"))
}

/// Maps an etcd client error to a store error.
fn map_err(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    match &e {
        E::GRpcStatus(s) => {
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
                    _ => StoreError::Backend(format!("etcd: {msg}")),
                }
            }
        }
        E::TransportError(_) | E::IoError(_) | E::EndpointError(_) => StoreError::Unavailable(format!("etcd: {e}")),
        _ => StoreError::Backend(format!("etcd: {e}")),
    }
}

impl Store for EtcdStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        Box::pin(async move {
            let resp = self.kv.clone().get(self.full(key), None).await.map_err(map_err)?;
            Ok(resp.kvs().first().map(|kv| self.convert(kv)))
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
            let mut get = GetOptions::new().with_limit(opts.limit as i64).with_revision(opts.revision.max(0));
            get = match prefix_end(&self.full(prefix)) {
                Some(end) => get.with_range(end),
                None => get.with_from_key(),
            };
            let resp = match self.kv.clone().get(start, Some(get)).await {
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
                if opts.revision > 0 { opts.revision } else { resp.header().map(|h| h.revision()).unwrap_or_default() };
            Ok(ListResult { kvs: resp.kvs().iter().map(|kv| self.convert(kv)).collect(), revision, more: resp.more() })
        })
    }

    fn create<'a>(&'a self, key: &'a [u8], value: Bytes, ttl: Option<Duration>) -> BoxFuture<'a, Result<Revision>> {
        Box::pin(async move {
            let k = self.full(key);
            let put = TxnOp::put(k.clone(), value.to_vec(), self.put_options(ttl).await?);
            let cmp = Compare::create_revision(k.clone(), CompareOp::Equal, 0);
            let (ok, rev, responses) = self.guarded(k, cmp, put).await?;
            if ok {
                return Ok(rev);
            }
            let revision = self.read_back(&responses).map(|kv| kv.mod_revision).unwrap_or(rev);
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
            let put = TxnOp::put(k.clone(), value.to_vec(), self.put_options(ttl).await?);
            let cmp = Compare::mod_revision(k.clone(), CompareOp::Equal, expected);
            let (ok, rev, responses) = self.guarded(k, cmp, put).await?;
            if ok {
                return Ok(rev);
            }
            match self.read_back(&responses) {
                Some(current) => Err(StoreError::Conflict { current: Box::new(current) }),
                None => Err(StoreError::NotFound),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a [u8], expected: Option<Revision>) -> BoxFuture<'a, Result<(Revision, KeyValue)>> {
        Box::pin(async move {
            let k = self.full(key);
            let del = TxnOp::delete(k.clone(), Some(DeleteOptions::new().with_prev_key()));
            let cmp = match expected {
                Some(rev) => Compare::mod_revision(k.clone(), CompareOp::Equal, rev),
                None => Compare::create_revision(k.clone(), CompareOp::Greater, 0),
            };
            let (ok, rev, responses) = self.guarded(k, cmp, del).await?;
            if ok {
                let prev = responses.iter().find_map(|r| match r {
                    TxnOpResponse::Delete(d) => d.prev_kvs().first().map(|kv| self.convert(kv)),
                    _ => None,
                });
                // The compare proved the key existed; an empty answer means it vanished in
                // between, which etcd's serializable transactions rule out.
                return prev.map(|p| (rev, p)).ok_or(StoreError::NotFound);
            }
            match self.read_back(&responses) {
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
            let mut opts = WatchOptions::new().with_prev_key().with_start_revision(from.max(0));
            opts = match prefix_end(&full) {
                Some(end) => opts.with_range(end),
                None => opts.with_from_key(),
            };
            let stream = self.watch.clone().watch(full, Some(opts)).await.map_err(map_err)?;
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
            let opts = GetOptions::new().with_count_only();
            let resp = self.kv.clone().get(self.prefix.to_vec(), Some(opts)).await.map_err(map_err)?;
            Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
        })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let opts = CompactionOptions::new().with_physical();
            match self.kv.clone().compact(revision, Some(opts)).await {
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
    stream: etcd_client::WatchStream,
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
            if resp.canceled() {
                self.done = true;
                return Some(Err(if resp.compact_revision() > 0 {
                    StoreError::Compacted { requested: self.next }
                } else {
                    StoreError::Backend(format!("etcd canceled the watch: {}", resp.cancel_reason()))
                }));
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let prev = ev.prev_kv().map(|p| self.store.convert(p));
                self.pending.push_back(match ev.event_type() {
                    EventType::Put => Event::Put { kv: self.store.convert(kv), prev },
                    EventType::Delete => {
                        Event::Delete { key: self.store.strip(kv.key()), revision: kv.mod_revision(), prev }
                    }
                });
            }
        }
    }
}
