//! The per-sequence key/value cache: one growable buffer per layer for keys and one for values.
//!
//! Buffers start small and double when full (up to the context window), so a short chat does
//! not reserve the memory of an 8K-token one.
//!
//! On the CPU a layer's keys are plain memory, position-major: row `p` holds position `p`'s keys
//! for every KV head (`[capacity, stride]`, the first `kv_heads * head_dim` floats of each row
//! used), so appending a token writes one row and growing is a reallocation. On an accelerator
//! they are candle tensors `[1, kv_heads, capacity, head_dim]`.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// Small enough (49 KB per layer buffer for SmolLM2-135M) to come from the allocator's heap:
/// larger first buffers were fresh memory maps, faulted in and unmapped for every request,
/// which cost a 16-token prompt a third of its time to first token on two threads.
const INITIAL_CAPACITY: usize = 64;

#[derive(Debug, Clone)]
enum LayerKv {
    Empty,
    /// `capacity * stride` floats each; only the first `len` rows are meaningful, and the
    /// first `width` floats of each.
    Host {
        keys: Vec<f32>,
        values: Vec<f32>,
        width: usize,
        stride: usize,
    },
    Device {
        keys: Tensor,
        values: Tensor,
    },
}

/// One layer's cached keys and values on the CPU, read in place: `[positions, stride]` each,
/// of which the first `width = kv_heads * head_dim` floats of a row are its keys (values).
#[derive(Debug, Clone, Copy)]
pub struct HostKv<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub width: usize,
    pub stride: usize,
}

/// The floats from one cached position to the next for rows of `width` floats. A row of a
/// multiple of 1 KiB (SmolLM2-1.7B's 32 KV heads x 64 = 8 KiB) puts one head's keys at every
/// position in the same few cache sets, which then hold only a fraction of them: attention
/// re-read them from L3 for every query and took a fifth of the 1.7B model's 512-token
/// prefill. One more cache line per row spreads them over all sets.
fn row_stride(width: usize) -> usize {
    if (width * 4).is_multiple_of(1024) {
        width + 16
    } else {
        width
    }
}

#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
    max_len: usize,
}

impl KvCache {
    pub fn new(num_layers: usize, max_len: usize) -> Self {
        KvCache {
            layers: vec![LayerKv::Empty; num_layers],
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

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Bytes held by the buffers (capacity, not just the used part).
    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|layer| match layer {
                LayerKv::Empty => 0,
                LayerKv::Host { keys, values, .. } => (keys.len() + values.len()) * 4,
                LayerKv::Device { keys, values } => {
                    (keys.elem_count() + values.elem_count()) * keys.dtype().size_in_bytes()
                }
            })
            .sum()
    }

