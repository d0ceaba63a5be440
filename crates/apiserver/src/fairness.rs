//! Per-cluster bounds and fair sharing, so one tenant cannot take what the others need from a
//! shared manager (kube-apiserver's max-in-flight filter and API Priority and Fairness are the
//! models):
//!
//! * a token-bucket **rate** and a cap on **requests in flight** (queued or executing);
//! * caps on **open watches** and **connections**;
//! * **fair queuing** across clusters: requests execute on a fixed number of seats shared by
//!   every cluster of the process ([`FairQueue`]); when all are taken, each cluster waits in
//!   its own queue and freed seats go to the queues in turn, so a cluster that floods waits
//!   behind itself, not in front of a quiet neighbour.
//!
//! Beyond any bound a request gets kube's 429 (`TooManyRequests`, `Retry-After: 1`). Watches
//! and other long-running requests take no seat (they are counted against the watch cap).
//!
//! A seat stands for CPU: a request gives its seat back while it waits on something else — a
//! store commit ([`SeatedStore`]), a webhook call ([`waiting`]) — and queues for one again
//! afterwards, so a few seats (one per CPU by default) keep a flooding tenant from crowding
//! the processors without letting slow webhooks or disks hold everybody's seats.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The bounds of one cluster (zero disables a bound).
#[derive(Clone, Debug, Default)]
pub struct Bounds {
    /// Requests queued or executing at once.
    pub max_in_flight: usize,
    /// Requests per second, on average.
    pub rate: f64,
    /// Requests above the rate in a burst.
    pub burst: f64,
    /// Open watches (and other long-running requests).
    pub max_watches: usize,
    /// Open connections.
    pub max_connections: usize,
}

/// Limits of one cluster.
pub struct Limits {
    bounds: Bounds,
    in_flight: AtomicUsize,
    watches: AtomicUsize,
    connections: AtomicUsize,
    bucket: Mutex<(f64, Instant)>,
    fair: Option<(Arc<FairQueue>, u64)>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").field("bounds", &self.bounds).finish_non_exhaustive()
    }
}

/// What an admitted request holds until it finishes (released on drop).
pub enum Admission<'a> {
    /// Nothing held (no bounds apply).
    Free,
    /// An in-flight slot and, with fair queuing, a seat.
    Request(Slot<'a>, Option<Seat>),
    /// A watch slot (owned: the watch outlives the handler).
    Watch(WatchSlot),
}

/// A held in-flight slot.
pub struct Slot<'a>(&'a Limits);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A held watch slot.
pub struct WatchSlot(Arc<Limits>);

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.0.watches.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A held connection slot.
pub struct ConnectionSlot(Arc<Limits>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes one unit of `counter` if it stays within `max` (0: unbounded).
fn take(counter: &AtomicUsize, max: usize) -> bool {
    let prev = counter.fetch_add(1, Ordering::AcqRel);
    if max > 0 && prev >= max {
        counter.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}

impl Limits {
    /// Limits with `bounds`; requests wait for seats of `fair`, if given.
    pub fn new(bounds: Bounds, fair: Option<Arc<FairQueue>>) -> Limits {
        let burst = bounds.burst.max(1.0);
        Limits {
            in_flight: AtomicUsize::new(0),
            watches: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            bucket: Mutex::new((burst, Instant::now())),
            fair: fair.map(|f| {
                let flow = f.flow();
                (f, flow)
            }),
            bounds: Bounds { burst, ..bounds },
        }
    }

    /// The bounds.
    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    /// Open watches now.
    pub fn watches(&self) -> usize {
        self.watches.load(Ordering::Acquire)
    }

    /// Open connections now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    fn rate_ok(&self) -> bool {
        if self.bounds.rate <= 0.0 {
            return true;
        }
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(b.1).as_secs_f64() * self.bounds.rate;
        b.0 = (b.0 + refill).min(self.bounds.burst);
        b.1 = now;
        if b.0 < 1.0 {
            return false;
        }
        b.0 -= 1.0;
        true
    }

    /// Admits one request (waiting for a fair seat if all are taken), or `None` when it must
    /// be refused with 429.
    pub async fn admit(self: &Arc<Self>, long_running: bool) -> Option<Admission<'_>> {
        if !self.rate_ok() {
            return None;
        }
        if long_running {
            return take(&self.watches, self.bounds.max_watches).then(|| Admission::Watch(WatchSlot(self.clone())));
        }
        if !take(&self.in_flight, self.bounds.max_in_flight) {
            return None;
        }
        let slot = Slot(self);
        let seat = match &self.fair {
            Some((fq, flow)) => Some(fq.acquire(*flow).await?),
            None => None,
        };
        Some(Admission::Request(slot, seat))
    }

    /// Takes a connection slot, or `None` beyond the cap.
    pub fn connection(self: &Arc<Self>) -> Option<ConnectionSlot> {
        take(&self.connections, self.bounds.max_connections).then(|| ConnectionSlot(self.clone()))
    }
}

