//! The download cache: every answer that is built once and served many times (GAEN
//! unions and day exports, the designs' bucket bodies) lives in one cache bounded in
//! bytes (`DP3T_DOWNLOAD_CACHE_BYTES`), evicting the least recently used.
//!
//! Why one bounded cache: the answers a client can ask for grow with the square of the
//! data (one union per tag), and a national unlinkable filter is hundreds of megabytes.
//! The database holds every released bucket, so anything evicted is rebuilt or reloaded
//! on demand; memory only decides how often that happens.
//!
//! Concurrent requests for the same missing answer are coalesced: the first builds it,
//! the others wait for that build and share its result (or its error).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

/// The default bound: 64 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// What the download cache holds an answer for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerKey {
    /// A GAEN v2 download: the first bucket end in range (or none) and the release `R`.
    Union {
        /// First bucket end after the client's tag.
        first_end: Option<u64>,
        /// `R`.
        released_until: u64,
    },
    /// A GAEN v1 day export: the key day, the first bucket end in range and `R`.
    Day {
        /// Day number of the keys.
        day: u32,
        /// First bucket end after `publishedafter`.
        first_end: Option<u64>,
        /// `R`.
        released_until: u64,
    },
    /// A design's bucket body.
    Design {
        /// The design.
        design: crate::designs::Design,
        /// Bucket end, unix seconds.
        end: u64,
    },
}

/// A cached answer.
#[derive(Debug)]
pub enum Answer {
    /// A GAEN download or day export.
    Gaen(Arc<crate::publish::ExportResponse>),
    /// A design's published bucket.
    Design(Arc<crate::designs::PublishedBucket>),
}

/// Per-entry bookkeeping counted on top of the bodies.
const ENTRY_OVERHEAD: usize = 256;

impl Weigh for Answer {
    fn weight(&self) -> usize {
        ENTRY_OVERHEAD
            + match self {
                Answer::Gaen(r) => r.body.as_ref().map_or(0, |b| b.len()) + r.signature.len(),
                Answer::Design(b) => b.body.len() + b.signature.len(),
            }
    }
}

/// The one download cache of a node: GAEN answers and design buckets under one bound.
pub type DownloadCache = ByteCache<AnswerKey, Answer, String>;

/// A value that knows how many bytes it holds.
pub trait Weigh {
    /// Bytes held (bodies and headers; a small constant for the rest).
    fn weight(&self) -> usize;
}

type Flight<V, E> = Arc<OnceCell<Result<Arc<V>, E>>>;

struct Entry<V> {
    value: Arc<V>,
    weight: usize,
    tick: u64,
}

struct Inner<K, V, E> {
    entries: HashMap<K, Entry<V>>,
    /// Entries by last use, oldest first.
    order: BTreeMap<u64, K>,
    tick: u64,
    bytes: usize,
    in_flight: HashMap<K, Flight<V, E>>,
}

/// An LRU cache bounded in bytes, with coalesced builds.
pub struct ByteCache<K, V, E> {
    capacity: usize,
    inner: Mutex<Inner<K, V, E>>,
    /// Builds of different keys that may run at once: one per core. Builds are CPU-bound,
    /// so more would not answer sooner; what they would do is hold more transient
    /// buffers at once (answers of a whole retention are megabytes), on more threads,
    /// each with its own allocator arena that keeps freed memory.
    builds: tokio::sync::Semaphore,
}

impl<K, V, E> std::fmt::Debug for ByteCache<K, V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteCache")
            .field("capacity", &self.capacity)
            .field(
                "bytes",
                &self.inner.lock().unwrap_or_else(|e| e.into_inner()).bytes,
            )
            .finish_non_exhaustive()
    }
}