    /// A cache of its own holding a copy of the first `len` positions (at most `self.len()`),
    /// with room to grow: appending to it never touches `self`.
    pub fn copy_prefix(&self, len: usize) -> Result<KvCache> {
        let len = len.min(self.len);
        let capacity = Self::capacity_for(len, self.max_len);
        let layers = self
            .layers
            .iter()
            .map(|layer| -> Result<LayerKv> {
                Ok(match layer {
                    _ if len == 0 => LayerKv::Empty,
                    LayerKv::Empty => LayerKv::Empty,
                    LayerKv::Host {
                        keys,
                        values,
                        width,
                        stride,
                    } => {
                        let copy = |src: &[f32]| {
                            let mut v = vec![0f32; capacity * stride];
                            v[..len * stride].copy_from_slice(&src[..len * stride]);
                            v
                        };
                        LayerKv::Host {
                            keys: copy(keys),
                            values: copy(values),
                            width: *width,
                            stride: *stride,
                        }
                    }
                    LayerKv::Device { keys, values } => {
                        let copy = |t: &Tensor| -> Result<Tensor> {
                            let (n, h, _, d) = t.dims4()?;
                            let data = Tensor::zeros((n, h, capacity, d), t.dtype(), t.device())?;
                            data.slice_set(&t.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                            Ok(data)
                        };
                        LayerKv::Device {
                            keys: copy(keys)?,
                            values: copy(values)?,
                        }
                    }
                })
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

    /// Writes the keys and values of `t` more positions of `layer` on the CPU (`[t, width]`
    /// each) after the first `self.len()`. Call [`KvCache::advance`] once every layer has
    /// written them.
    pub fn write_host_rows(
        &mut self,
        layer: usize,
        width: usize,
        new_keys: &[f32],
        new_values: &[f32],
    ) -> Result<()> {
        if width == 0 || !new_keys.len().is_multiple_of(width) || new_values.len() != new_keys.len()
        {
            return Err(Error::invalid(format!(
                "{} keys and {} values are not rows of {width}",
                new_keys.len(),
                new_values.len()
            )));
        }
        let t = new_keys.len() / width;
        let needed = self.len + t;
        let capacity = Self::capacity_for(needed, self.max_len);
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| Error::invalid(format!("KV cache has no layer {layer}")))?;
        if let LayerKv::Empty = slot {
            *slot = LayerKv::Host {
                keys: Vec::new(),
                values: Vec::new(),
                width,
                stride: row_stride(width),
            };
        }
        match slot {
            LayerKv::Host {
                keys,
                values,
                width: w,
                stride,
            } if *w == width => {
                let stride = *stride;
                if keys.len() < needed * stride {
                    // A fresh zeroed allocation comes from the OS untouched: pages past the
                    // rows actually written are never faulted in.
                    let filled = self.len * stride;
                    for buf in [&mut *keys, &mut *values] {
                        let mut grown = vec![0f32; capacity * stride];
                        grown[..filled].copy_from_slice(&buf[..filled]);
                        *buf = grown;
                    }
                }
                for (dst, src) in [(keys, new_keys), (values, new_values)] {
                    let rows = dst[self.len * stride..needed * stride].chunks_exact_mut(stride);
                    for (row, new) in rows.zip(src.chunks_exact(width)) {
                        row[..width].copy_from_slice(new);
                    }
                }
                Ok(())
            }
            _ => Err(Error::invalid(format!(
                "KV cache layer {layer} does not hold CPU rows of width {width}"
            ))),
        }
    }

    /// Positions `0..upto` of `layer` on the CPU, read in place.
    pub fn host_layer(&self, layer: usize, upto: usize) -> Option<HostKv<'_>> {
        match self.layers.get(layer)? {
            LayerKv::Host {
                keys,
                values,
                width,
                stride,
            } if keys.len() >= upto * stride => Some(HostKv {
                keys: &keys[..upto * stride],
                values: &values[..upto * stride],
                width: *width,
                stride: *stride,
            }),
            _ => None,
        }
    }

    /// Appends `k`, `v` (`[1, kv_heads, t, head_dim]`) for `layer` at position `self.len()`.
    /// On the CPU they are written as rows (read them with [`KvCache::host_layer`]) and `None` is
    /// returned; elsewhere the keys and values of every position so far come back as tensors.
    /// Call [`KvCache::advance`] once all layers have appended.
    pub fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let (_, heads, t, dim) = k.dims4()?;
        if k.device().is_cpu() {
            // [1, heads, t, dim] -> [t, heads * dim]
            let rows = |x: &Tensor| -> Result<Vec<f32>> {
                Ok(x.to_dtype(DType::F32)?
                    .squeeze(0)?
                    .transpose(0, 1)?
                    .flatten_all()?
                    .to_vec1::<f32>()?)
            };
            self.write_host_rows(layer, heads * dim, &rows(k)?, &rows(v)?)?;
            return Ok(None);
        }
        let needed = self.len + t;
        let len = self.len;
        let capacity = Self::capacity_for(needed, self.max_len);
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| Error::invalid(format!("KV cache has no layer {layer}")))?;
        let grow = match slot {
            LayerKv::Device { keys, .. } => keys.dim(2)? < needed,
            _ => true,
        };
        if grow {
            let fresh = |src: &Tensor, old: Option<&Tensor>| -> Result<Tensor> {
                let data = Tensor::zeros((1, heads, capacity, dim), DType::F32, src.device())?;
                if let Some(old) = old {
                    data.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                }
                Ok(data)
            };
            let (nk, nv) = match &*slot {
                LayerKv::Device { keys, values } => {
                    (fresh(k, Some(keys))?, fresh(v, Some(values))?)
                }
                _ => (fresh(k, None)?, fresh(v, None)?),
            };
            *slot = LayerKv::Device {
                keys: nk,
                values: nv,
            };
        }
        match slot {
            LayerKv::Device { keys, values } => {
                keys.slice_set(&k.contiguous()?, 2, len)?;
                values.slice_set(&v.contiguous()?, 2, len)?;
                Ok(Some((
                    keys.narrow(2, 0, needed)?,
                    values.narrow(2, 0, needed)?,
                )))
            }
            _ => Err(Error::invalid("KV buffer missing after growth")),
        }
    }

    /// Marks `t` more positions as filled (after every layer appended them).
    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_a_multiple_of_1_kib_are_padded_by_a_cache_line() {
        assert_eq!(row_stride(192), 192); // SmolLM2-135M: 3 KV heads of 64
        assert_eq!(row_stride(320), 320); // 360M: 5 KV heads
        assert_eq!(row_stride(2048), 2064); // 1.7B: 32 KV heads
        assert_eq!(row_stride(256), 272);
    }

    #[test]
    fn written_rows_read_back_at_the_stride_and_survive_growth_and_copies() {
        let width = 256; // padded to 272
        let mut cache = KvCache::new(1, 1000);
        let row = |p: usize| -> Vec<f32> { (0..width).map(|i| (p * 1000 + i) as f32).collect() };
        let mut written = 0;
        for t in [1, 3, 70, 5] {
            let keys: Vec<f32> = (written..written + t).flat_map(row).collect();
            let values: Vec<f32> = keys.iter().map(|k| -k).collect();
            cache
                .write_host_rows(0, width, &keys, &values)
                .expect("writes");
            cache.advance(t);
            written += t;
        }
        let check = |cache: &KvCache, n: usize| {
            let kv = cache.host_layer(0, n).expect("CPU rows");
            assert_eq!((kv.width, kv.stride), (width, 272));
            for p in 0..n {
                assert_eq!(kv.keys[p * kv.stride..][..width], row(p)[..]);
                assert_eq!(kv.values[p * kv.stride + 7], -row(p)[7]);
            }
        };
        check(&cache, written);
        check(&cache.copy_prefix(40).expect("copies"), 40);
        // 79 positions: grown from 64 rows to 128, each of the padded stride.
        assert_eq!(cache.allocated_bytes(), 2 * 128 * 272 * 4);
    }

    #[test]
    fn rows_that_do_not_fit_the_width_are_refused() {
        let mut cache = KvCache::new(2, 16);
        for (keys, values) in [(5, 5), (8, 4), (0, 0)] {
            let (k, v) = (vec![0f32; keys], vec![0f32; values]);
            let width = if keys == 0 { 0 } else { 4 };
            assert!(
                cache.write_host_rows(0, width, &k, &v).is_err(),
                "{keys} {values}"
            );
        }
        assert!(cache.write_host_rows(2, 4, &[0.0; 4], &[0.0; 4]).is_err());
        cache
            .write_host_rows(1, 4, &[0.0; 4], &[0.0; 4])
            .expect("layer 1");
        assert!(cache.write_host_rows(1, 8, &[0.0; 8], &[0.0; 8]).is_err());
    }
}
