//! Per-cluster fairness: a cap on requests in flight and a token-bucket rate, so one noisy
//! tenant cannot starve the others sharing a manager. Beyond them a request gets kube's 429
//! (`TooManyRequests`, `Retry-After: 1`). Watches and other long-running requests hold no
//! in-flight slot, as in kube-apiserver's max-in-flight filter.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Limits of one cluster.
#[derive(Debug)]
pub struct Limits {
    max_in_flight: usize,
    in_flight: AtomicUsize,
    rate: f64,
    burst: f64,
    bucket: Mutex<(f64, Instant)>,
}

/// A held in-flight slot, released on drop.
pub struct Slot<'a>(&'a Limits);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limits {
    /// At most `max_in_flight` concurrent requests and `rate` requests per second on average
    /// (bursts of `burst`). Zero disables a limit.
    pub fn new(max_in_flight: usize, rate: f64, burst: f64) -> Limits {
        Limits {
            max_in_flight,
            in_flight: AtomicUsize::new(0),
            rate,
            burst: burst.max(1.0),
            bucket: Mutex::new((burst.max(1.0), Instant::now())),
        }
    }

    /// Admits one request, or `None` when it must be refused.
    pub fn admit(&self, long_running: bool) -> Option<Option<Slot<'_>>> {
        if self.rate > 0.0 {
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(b.1).as_secs_f64() * self.rate;
            b.0 = (b.0 + refill).min(self.burst);
            b.1 = now;
            if b.0 < 1.0 {
                return None;
            }
            b.0 -= 1.0;
        }
        if long_running || self.max_in_flight == 0 {
            return Some(None);
        }
        let prev = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Some(Slot(self)))
    }
}

#[cfg(test)]
mod tests {
    use super::Limits;

    #[test]
    fn in_flight_and_rate() {
        let l = Limits::new(2, 0.0, 0.0);
        let a = l.admit(false).unwrap();
        let _b = l.admit(false).unwrap();
        assert!(l.admit(false).is_none(), "third concurrent request refused");
        assert!(l.admit(true).is_some(), "watches hold no slot");
        drop(a);
        assert!(l.admit(false).is_some(), "a released slot is reusable");
        let r = Limits::new(0, 1.0, 3.0);
        assert!((0..3).all(|_| r.admit(false).is_some()), "a burst of three");
        assert!(r.admit(false).is_none(), "then the rate applies");
    }
}