impl<K, V, E> ByteCache<K, V, E>
where
    K: Eq + Hash + Clone,
    V: Weigh,
    E: Clone,
{
    /// An empty cache holding at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ByteCache {
            capacity,
            builds: tokio::sync::Semaphore::new(cores),
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: BTreeMap::new(),
                tick: 0,
                bytes: 0,
                in_flight: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V, E>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bound in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes held now (never above [`ByteCache::capacity`]).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached value of `key`, marking it used.
    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.tick += 1;
        let tick = inner.tick;
        let e = inner.entries.get_mut(key)?;
        inner.order.remove(&e.tick);
        e.tick = tick;
        inner.order.insert(tick, key.clone());
        Some(Arc::clone(&e.value))
    }

    /// Insert `value` under `key`, evicting the least recently used entries until it
    /// fits. A value larger than the whole bound is not kept.
    pub fn insert(&self, key: K, value: Arc<V>) {
        let mut inner = self.lock();
        self.insert_locked(&mut inner, key, value);
    }

    fn insert_locked(&self, inner: &mut Inner<K, V, E>, key: K, value: Arc<V>) {
        let weight = value.weight();
        if weight > self.capacity {
            return;
        }
        if let Some(old) = inner.entries.remove(&key) {
            inner.order.remove(&old.tick);
            inner.bytes -= old.weight;
        }
        while inner.bytes + weight > self.capacity {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.bytes -= e.weight;
            }
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.order.insert(tick, key.clone());
        inner.bytes += weight;
        inner.entries.insert(
            key,
            Entry {
                value,
                weight,
                tick,
            },
        );
    }

    /// Drop every entry for which `keep` is false.
    pub fn retain(&self, keep: impl Fn(&K) -> bool) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let gone: Vec<K> = inner.entries.keys().filter(|k| !keep(k)).cloned().collect();
        for k in gone {
            if let Some(e) = inner.entries.remove(&k) {
                inner.order.remove(&e.tick);
                inner.bytes -= e.weight;
            }
        }
    }

    /// The value of `key`: cached, or built by `build` and cached. Concurrent calls for
    /// the same missing key run one build and share its result; builds of different keys
    /// run at most one per core at a time; a failed build is not cached.
    pub async fn get_or_build<F, Fut>(&self, key: K, build: F) -> Result<Arc<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<V>, E>>,
    {
        if let Some(v) = self.get(&key) {
            return Ok(v);
        }
        let flight = {
            let mut inner = self.lock();
            Arc::clone(inner.in_flight.entry(key.clone()).or_default())
        };
        let result = flight
            .get_or_init(|| async {
                // Never closed, so acquiring only waits; an error would mean "build now".
                let _permit = self.builds.acquire().await.ok();
                build().await
            })
            .await
            .clone();
        let mut inner = self.lock();
        let ours = inner
            .in_flight
            .get(&key)
            .is_some_and(|f| Arc::ptr_eq(f, &flight));
        if ours {
            // Cached before the flight ends, so that no caller finds neither.
            if let Ok(v) = &result {
                self.insert_locked(&mut inner, key.clone(), Arc::clone(v));
            }
            inner.in_flight.remove(&key);
        }
        result
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Blob(usize);
    impl Weigh for Blob {
        fn weight(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn evicts_the_least_recently_used_to_stay_within_the_bound() {
        let c: ByteCache<u32, Blob, ()> = ByteCache::new(100);
        c.insert(1, Arc::new(Blob(40)));
        c.insert(2, Arc::new(Blob(40)));
        assert!(c.get(&1).is_some()); // 1 is now newer than 2
        c.insert(3, Arc::new(Blob(40)));
        assert_eq!(c.bytes(), 80);
        assert!(c.get(&2).is_none());
        assert!(c.get(&1).is_some() && c.get(&3).is_some());
        // Too large for the bound: not kept, nothing evicted.
        c.insert(4, Arc::new(Blob(101)));
        assert!(c.get(&4).is_none());
        assert_eq!(c.len(), 2);
        // Replacing an entry counts its new size only.
        c.insert(1, Arc::new(Blob(10)));
        assert_eq!(c.bytes(), 50);
        c.retain(|k| *k != 3);
        assert_eq!((c.len(), c.bytes()), (1, 10));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_builds_of_one_key_are_coalesced() {
        let c: Arc<ByteCache<u32, Blob, String>> = Arc::new(ByteCache::new(1_000));
        let builds = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (c, builds, gate) = (Arc::clone(&c), Arc::clone(&builds), Arc::clone(&gate));
            tasks.push(tokio::spawn(async move {
                c.get_or_build(7, || async move {
                    builds.fetch_add(1, Ordering::SeqCst);
                    // Held open until every caller is waiting on it.
                    gate.notified().await;
                    Ok(Arc::new(Blob(5)))
                })
                .await
                .map(|b| b.0)
            }));
        }
        // Let the callers reach the cache, then release the one build.
        while c.lock().in_flight.is_empty() {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        gate.notify_waiters();
        gate.notify_one();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(5));
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert_eq!(c.bytes(), 5);
        // A failed build is shared by its waiters but not cached.
        let r = c
            .get_or_build(8, || async { Err::<Arc<Blob>, _>("no".to_owned()) })
            .await;
        assert!(r.is_err());
        assert!(c.get(&8).is_none());
    }
}
