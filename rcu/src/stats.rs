//! Statistics: counters kept by writers and the reclamation thread, never by readers.

use crate::reclaim::Reclaimer;
use crate::sync::{AtomicU64, Ordering};
use std::time::Duration;

/// A snapshot of a domain's statistics, from [`Rcu::stats`](crate::Rcu::stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcuStats {
    /// Grace periods completed.
    pub grace_periods: u64,
    /// `synchronize` calls satisfied by another caller's grace period.
    pub shared_grace_periods: u64,
    /// The longest grace period so far.
    pub longest_grace_period: Duration,
    /// Grace periods that exceeded the stall timeout (each reported once).
    pub stalls: u64,
    /// Callbacks queued with `call_rcu` / `defer_drop` so far.
    pub callbacks_queued: u64,
    /// Callbacks run so far.
    pub callbacks_run: u64,
    /// Callbacks queued and not yet run.
    pub callbacks_pending: u64,
    /// The largest number of callbacks ever pending at once.
    pub max_pending: u64,
    /// Batches run by the reclamation thread.
    pub batches: u64,
    /// The largest batch.
    pub max_batch: u64,
    /// Times a `call_rcu` caller waited because the high-water mark was exceeded.
    pub throttled: u64,
    /// Times the high-water mark was exceeded by a caller that could not wait (a reader).
    pub over_high_water: u64,
    /// Callbacks that panicked (the panic is caught, logged and counted).
    pub callback_panics: u64,
    /// Panics the reclamation thread caught outside a callback (in the [`CallbackLock`] or a
    /// grace period); it retried the batch each time instead of dying.
    ///
    /// [`CallbackLock`]: crate::CallbackLock
    pub reclaimer_failures: u64,
}

impl RcuStats {
    /// Mean callbacks per batch.
    pub fn mean_batch(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.callbacks_run as f64 / self.batches as f64
        }
    }
}

#[derive(Default)]
pub(crate) struct StatCounters {
    pub(crate) grace_periods: AtomicU64,
    pub(crate) shared_grace_periods: AtomicU64,
    pub(crate) longest_gp_ns: AtomicU64,
    pub(crate) stalls: AtomicU64,
    pub(crate) callbacks_run: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) max_batch: AtomicU64,
    pub(crate) max_pending: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) over_high_water: AtomicU64,
    pub(crate) callback_panics: AtomicU64,
    pub(crate) reclaimer_failures: AtomicU64,
}

impl StatCounters {
    pub(crate) fn record_grace_period(&self, took: Duration) {
        self.grace_periods.fetch_add(1, Ordering::Relaxed);
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        if ns > self.longest_gp_ns.load(Ordering::Relaxed) {
            self.longest_gp_ns.fetch_max(ns, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self, reclaim: &Reclaimer) -> RcuStats {
        let pending = reclaim.pending() as u64;
        let run = self.callbacks_run.load(Ordering::Relaxed);
        RcuStats {
            grace_periods: self.grace_periods.load(Ordering::Relaxed),
            shared_grace_periods: self.shared_grace_periods.load(Ordering::Relaxed),
            longest_grace_period: Duration::from_nanos(self.longest_gp_ns.load(Ordering::Relaxed)),
            stalls: self.stalls.load(Ordering::Relaxed),
            callbacks_queued: run + pending,
            callbacks_run: run,
            callbacks_pending: pending,
            max_pending: self.max_pending.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            max_batch: self.max_batch.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            over_high_water: self.over_high_water.load(Ordering::Relaxed),
            callback_panics: self.callback_panics.load(Ordering::Relaxed),
            reclaimer_failures: self.reclaimer_failures.load(Ordering::Relaxed),
        }
    }
}
