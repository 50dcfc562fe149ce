//! The per-sequence key/value cache: one growable buffer per layer for keys and one for values.
//!
//! Buffers start small and double when full (up to the context window), so a short chat does
//! not reserve the memory of an 8K-token one.

use candle_core::{DType, Tensor};

use crate::error::Result;

const INITIAL_CAPACITY: usize = 256;

#[derive(Debug, Clone)]
struct Buffer {
    /// `[1, kv_heads, capacity, head_dim]`; only the first `len` positions are meaningful.
    data: Tensor,
}

#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Buffer, Buffer)>>,
    len: usize,
    max_len: usize,
}

impl KvCache {
    pub fn new(num_layers: usize, max_len: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
            len: 0,
            max_len,
        }
    }

    /// Tokens cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Bytes held by the buffers (capacity, not just the used part).
    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| {
                (k.data.elem_count() + v.data.elem_count()) * k.data.dtype().size_in_bytes()
            })
            .sum()
    }

    /// A cache of its own holding a copy of the first `len` positions (at most `self.len()`),
    /// with room to grow: appending to it never touches `self`.
    pub fn copy_prefix(&self, len: usize) -> Result<KvCache> {
        let len = len.min(self.len);
        let capacity = Self::capacity_for(len, self.max_len);
        let copy = |b: &Buffer| -> Result<Buffer> {
            let (n, h, _, d) = b.data.dims4()?;
            let data = Tensor::zeros((n, h, capacity, d), b.data.dtype(), b.data.device())?;
            if len > 0 {
                data.slice_set(&b.data.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
            }
            Ok(Buffer { data })
        };
        let layers = self
            .layers
            .iter()
            .map(|slot| match slot {
                Some((k, v)) if len > 0 => Ok(Some((copy(k)?, copy(v)?))),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            layers,
            len,
            max_len: self.max_len,
        })
    }

    /// Doubling from a small start, never reserving past the context window.
    fn capacity_for(needed: usize, max_len: usize) -> usize {
        needed
            .next_power_of_two()
            .max(INITIAL_CAPACITY)
            .min(max_len)
            .max(needed)
    }

    /// Forgets everything after the first `len` tokens (the buffers stay allocated).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Appends `k`, `v` (`[1, kv_heads, t, head_dim]`) for `layer` at position `self.len()` and
    /// returns the keys and values of every position so far. Call [`KvCache::advance`] once all
    /// layers have appended.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        let needed = self.len + t;
        let slot = &mut self.layers[layer];
        let grow = match slot {
            None => true,
            Some((kb, _)) => kb.data.dim(2)? < needed,
        };
        if grow {
            let capacity = Self::capacity_for(needed, self.max_len);
            let fresh = |src: &Tensor, old: Option<&Buffer>| -> Result<Buffer> {
                let (b, h, _, d) = src.dims4()?;
                let data = Tensor::zeros((b, h, capacity, d), DType::F32, src.device())?;
                if let Some(old) = old {
                    data.slice_set(&old.data.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                }
                Ok(Buffer { data })
            };
            let (nk, nv) = match slot.as_ref() {
                None => (fresh(k, None)?, fresh(v, None)?),
                Some((ok, ov)) => (fresh(k, Some(ok))?, fresh(v, Some(ov))?),
            };
            *slot = Some((nk, nv));
        }
        let (kb, vb) = slot
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("KV buffer missing after growth".into()))?;
        kb.data.slice_set(&k.contiguous()?, 2, self.len)?;
        vb.data.slice_set(&v.contiguous()?, 2, self.len)?;
        Ok((kb.data.narrow(2, 0, needed)?, vb.data.narrow(2, 0, needed)?))
    }

    /// The whole buffers of `layer` (`[1, kv_heads, capacity, head_dim]`), for kernels that
    /// read the cache in place.
    pub fn buffers(&self, layer: usize) -> Option<(&Tensor, &Tensor)> {
        self.layers
            .get(layer)?
            .as_ref()
            .map(|(k, v)| (&k.data, &v.data))
    }

    /// Marks `t` more positions as filled (after every layer appended them).
    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
