//! When each of many timers fires next, kept in order: the earliest is
//! found without looking at the others, and the due ones are taken without
//! visiting those that are not (a scan of every call or transaction would
//! make each message's work grow with the number of calls).

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

#[derive(Debug)]
pub(crate) struct Deadlines<K> {
    order: BTreeSet<(Instant, K)>,
    at: HashMap<K, Instant>,
}

impl<K: Copy + Ord + Hash> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines {
            order: BTreeSet::new(),
            at: HashMap::new(),
        }
    }
}

impl<K: Copy + Ord + Hash> Deadlines<K> {
    /// Sets (or with `None` clears) `key`'s deadline.
    pub(crate) fn set(&mut self, key: K, when: Option<Instant>) {
        if let Some(old) = self.at.remove(&key) {
            self.order.remove(&(old, key));
        }
        if let Some(w) = when {
            self.order.insert((w, key));
            self.at.insert(key, w);
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.order.first().map(|(w, _)| *w)
    }

    /// Takes the keys due at `now` (their deadlines are cleared), earliest first.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<K> {
        let mut due = Vec::new();
        while let Some(&(w, k)) = self.order.first() {
            if w > now {
                break;
            }
            self.order.pop_first();
            self.at.remove(&k);
            due.push(k);
        }
        due
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

// `unwrap`/`expect` in these tests are assertions.
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deadlines_come_out_in_order_and_a_reset_replaces_the_old_one() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut d = Deadlines::default();
        d.set(1u32, Some(at(30)));
        d.set(2, Some(at(10)));
        d.set(3, Some(at(20)));
        d.set(1, Some(at(5)));
        d.set(3, None);
        assert_eq!(d.next(), Some(at(5)));
        assert_eq!(d.take_due(at(10)), vec![1, 2]);
        assert!(d.is_empty());
        assert_eq!(d.next(), None);
    }
}
