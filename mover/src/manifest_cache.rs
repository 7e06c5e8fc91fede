//! Parsed manifests kept between listings.
//!
//! A listing must read every matching manifest to sort by creation time,
//! and HANA asks for the same listing again and again (each `#NULL`
//! inquiry, each page of a long answer). A manifest never changes under
//! its key: it is created once and only deleted, and a name backed up
//! again after a delete is a new object with a new entity tag and
//! modification time. So a manifest read once stays good for as long as
//! the store's listing reports the same fingerprint for its key (size,
//! modification time, entity tag), and a listing needs to read only the
//! manifests it has not seen.
//!
//! The fingerprint is always the one the *listing* reported, never the one
//! a read returned: S3 gives modification times to the millisecond in a
//! listing but to the second in a GET's headers. If the object changes
//! between the listing and the read, the entry holds the newer manifest
//! under the older fingerprint, and the next listing (which reports the
//! newer fingerprint) reads it again.
//!
//! The cache is bounded by an estimate of the bytes it holds; the oldest
//! entries go first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use object_store::path::Path;
use object_store::ObjectMeta;

use crate::catalog::Manifest;

/// What the store's listing says about one manifest object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    size: u64,
    modified_ms: i64,
    e_tag: Option<String>,
}

impl Fingerprint {
    pub fn of(meta: &ObjectMeta) -> Self {
        Self {
            size: meta.size,
            modified_ms: meta.last_modified.timestamp_millis(),
            e_tag: meta.e_tag.clone(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    fingerprint: Fingerprint,
    manifest: Arc<Manifest>,
    cost: usize,
    /// Matches the entry's place in `Inner::order`.
    seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Path, Entry>,
    /// Keys in the order they were cached, each with the `seq` it was
    /// cached under; a pair whose `seq` no longer matches is stale.
    order: VecDeque<(u64, Path)>,
    used: usize,
    next_seq: u64,
}

/// A byte-bounded map from manifest key to parsed manifest.
#[derive(Debug)]
pub struct ManifestCache {
    budget: usize,
    inner: Mutex<Inner>,
}

/// Bookkeeping per entry on top of the manifest's own bytes (the map
/// slot, the key twice, the `Arc`), roughly.
const ENTRY_OVERHEAD: usize = 160;

fn cost(key: &Path, m: &Manifest) -> usize {
    let meta: usize = m.metadata.iter().map(|(k, v)| k.len() + v.len() + 48).sum();
    ENTRY_OVERHEAD
        + 2 * key.as_ref().len()
        + std::mem::size_of::<Manifest>()
        + m.name.len()
        + m.kind.len()
        + m.data_key.len()
        + m.transform.len()
        + meta
}

impl ManifestCache {
    /// A cache holding about `budget` bytes; 0 keeps nothing.
    pub fn new(budget: u64) -> Self {
        Self {
            budget: usize::try_from(budget).unwrap_or(usize::MAX),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves nothing half-done that a
        // later reader could trip on: every entry is whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The manifest cached for `key`, if it was read under `fingerprint`.
    pub fn get(&self, key: &Path, fingerprint: &Fingerprint) -> Option<Arc<Manifest>> {
        let inner = self.lock();
        let e = inner.map.get(key)?;
        (e.fingerprint == *fingerprint).then(|| Arc::clone(&e.manifest))
    }

    /// Caches `manifest` as what `key` held under `fingerprint`, evicting
    /// the oldest entries beyond the budget.
    pub fn insert(&self, key: Path, fingerprint: Fingerprint, manifest: Arc<Manifest>) {
        let cost = cost(&key, &manifest);
        if cost > self.budget {
            self.remove(&key);
            return;
        }
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if let Some(old) = inner.map.insert(
            key.clone(),
            Entry {
                fingerprint,
                manifest,
                cost,
                seq,
            },
        ) {
            inner.used -= old.cost;
        }
        inner.used += cost;
        inner.order.push_back((seq, key));
        while inner.used > self.budget {
            let Some((seq, key)) = inner.order.pop_front() else {
                break;
            };
            if inner.map.get(&key).is_some_and(|e| e.seq == seq) {
                if let Some(e) = inner.map.remove(&key) {
                    inner.used -= e.cost;
                }
            }
        }
        // Keys replaced or removed leave stale pairs behind; drop them
        // before they outnumber the live ones.
        if inner.order.len() > 2 * inner.map.len() + 64 {
            let Inner { map, order, .. } = &mut *inner;
            order.retain(|(seq, key)| map.get(key).is_some_and(|e| e.seq == *seq));
        }
    }

    /// Forgets `key` (its backup was deleted).
    pub fn remove(&self, key: &Path) {
        let mut inner = self.lock();
        if let Some(e) = inner.map.remove(key) {
            inner.used -= e.cost;
        }
    }

    /// Entries and their estimated bytes.
    #[cfg(test)]
    fn usage(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        (inner.map.len(), inner.used, inner.order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn manifest(name: &str, meta_bytes: usize) -> Arc<Manifest> {
        let mut metadata = BTreeMap::new();
        if meta_bytes > 0 {
            metadata.insert("k".to_string(), "v".repeat(meta_bytes));
        }
        Arc::new(Manifest {
            format: 1,
            name: name.to_string(),
            kind: "backint".into(),
            data_key: format!("data/{name}"),
            size: 10,
            created_unix_ms: 1,
            block_size: 4096,
            crc32c: 0,
            parts: 1,
            metadata,
            transform: "none".into(),
        })
    }

    fn fp(size: u64, ms: i64, tag: &str) -> Fingerprint {
        Fingerprint {
            size,
            modified_ms: ms,
            e_tag: Some(tag.to_string()),
        }
    }

    #[test]
    fn a_hit_needs_the_same_fingerprint() {
        let c = ManifestCache::new(1 << 20);
        let k = Path::from("catalog/backint/a.manifest");
        c.insert(k.clone(), fp(100, 5, "x"), manifest("a", 0));
        assert_eq!(c.get(&k, &fp(100, 5, "x")).unwrap().name, "a");
        // Deleted and backed up again: a new tag, or a new time, or a new size.
        assert!(c.get(&k, &fp(100, 5, "y")).is_none());
        assert!(c.get(&k, &fp(100, 6, "x")).is_none());
        assert!(c.get(&k, &fp(101, 5, "x")).is_none());
        assert!(c
            .get(&Path::from("catalog/backint/b.manifest"), &fp(100, 5, "x"))
            .is_none());
        c.insert(k.clone(), fp(100, 6, "y"), manifest("a2", 0));
        assert_eq!(c.get(&k, &fp(100, 6, "y")).unwrap().name, "a2");
        assert!(c.get(&k, &fp(100, 5, "x")).is_none());
        c.remove(&k);
        assert!(c.get(&k, &fp(100, 6, "y")).is_none());
        assert_eq!(c.usage().0, 0);
        assert_eq!(c.usage().1, 0);
    }

    #[test]
    fn the_budget_holds_and_the_oldest_go_first() {
        let one = cost(
            &Path::from("catalog/backint/m000.manifest"),
            &manifest("m000", 0),
        );
        let c = ManifestCache::new((10 * one) as u64);
        for i in 0..25 {
            let k = Path::from(format!("catalog/backint/m{i:03}.manifest"));
            c.insert(k, fp(1, i, "t"), manifest(&format!("m{i:03}"), 0));
            assert!(c.usage().1 <= 10 * one);
        }
        let (n, used, _) = c.usage();
        assert_eq!(n, 10);
        assert_eq!(used, 10 * one);
        for i in 0..25 {
            let k = Path::from(format!("catalog/backint/m{i:03}.manifest"));
            assert_eq!(c.get(&k, &fp(1, i, "t")).is_some(), i >= 15, "entry {i}");
        }
        // One manifest larger than the whole budget is not kept.
        let big = Path::from("catalog/backint/big.manifest");
        c.insert(big.clone(), fp(1, 0, "t"), manifest("big", 20 * one));
        assert!(c.get(&big, &fp(1, 0, "t")).is_none());
        assert_eq!(c.usage().0, 10);
        // Nothing is kept with no budget.
        let none = ManifestCache::new(0);
        none.insert(big.clone(), fp(1, 0, "t"), manifest("small", 0));
        assert!(none.get(&big, &fp(1, 0, "t")).is_none());
    }

    #[test]
    fn replacing_one_key_forever_does_not_grow_the_queue() {
        let c = ManifestCache::new(1 << 20);
        let k = Path::from("catalog/backint/again.manifest");
        for i in 0..10_000 {
            c.insert(k.clone(), fp(1, i, "t"), manifest("again", 0));
        }
        let (n, used, queued) = c.usage();
        assert_eq!(n, 1);
        assert_eq!(used, cost(&k, &manifest("again", 0)));
        assert!(queued <= 2 + 64, "{queued} queued for one entry");
    }
}
