//! Slot maps: entries addressed by a small copyable index, reused after removal.

/// Index of a participant in the core. Every reference to a slot is removed with the
/// participant (routes, subscriptions, rooms), so a reused slot never receives another
/// participant's traffic; the deadline heap, which forgets lazily, tells occupants apart by a
/// sequence number instead (see [`crate::timers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Slot(u32);

/// Index of a subscription (one subscriber's copy of one published track). Like a [`Slot`],
/// removed from every index with the subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SubId(u32);

/// A key of a [`Slab`].
pub(crate) trait SlabKey: Copy {
    fn from_index(index: u32) -> Self;
    fn index(self) -> usize;
}

impl SlabKey for Slot {
    fn from_index(index: u32) -> Self {
        Slot(index)
    }
    fn index(self) -> usize {
        self.0 as usize
    }
}

impl SlabKey for SubId {
    fn from_index(index: u32) -> Self {
        SubId(index)
    }
    fn index(self) -> usize {
        self.0 as usize
    }
}

/// Entries in a `Vec`, each addressed by its index; freed indexes are reused last-in first-out.
/// Lookups are one bounds check, iteration order is the index order (deterministic).
pub(crate) struct Slab<K, T> {
    entries: Vec<Option<T>>,
    free: Vec<K>,
}

impl<K: SlabKey, T> Slab<K, T> {
    pub(crate) fn new() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Stores `value` in a free entry and returns its key.
    pub(crate) fn insert(&mut self, value: T) -> K {
        match self.free.pop() {
            Some(k) => {
                self.entries[k.index()] = Some(value);
                k
            }
            None => {
                let index = u32::try_from(self.entries.len())
                    .expect("fewer than 2^32 entries: each costs far more than 4 GB together");
                self.entries.push(Some(value));
                K::from_index(index)
            }
        }
    }

    /// Takes the entry out and frees its key.
    pub(crate) fn remove(&mut self, key: K) -> Option<T> {
        let value = self.entries.get_mut(key.index())?.take()?;
        self.free.push(key);
        Some(value)
    }

    pub(crate) fn get(&self, key: K) -> Option<&T> {
        self.entries.get(key.index())?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, key: K) -> Option<&mut T> {
        self.entries.get_mut(key.index())?.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_reused_after_removal() {
        let mut s: Slab<Slot, &str> = Slab::new();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None, "removed once");
        assert_eq!(s.get(a), None);
        let c = s.insert("c");
        assert_eq!(c, a, "the freed key is reused");
        assert_eq!(s.get(c), Some(&"c"));
        assert_eq!(s.get(b), Some(&"b"));
    }
}