impl Drop for Limits {
    fn drop(&mut self) {
        if let Some((fq, flow)) = &self.fair {
            fq.forget(*flow);
        }
    }
}

/// Seats shared by every cluster of a process, handed out fairly: while seats are free a
/// request takes one at once; when none is, it waits in its cluster's queue (at most
/// `queue_length` waiting, at most `max_wait` long — then 429), and each freed seat goes to
/// the next cluster in turn that has a request waiting.
pub struct FairQueue {
    seats: usize,
    queue_length: usize,
    max_wait: Duration,
    next_flow: AtomicU64,
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    busy: usize,
    /// Waiters per flow.
    queues: HashMap<u64, VecDeque<oneshot::Sender<()>>>,
    /// Flows with waiters, in the order they are served.
    turn: VecDeque<u64>,
}

/// A held seat; dropping it hands the seat to the next waiter.
pub struct Seat(Arc<FairQueue>);

/// The seat a request in progress holds (task-local), so waits can give it back.
#[derive(Clone)]
pub struct SeatCell {
    queue: Arc<FairQueue>,
    flow: u64,
    seat: Arc<Mutex<Option<Seat>>>,
}

tokio::task_local! {
    static SEAT: SeatCell;
}

impl Limits {
    /// Runs `f` (a request's handling) with `seat` known to [`waiting`].
    pub async fn seated<F: Future>(&self, seat: Option<Seat>, f: F) -> F::Output {
        match (seat, &self.fair) {
            (Some(seat), Some((queue, flow))) => {
                let cell = SeatCell { queue: queue.clone(), flow: *flow, seat: Arc::new(Mutex::new(Some(seat))) };
                SEAT.scope(cell, f).await
            }
            _ => f.await,
        }
    }
}

/// Awaits `f` without holding the current request's seat (a store commit, a webhook call),
/// then takes a seat again in the request's turn. Outside a seated request, just awaits `f`.
pub async fn waiting<F: Future>(f: F) -> F::Output {
    let cell = SEAT.try_with(Clone::clone).ok();
    let held = cell.as_ref().and_then(|c| c.seat.lock().unwrap_or_else(|p| p.into_inner()).take());
    if held.is_none() {
        return f.await;
    }
    drop(held);
    let out = f.await;
    if let Some(c) = cell {
        // A request already under way is not refused half-done: if no seat comes in time it
        // finishes without one.
        let again = c.queue.acquire(c.flow).await;
        *c.seat.lock().unwrap_or_else(|p| p.into_inner()) = again;
    }
    out
}

/// A store whose writes are waits that give the request's seat back ([`waiting`]).
pub struct SeatedStore(pub Arc<dyn vt_store::Store>);

