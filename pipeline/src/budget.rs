//! Process-wide memory budgets, in the manner of the Collector's memory limiter: bytes held by
//! one kind of thing (request bodies in flight, capture buffers, session documents) are counted
//! against a documented limit, and new work past it is refused with a retryable answer instead
//! of growing until the kernel kills the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// One budget: a limit and what is held against it.
#[derive(Debug)]
pub struct Budget {
    what: &'static str,
    flag: &'static str,
    limit: usize,
    used: AtomicUsize,
    refusals: AtomicU64,
}

/// A budget was exhausted: retry later, when requests finish or sessions close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the runtime's budget for {what} is exhausted ({used} of {limit} bytes in use, {wanted} more \
     asked); retry later, or raise {flag}"
)]
pub struct OverBudget {
    /// What the budget counts.
    pub what: &'static str,
    /// The flag that sets it.
    pub flag: &'static str,
    /// Its limit in bytes.
    pub limit: usize,
    /// Bytes in use when the request came.
    pub used: usize,
    /// Bytes asked for.
    pub wanted: usize,
}

impl Budget {
    /// A budget of `limit` bytes for `what`, set by `flag`.
    pub fn new(what: &'static str, flag: &'static str, limit: usize) -> Arc<Self> {
        Arc::new(Self {
            what,
            flag,
            limit,
            used: AtomicUsize::new(0),
            refusals: AtomicU64::new(0),
        })
    }

    /// What the budget counts, for metrics (`capture buffers`, …).
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// Requests refused since start.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Nothing held yet, to grow with [`Held::grow`].
    pub fn empty(self: &Arc<Self>) -> Held {
        Held {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// Holds `bytes` more, or refuses without holding anything.
    pub fn acquire(self: &Arc<Self>, bytes: usize) -> Result<Held, OverBudget> {
        let mut held = self.empty();
        held.grow(bytes)?;
        Ok(held)
    }

    fn take(&self, bytes: usize) -> Result<(), OverBudget> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.saturating_add(bytes);
            if next > self.limit {
                self.refusals.fetch_add(1, Ordering::Relaxed);
                return Err(OverBudget {
                    what: self.what,
                    flag: self.flag,
                    limit: self.limit,
                    used,
                    wanted: bytes,
                });
            }
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(actual) => used = actual,
            }
        }
    }
}

/// Bytes held against a budget, given back when dropped.
#[derive(Debug)]
pub struct Held {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Held {
    /// Holds `bytes` more, or refuses and holds what it held.
    pub fn grow(&mut self, bytes: usize) -> Result<(), OverBudget> {
        self.budget.take(bytes)?;
        self.bytes += bytes;
        Ok(())
    }

    /// Moves `bytes` of what this holds into `other` (the same budget's).
    pub fn give(&mut self, bytes: usize, other: &mut Held) {
        debug_assert!(Arc::ptr_eq(&self.budget, &other.budget));
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        other.bytes += bytes;
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_bounded_and_given_back() {
        let budget = Budget::new("things", "--max-things", 100);
        let mut a = budget.acquire(60).unwrap();
        let refused = budget.acquire(50).unwrap_err();
        assert_eq!(budget.refusals(), 1);
        assert_eq!((refused.used, refused.wanted, refused.limit), (60, 50, 100));
        assert!(refused.to_string().contains("--max-things"), "{refused}");
        let mut b = budget.empty();
        a.give(20, &mut b);
        assert_eq!((a.bytes(), b.bytes(), budget.used()), (40, 20, 60));
        drop(a);
        assert_eq!(budget.used(), 20);
        b.grow(80).unwrap();
        assert!(b.grow(1).is_err());
        assert_eq!(b.bytes(), 100);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn concurrent_holders_never_exceed_the_limit() {
        let budget = Budget::new("things", "--max-things", 1000);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    let mut granted = 0;
                    for _ in 0..10_000 {
                        if let Ok(held) = budget.acquire(7) {
                            assert!(budget.used() <= 1000);
                            granted += 1;
                            drop(held);
                        }
                    }
                    granted
                })
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(granted > 0);
        assert_eq!(budget.used(), 0);
    }
}
