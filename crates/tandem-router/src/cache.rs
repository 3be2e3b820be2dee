//! The home-region lookup cache: subject → home region, each entry valid for
//! a TTL, at most `capacity` entries (expired ones are swept when full, and if
//! that is not enough the oldest half goes), so memory is bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct HomeCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, (String, Instant)>>,
}

impl HomeCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        assert!(capacity > 0);
        HomeCache { ttl, capacity, entries: Mutex::new(HashMap::new()) }
    }

    pub fn get(&self, subject: &str, now: Instant) -> Option<String> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().expect("cache lock");
        entries
            .get(subject)
            .filter(|(_, at)| now.duration_since(*at) < self.ttl)
            .map(|(h, _)| h.clone())
    }

    pub fn put(&self, subject: &str, home: &str, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= self.capacity && !entries.contains_key(subject) {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| now.duration_since(*at) < ttl);
            if entries.len() >= self.capacity {
                let mut ages: Vec<Instant> = entries.values().map(|(_, at)| *at).collect();
                ages.sort();
                let cutoff = ages[ages.len() / 2];
                entries.retain(|_, (_, at)| *at > cutoff);
            }
        }
        entries.insert(subject.to_owned(), (home.to_owned(), now));
    }

    /// Forget a subject (after a write was misdirected because it moved).
    pub fn forget(&self, subject: &str) {
        self.entries.lock().expect("cache lock").remove(subject);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_stays_bounded() {
        let c = HomeCache::new(Duration::from_secs(5), 10);
        let t0 = Instant::now();
        c.put("alice", "eu-west", t0);
        assert_eq!(c.get("alice", t0 + Duration::from_secs(4)).as_deref(), Some("eu-west"));
        assert_eq!(c.get("alice", t0 + Duration::from_secs(5)), None);
        for i in 0..1000 {
            c.put(&format!("s{i}"), "us-east", t0 + Duration::from_millis(i));
            assert!(c.len() <= 10);
        }
        let off = HomeCache::new(Duration::ZERO, 10);
        off.put("a", "b", t0);
        assert_eq!(off.get("a", t0), None);
    }
}
