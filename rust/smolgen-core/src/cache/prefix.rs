//! Prefix caching: the keys and values of earlier requests, kept so that a request whose prompt
//! begins with the same tokens (a shared system prompt, the earlier turns of a conversation)
//! prefills only what is new.
//!
//! A finished generation hands its KV cache over (a move, no copy); a new one takes a copy of
//! the longest matching prefix. The store is bounded by bytes and drops the least recently used
//! entry first.

use crate::cache::kv::KvCache;
use crate::error::Result;

struct Entry {
    /// The tokens whose keys and values `kv` holds (exactly `kv.len()` of them).
    tokens: Vec<u32>,
    kv: KvCache,
    bytes: usize,
    last_used: u64,
}

/// Counters for a reader who wants to see the cache work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub capacity_bytes: usize,
    /// Lookups that reused at least one token.
    pub hits: u64,
    pub misses: u64,
    /// Prompt tokens that were not prefilled again, over all hits.
    pub tokens_reused: u64,
}

pub struct PrefixCache {
    entries: Vec<Entry>,
    capacity_bytes: usize,
    clock: u64,
    hits: u64,
    misses: u64,
    tokens_reused: u64,
}

/// Entries are few (a cache of hundreds of megabytes holds a few dozen prompts), so a linear
/// scan costs microseconds next to the milliseconds of a forward pass.
impl PrefixCache {
    pub fn new(capacity_bytes: usize) -> Self {
        PrefixCache {
            entries: Vec::new(),
            capacity_bytes,
            clock: 0,
            hits: 0,
            misses: 0,
            tokens_reused: 0,
        }
    }

    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    /// Resizes the store (0 disables it), evicting what no longer fits.
    pub fn set_capacity_bytes(&mut self, capacity_bytes: usize) {
        self.capacity_bytes = capacity_bytes;
        self.evict_to(capacity_bytes);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn stats(&self) -> PrefixCacheStats {
        PrefixCacheStats {
            entries: self.entries.len(),
            bytes: self.bytes(),
            capacity_bytes: self.capacity_bytes,
            hits: self.hits,
            misses: self.misses,
            tokens_reused: self.tokens_reused,
        }
    }

    fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    /// The cached KV of the longest prefix of `prompt` that is stored, at most `limit` tokens
    /// (a caller keeps at least one prompt token to compute: its logits are the first answer).
    /// Returns the shared (read-only) cache and how many of its positions match; copy them with
    /// [`KvCache::copy_prefix`] before appending.
    pub fn lookup(&mut self, prompt: &[u32], limit: usize) -> Option<(KvCache, usize)> {
        self.clock += 1;
        let best = self
            .entries
            .iter_mut()
            .map(|e| {
                let n = common_prefix(&e.tokens, prompt).min(limit);
                (n, e)
            })
            .filter(|(n, _)| *n > 0)
            .max_by_key(|(n, e)| (*n, e.last_used));
        match best {
            Some((n, entry)) => {
                entry.last_used = self.clock;
                self.hits += 1;
                self.tokens_reused += n as u64;
                Some((entry.kv.clone(), n))
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Keeps `kv`, which holds the keys and values of `tokens[..kv.len()]`. An entry that the new
    /// one extends is replaced; a new one that an entry already covers is dropped.
    pub fn insert(&mut self, tokens: &[u32], kv: KvCache) -> Result<()> {
        let len = kv.len();
        let bytes = kv.allocated_bytes();
        if len == 0 || len > tokens.len() || bytes > self.capacity_bytes {
            return Ok(());
        }
        let tokens = &tokens[..len];
        self.clock += 1;
        if let Some(covering) = self
            .entries
            .iter_mut()
            .find(|e| e.tokens.len() >= len && e.tokens[..len] == *tokens)
        {
            covering.last_used = self.clock;
            return Ok(());
        }
        self.entries
            .retain(|e| !(e.tokens.len() < len && tokens[..e.tokens.len()] == e.tokens[..]));
        self.evict_to(self.capacity_bytes - bytes);
        self.entries.push(Entry {
            tokens: tokens.to_vec(),
            kv,
            bytes,
            last_used: self.clock,
        });
        Ok(())
    }

    /// Drops least recently used entries until at most `budget` bytes are held.
    fn evict_to(&mut self, budget: usize) {
        while self.bytes() > budget {
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            self.entries.swap_remove(oldest);
        }
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// A one-layer cache holding `n` positions whose values encode the position.
    fn filled(n: usize) -> KvCache {
        let mut kv = KvCache::new(1, 4096);
        let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let t = Tensor::from_vec(data, (1, 1, n, 1), &Device::Cpu).expect("tensor");
        kv.append(0, &t, &t).expect("append");
        kv.advance(n);
        kv
    }

    #[test]
    fn finds_the_longest_stored_prefix_within_the_limit() -> Result<()> {
        let mut cache = PrefixCache::new(1 << 30);
        cache.insert(&[1, 2, 3, 4], filled(4))?;
        cache.insert(&[1, 2, 9], filled(3))?;
        let (kv, n) = cache.lookup(&[1, 2, 3, 4, 5], 4).expect("a hit");
        assert_eq!((n, kv.len()), (4, 4));
        // The limit keeps a token to compute even when the whole prompt is cached.
        assert_eq!(cache.lookup(&[1, 2, 3, 4], 3).map(|(_, n)| n), Some(3));
        assert_eq!(cache.lookup(&[1, 2, 9, 9], 10).map(|(_, n)| n), Some(3));
        assert!(cache.lookup(&[7, 1, 2], 10).is_none());
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.tokens_reused), (3, 1, 10));
        Ok(())
    }

    #[test]
    fn an_extension_replaces_its_prefix_and_a_covered_prompt_is_not_stored_twice() -> Result<()> {
        let mut cache = PrefixCache::new(1 << 30);
        cache.insert(&[1, 2], filled(2))?;
        cache.insert(&[1, 2, 3], filled(3))?;
        assert_eq!(cache.stats().entries, 1);
        cache.insert(&[1, 2, 3, 4, 5], filled(2))?; // only [1, 2] has KV: already covered
        assert_eq!(cache.stats().entries, 1);
        assert_eq!(cache.lookup(&[1, 2, 3, 8], 4).map(|(_, n)| n), Some(3));
        Ok(())
    }

    #[test]
    fn evicts_the_least_recently_used_entry_first() -> Result<()> {
        let one = filled(256).allocated_bytes();
        let mut cache = PrefixCache::new(2 * one);
        cache.insert(&[1; 256], filled(256))?;
        cache.insert(&[2; 256], filled(256))?;
        assert!(cache.lookup(&[1; 10], 10).is_some()); // [1...] is now the most recent
        cache.insert(&[3; 256], filled(256))?;
        assert_eq!(cache.stats().entries, 2);
        assert!(cache.stats().bytes <= 2 * one);
        assert!(cache.lookup(&[2; 10], 10).is_none());
        assert!(cache.lookup(&[1; 10], 10).is_some());
        assert!(cache.lookup(&[3; 10], 10).is_some());
        cache.set_capacity_bytes(0);
        assert_eq!(cache.stats().entries, 0);
        cache.insert(&[4; 256], filled(256))?; // disabled: nothing is kept
        assert_eq!(cache.stats().entries, 0);
        Ok(())
    }

    #[test]
    fn a_copied_prefix_is_independent_of_the_stored_entry() -> Result<()> {
        let mut cache = PrefixCache::new(1 << 30);
        cache.insert(&[1, 2, 3, 4], filled(4))?;
        let (shared, n) = cache.lookup(&[1, 2, 3, 7], 3).expect("a hit");
        let mut own = shared.copy_prefix(n)?;
        assert_eq!(own.len(), 3);
        // Appending position 3 to the copy must not touch the stored position 3.
        let x = Tensor::from_vec(vec![-1f32], (1, 1, 1, 1), &Device::Cpu)?;
        own.append(0, &x, &x)?;
        own.advance(1);
        let keys = |kv: &KvCache| {
            kv.host_layer(0, kv.len())
                .map(|l| (0..l.len()).flat_map(|p| l.key(p, 0)).collect::<Vec<f32>>())
        };
        assert_eq!(keys(&own), Some(vec![0., 1., 2., -1.]));
        let (stored, _) = cache.lookup(&[1, 2, 3, 4], 4).expect("a hit");
        let mut again = stored.copy_prefix(4)?;
        again.append(0, &x, &x)?;
        again.advance(1);
        assert_eq!(keys(&again), Some(vec![0., 1., 2., 3., -1.]));
        Ok(())
    }
}
