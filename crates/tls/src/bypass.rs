//! Sessions not to intercept for a while.
//!
//! A client that pins certificates rejects every forgery; retrying the interception would
//! break it forever. After such a rejection (or a server asking for a client certificate)
//! the (client, server, SNI) triple goes here, with an expiry so that one transient error
//! does not exempt a site for good. Time comes in as arguments.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Default time an entry stays.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Default maximum number of entries.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// What is bypassed: this client talking to this server under this name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BypassKey {
    pub client: IpAddr,
    pub server: IpAddr,
    pub sni: Option<String>,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BypassStats {
    pub inserts: u64,
    pub hits: u64,
    pub misses: u64,
    pub expired: u64,
    pub evicted: u64,
}

/// A bounded, expiring set of [`BypassKey`]s.
#[derive(Debug)]
pub struct BypassList {
    ttl: Duration,
    capacity: usize,
    /// key -> (expiry, insertion sequence)
    entries: HashMap<BypassKey, (Instant, u64)>,
    /// (expiry, sequence) -> key. All entries share one TTL, so expiry order is insertion
    /// order: the first entry is both the oldest and the next to expire.
    order: BTreeMap<(Instant, u64), BypassKey>,
    seq: u64,
    stats: BypassStats,
}

impl Default for BypassList {
    fn default() -> Self {
        Self::new(DEFAULT_TTL, DEFAULT_CAPACITY)
    }
}

impl BypassList {
    /// Entries live `ttl`; at most `capacity` (at least 1) are kept.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
            stats: BypassStats::default(),
        }
    }

    /// Adds `key` (or renews it) until `now + ttl`; evicts the oldest when full.
    pub fn insert(&mut self, key: BypassKey, now: Instant) {
        self.purge_expired(now);
        if let Some((exp, seq)) = self.entries.remove(&key) {
            self.order.remove(&(exp, seq));
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
            self.stats.evicted += 1;
        }
        self.seq += 1;
        let expiry = now.checked_add(self.ttl).unwrap_or(now);
        self.entries.insert(key.clone(), (expiry, self.seq));
        self.order.insert((expiry, self.seq), key);
        self.stats.inserts += 1;
    }

    /// Whether `key` is bypassed at `now`. An expired entry is dropped here.
    pub fn contains(&mut self, key: &BypassKey, now: Instant) -> bool {
        match self.entries.get(key).copied() {
            Some((exp, _)) if exp > now => {
                self.stats.hits += 1;
                true
            }
            Some((exp, seq)) => {
                self.entries.remove(key);
                self.order.remove(&(exp, seq));
                self.stats.expired += 1;
                self.stats.misses += 1;
                false
            }
            None => {
                self.stats.misses += 1;
                false
            }
        }
    }

    /// Removes `key`, e.g. when the operator clears it.
    pub fn remove(&mut self, key: &BypassKey) -> bool {
        match self.entries.remove(key) {
            Some(k) => {
                self.order.remove(&k);
                true
            }
            None => false,
        }
    }

    /// Drops every entry expired at `now`; returns how many.
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(entry) = self.order.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
            n += 1;
        }
        self.stats.expired += n as u64;
        n
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn stats(&self) -> BypassStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(last: u8, sni: Option<&str>) -> BypassKey {
        BypassKey {
            client: IpAddr::from([10, 0, 0, last]),
            server: IpAddr::from([192, 0, 2, 1]),
            sni: sni.map(str::to_owned),
        }
    }

    #[test]
    fn entries_expire_after_ttl() {
        let t0 = Instant::now();
        let mut list = BypassList::new(Duration::from_secs(60), 10);
        let k = key(1, Some("pinned.test"));
        list.insert(k.clone(), t0);
        assert!(list.contains(&k, t0 + Duration::from_secs(59)));
        assert!(
            !list.contains(&key(1, Some("other.test")), t0),
            "SNI is part of the key"
        );
        assert!(
            !list.contains(&key(2, Some("pinned.test")), t0),
            "client is part of the key"
        );
        assert!(!list.contains(&k, t0 + Duration::from_secs(60)));
        assert!(list.is_empty(), "an expired entry is dropped when seen");
        let s = list.stats();
        assert_eq!((s.inserts, s.hits, s.misses, s.expired), (1, 1, 3, 1));
    }

    #[test]
    fn default_ttl_is_one_hour() {
        let t0 = Instant::now();
        let mut list = BypassList::default();
        list.insert(key(1, None), t0);
        assert!(list.contains(&key(1, None), t0 + Duration::from_secs(3599)));
        assert!(!list.contains(&key(1, None), t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn reinsert_renews() {
        let t0 = Instant::now();
        let mut list = BypassList::new(Duration::from_secs(10), 10);
        list.insert(key(1, None), t0);
        list.insert(key(1, None), t0 + Duration::from_secs(8));
        assert_eq!(list.len(), 1);
        assert!(list.contains(&key(1, None), t0 + Duration::from_secs(15)));
    }

    #[test]
    fn full_list_evicts_the_oldest() {
        let t0 = Instant::now();
        let mut list = BypassList::new(Duration::from_secs(100), 3);
        for i in 0..4u8 {
            list.insert(key(i, None), t0 + Duration::from_secs(u64::from(i)));
        }
        assert_eq!(list.len(), 3);
        assert!(!list.contains(&key(0, None), t0 + Duration::from_secs(5)));
        assert!(list.contains(&key(3, None), t0 + Duration::from_secs(5)));
        assert_eq!(list.stats().evicted, 1);
    }

    #[test]
    fn purge_drops_only_expired() {
        let t0 = Instant::now();
        let mut list = BypassList::new(Duration::from_secs(10), 10);
        list.insert(key(1, None), t0);
        list.insert(key(2, None), t0 + Duration::from_secs(5));
        assert_eq!(list.purge_expired(t0 + Duration::from_secs(12)), 1);
        assert_eq!(list.len(), 1);
        assert!(list.remove(&key(2, None)));
        assert!(list.is_empty());
    }
}