impl vt_store::Store for SeatedStore {
    fn get<'a>(
        &'a self,
        key: &'a [u8],
    ) -> futures::future::BoxFuture<'a, vt_store::Result<Option<vt_store::KeyValue>>> {
        self.0.get(key)
    }

    fn list<'a>(
        &'a self,
        prefix: &'a [u8],
        opts: vt_store::ListOptions,
    ) -> futures::future::BoxFuture<'a, vt_store::Result<vt_store::ListResult>> {
        self.0.list(prefix, opts)
    }

    fn create<'a>(
        &'a self,
        key: &'a [u8],
        value: bytes::Bytes,
        ttl: Option<Duration>,
    ) -> futures::future::BoxFuture<'a, vt_store::Result<vt_store::Revision>> {
        Box::pin(waiting(self.0.create(key, value, ttl)))
    }

    fn update<'a>(
        &'a self,
        key: &'a [u8],
        value: bytes::Bytes,
        expected: vt_store::Revision,
        ttl: Option<Duration>,
    ) -> futures::future::BoxFuture<'a, vt_store::Result<vt_store::Revision>> {
        Box::pin(waiting(self.0.update(key, value, expected, ttl)))
    }

    fn delete<'a>(
        &'a self,
        key: &'a [u8],
        expected: Option<vt_store::Revision>,
    ) -> futures::future::BoxFuture<'a, vt_store::Result<(vt_store::Revision, vt_store::KeyValue)>> {
        Box::pin(waiting(self.0.delete(key, expected)))
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a [u8],
        from: vt_store::Revision,
    ) -> futures::future::BoxFuture<'a, vt_store::Result<vt_store::WatchStream>> {
        self.0.watch(prefix, from)
    }

    fn current_revision(&self) -> futures::future::BoxFuture<'_, vt_store::Result<vt_store::Revision>> {
        self.0.current_revision()
    }

    fn compact(&self, revision: vt_store::Revision) -> futures::future::BoxFuture<'_, vt_store::Result<()>> {
        self.0.compact(revision)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl FairQueue {
    /// `seats` shared seats; each flow may queue `queue_length` requests for up to `max_wait`.
    pub fn new(seats: usize, queue_length: usize, max_wait: Duration) -> Arc<FairQueue> {
        Arc::new(FairQueue {
            seats: seats.max(1),
            queue_length: queue_length.max(1),
            max_wait,
            next_flow: AtomicU64::new(1),
            state: Mutex::new(QueueState::default()),
        })
    }

    /// The shared seats.
    pub fn seats(&self) -> usize {
        self.seats
    }

    /// Seats taken now.
    pub fn busy(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).busy
    }

    fn flow(&self) -> u64 {
        self.next_flow.fetch_add(1, Ordering::Relaxed)
    }

    fn forget(&self, flow: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.queues.remove(&flow);
        s.turn.retain(|f| *f != flow);
    }

    /// A seat for `flow`, or `None` (its queue is full, or it waited too long).
    async fn acquire(self: &Arc<Self>, flow: u64) -> Option<Seat> {
        let mut rx = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if s.busy < self.seats && s.turn.is_empty() {
                s.busy += 1;
                return Some(Seat(self.clone()));
            }
            let queue = s.queues.entry(flow).or_default();
            queue.retain(|w| !w.is_closed());
            if queue.len() >= self.queue_length {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            queue.push_back(tx);
            if !s.turn.contains(&flow) {
                s.turn.push_back(flow);
            }
            rx
        };
        match tokio::time::timeout(self.max_wait, &mut rx).await {
            Ok(Ok(())) => Some(Seat(self.clone())),
            Ok(Err(_)) => None,
            Err(_) => {
                // Given up; a seat handed over at the last moment is passed on.
                rx.close();
                if rx.try_recv().is_ok() {
                    self.release();
                }
                None
            }
        }
    }

    /// Frees a seat: it goes to the next flow in turn with a live waiter, else back to the pool.
    fn release(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(flow) = s.turn.pop_front() {
            let Some(queue) = s.queues.get_mut(&flow) else { continue };
            let mut handed = false;
            while let Some(waiter) = queue.pop_front() {
                if waiter.send(()).is_ok() {
                    handed = true;
                    break;
                }
            }
            let again = !queue.is_empty();
            if again {
                s.turn.push_back(flow);
            } else {
                s.queues.remove(&flow);
            }
            if handed {
                // The seat passes directly: `busy` is unchanged.
                return;
            }
        }
        s.busy = s.busy.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(max_in_flight: usize, rate: f64, burst: f64) -> Bounds {
        Bounds { max_in_flight, rate, burst, ..Default::default() }
    }

    #[tokio::test]
    async fn in_flight_and_rate() {
        let l = Arc::new(Limits::new(bounds(2, 0.0, 0.0), None));
        let a = l.admit(false).await.unwrap();
        let _b = l.admit(false).await.unwrap();
        assert!(l.admit(false).await.is_none(), "third concurrent request refused");
        drop(a);
        assert!(l.admit(false).await.is_some(), "a released slot is reusable");
        let r = Arc::new(Limits::new(bounds(0, 1.0, 3.0), None));
        for _ in 0..3 {
            assert!(r.admit(false).await.is_some(), "a burst of three");
        }
        assert!(r.admit(false).await.is_none(), "then the rate applies");
    }

    #[tokio::test]
    async fn watches_and_connections_are_capped() {
        let l = Arc::new(Limits::new(Bounds { max_watches: 2, max_connections: 1, ..Default::default() }, None));
        let w1 = l.admit(true).await.unwrap();
        let _w2 = l.admit(true).await.unwrap();
        assert!(l.admit(true).await.is_none(), "third watch refused");
        assert!(l.admit(false).await.is_some(), "ordinary requests are not watches");
        drop(w1);
        assert!(l.admit(true).await.is_some(), "a closed watch frees its slot");
        let c = l.connection().unwrap();
        assert!(l.connection().is_none());
        drop(c);
        assert_eq!(l.connections(), 0);
        assert!(l.connection().is_some());
    }

    /// Freed seats alternate between flows with waiters: a quiet flow's request is served
    /// after at most one more of the noisy flow's.
    #[tokio::test]
    async fn seats_go_to_queues_in_turn() {
        let fq = FairQueue::new(1, 100, Duration::from_secs(10));
        let noisy = Arc::new(Limits::new(Bounds::default(), Some(fq.clone())));
        let quiet = Arc::new(Limits::new(Bounds::default(), Some(fq.clone())));
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = noisy.admit(false).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (n, o) = (noisy.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _a = n.admit(false).await.unwrap();
                o.lock().unwrap().push(format!("noisy{i}"));
            }));
            tokio::task::yield_now().await;
        }
        let (q, o) = (quiet.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let _a = q.admit(false).await.unwrap();
            o.lock().unwrap().push("quiet".to_string());
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let pos = order.iter().position(|o| o == "quiet").unwrap();
        assert!(pos <= 1, "the quiet flow waited behind the noisy queue: {order:?}");
        assert_eq!(fq.busy(), 0, "every seat came back");
    }

    #[tokio::test]
    async fn full_queues_and_long_waits_are_refused() {
        let fq = FairQueue::new(1, 2, Duration::from_millis(50));
        let l = Arc::new(Limits::new(Bounds::default(), Some(fq.clone())));
        let held = l.admit(false).await.unwrap();
        let (a, b) = (l.clone(), l.clone());
        let w1 = tokio::spawn(async move { a.admit(false).await.is_some() });
        let w2 = tokio::spawn(async move { b.admit(false).await.is_some() });
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(l.admit(false).await.is_none(), "the flow's queue is full");
        assert!(!w1.await.unwrap() && !w2.await.unwrap(), "waited past max_wait");
        drop(held);
        assert_eq!(fq.busy(), 0);
        assert!(l.admit(false).await.is_some());
    }
}
