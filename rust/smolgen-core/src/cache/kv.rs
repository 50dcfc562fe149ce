//! The per-sequence key/value cache: one growable buffer per layer for keys and one for values.
//!
//! Buffers start small and double when full (up to the context window), so a short chat does
//! not reserve the memory of an 8K-token one.
//!
//! On the CPU a layer's keys are plain memory, position-major: row `p` holds position `p`'s keys
//! for every KV head (`[capacity, kv_heads * head_dim]`), so appending a token writes one
//! contiguous row and growing is a reallocation. On an accelerator they are candle tensors
//! `[1, kv_heads, capacity, head_dim]`.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// Small enough (49 KB per layer buffer for SmolLM2-135M) to come from the allocator's heap:
/// larger first buffers were fresh memory maps, faulted in and unmapped for every request,
/// which cost a 16-token prompt a third of its time to first token on two threads.
const INITIAL_CAPACITY: usize = 64;

#[derive(Debug, Clone)]
enum LayerKv {
    Empty,
    /// `capacity * width` floats each; only the first `len` rows are meaningful.
    Host {
        keys: Vec<f32>,
        values: Vec<f32>,
        width: usize,
    },
    Device {
        keys: Tensor,
        values: Tensor,
    },
}

/// One layer's cached keys and values on the CPU, read in place: `[positions, width]` each,
/// `width = kv_heads * head_dim`.
#[derive(Debug, Clone, Copy)]
pub struct HostKv<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub width: usize,
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
                    } => {
                        let copy = |src: &[f32]| {
                            let mut v = vec![0f32; capacity * width];
                            v[..len * width].copy_from_slice(&src[..len * width]);
                            v
                        };
                        LayerKv::Host {
                            keys: copy(keys),
                            values: copy(values),
                            width: *width,
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

    /// Room for `t` more positions of `layer` on the CPU: the key and value rows
    /// `self.len()..self.len() + t` to write (`[t, width]` each). Call [`KvCache::advance`]
    /// once every layer has written them.
    pub fn host_rows_mut(
        &mut self,
        layer: usize,
        t: usize,
        width: usize,
    ) -> Result<(&mut [f32], &mut [f32])> {
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
            };
        }
        match slot {
            LayerKv::Host {
                keys,
                values,
                width: w,
            } if *w == width => {
                if keys.len() < needed * width {
                    // A fresh zeroed allocation comes from the OS untouched: pages past the
                    // rows actually written are never faulted in.
                    let filled = self.len * width;
                    for buf in [&mut *keys, &mut *values] {
                        let mut grown = vec![0f32; capacity * width];
                        grown[..filled].copy_from_slice(&buf[..filled]);
                        *buf = grown;
                    }
                }
                let rows = self.len * width..needed * width;
                Ok((&mut keys[rows.clone()], &mut values[rows]))
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
            } if keys.len() >= upto * width => Some(HostKv {
                keys: &keys[..upto * width],
                values: &values[..upto * width],
                width: *width,
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
            let (kr, vr) = (rows(k)?, rows(v)?);
            let (kd, vd) = self.host_rows_mut(layer, t, heads * dim)?;
            kd.copy_from_slice(&kr);
            vd.copy_from_slice(&vr);
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
