//! The memory backend: this instance's answers, each until its TTL, at most `max_entries` of
//! them (the least recently used goes first).

use super::entry::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub type Key = [u8; 32];

struct Slot {
    entry: Arc<Entry>,
    expires: Instant,
    /// Its place in `order` (the tick of its last use).
    tick: u64,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<Key, Slot>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, Key>,
    tick: u64,
}

impl Inner {
    fn remove(&mut self, key: &Key) {
        if let Some(s) = self.slots.remove(key) {
            self.order.remove(&s.tick);
        }
    }

    fn touch(&mut self, key: &Key) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(s) = self.slots.get_mut(key) {
            self.order.remove(&s.tick);
            s.tick = tick;
            self.order.insert(tick, *key);
        }
    }
}

/// An LRU map of answers with a deadline each.
#[derive(Default)]
pub struct Memory {
    inner: Mutex<Inner>,
}

impl Memory {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the maps consistent (every change is one
        // insert/remove pair): keep serving from them.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer under `key`, unless it expired (then it is dropped).
    pub fn get(&self, key: &Key, now: Instant) -> Option<Arc<Entry>> {
        let mut inner = self.lock();
        let expired = inner.slots.get(key).map(|s| s.expires <= now)?;
        if expired {
            inner.remove(key);
            return None;
        }
        inner.touch(key);
        inner.slots.get(key).map(|s| Arc::clone(&s.entry))
    }

    /// Keeps `entry` until `expires`, then evicts the least recently used past `max_entries`.
    pub fn put(&self, key: Key, entry: Arc<Entry>, expires: Instant, max_entries: usize) {
        let mut inner = self.lock();
        inner.remove(&key);
        inner.tick += 1;
        let tick = inner.tick;
        inner.slots.insert(
            key,
            Slot {
                entry,
                expires,
                tick,
            },
        );
        inner.order.insert(tick, key);
        while inner.slots.len() > max_entries.max(1) {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            inner.slots.remove(&oldest);
        }
    }

    /// Answers held now (expired ones included until they are next looked up or evicted).
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Drops every answer (the cache was switched off, or its backend changed).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.slots.clear();
        inner.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(text: &str) -> Arc<Entry> {
        let mut e = Entry {
            model: "m".into(),
            answer: Default::default(),
        };
        e.answer.text = text.into();
        Arc::new(e)
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let m = Memory::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        m.put([1; 32], entry("a"), later, 2);
        m.put([2; 32], entry("b"), later, 2);
        assert!(
            m.get(&[1; 32], now).is_some(),
            "a used again: b is now the oldest"
        );
        m.put([3; 32], entry("c"), later, 2);
        assert_eq!(m.len(), 2);
        assert!(m.get(&[2; 32], now).is_none());
        assert!(m.get(&[1; 32], now).is_some());
        assert!(m.get(&[3; 32], now).is_some());
    }

    #[test]
    fn expires() {
        let m = Memory::default();
        let now = Instant::now();
        m.put([1; 32], entry("a"), now + Duration::from_secs(1), 10);
        assert!(m.get(&[1; 32], now).is_some());
        assert!(m.get(&[1; 32], now + Duration::from_secs(2)).is_none());
        assert_eq!(m.len(), 0);
    }
}
