//! Which reconciles are full ones: see [`Applied`].

use kube::ResourceExt;

use super::{Context, REQUESTED_STATE};
use crate::tenant::Tenant;
use std::time::Duration;

/// A tenant's last full reconcile: the Tenant it saw (generation, `vt sleep`/`vt wake`
/// request, uid) and when. A reconcile that finds the same Tenant again (the event of its own
/// status write, the periodic refresh) only refreshes the status's counts; host objects are
/// re-applied (drift corrected) at most every [`FULL_EVERY`] — with 10,000 tenants, re-applying
/// every tenant's host objects every five minutes would be the manager's main work.
#[derive(Clone, PartialEq)]
pub(super) struct Applied {
    generation: Option<i64>,
    requested: Option<String>,
    uid: Option<String>,
    at: std::time::Instant,
}

/// How often a tenant's host objects are re-applied when nothing changed.
const FULL_EVERY: Duration = Duration::from_secs(30 * 60);

impl Context {
    fn seen(t: &Tenant) -> Applied {
        Applied {
            generation: t.metadata.generation,
            requested: t.annotations().get(REQUESTED_STATE).cloned(),
            uid: t.metadata.uid.clone(),
            at: std::time::Instant::now(),
        }
    }

    /// Whether `t` is as its last full reconcile left it (recently enough).
    pub(super) fn unchanged(&self, t: &Tenant) -> bool {
        let now = Self::seen(t);
        self.applied.lock().unwrap_or_else(|e| e.into_inner()).get(&t.name_any()).is_some_and(|a| {
            (a.generation, &a.requested, &a.uid) == (now.generation, &now.requested, &now.uid)
                && a.at.elapsed() < FULL_EVERY
        })
    }

    /// Counts `t` as fully reconciled until `after` from now.
    pub(super) fn applied_until(&self, t: &Tenant, after: Duration) {
        let mut seen = Self::seen(t);
        seen.at = seen.at.checked_sub(FULL_EVERY.saturating_sub(after)).unwrap_or(seen.at);
        self.applied.lock().unwrap_or_else(|e| e.into_inner()).insert(t.name_any(), seen);
    }

    pub(super) fn applied(&self, t: &Tenant) {
        self.applied.lock().unwrap_or_else(|e| e.into_inner()).insert(t.name_any(), Self::seen(t));
    }

    /// The next reconcile of `tenant` is a full one.
    pub(super) fn forget_applied(&self, tenant: &str) {
        self.applied.lock().unwrap_or_else(|e| e.into_inner()).remove(tenant);
    }
}
