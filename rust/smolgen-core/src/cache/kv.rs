//! The per-sequence key/value cache: one growable buffer per layer for keys and one for values.
//!
//! Buffers start small and double when full (up to the context window), so a short chat does
//! not reserve the memory of an 8K-token one.
//!
//! On the CPU a layer holds, for each KV head, a run of tiles of [`KV_TILE`] positions, one
//! block per tile, in the order attention reads them: a block of keys is `[head_dim][KV_TILE]`
//! (a key is a column, so the scores of several keys at once are one vector), a block of values
//! `[KV_TILE][head_dim]`. A head's history is thus one stretch of memory, which the hardware
//! streams in order; growing moves each head's run to its larger place. The format is f16 by
//! default ([`KvFormat`]).
//! On an accelerator they are candle tensors `[1, kv_heads, capacity, head_dim]`.

use candle_core::{DType, Tensor};
use half::f16;

pub use super::element::{KvElement, KvFormat};
use crate::error::{Error, Result};

/// Positions per tile of the CPU cache: attention reads keys and values a tile at a time.
pub const KV_TILE: usize = 64;

/// Small enough (24 KB per layer buffer for SmolLM2-135M in f16) to come from the allocator's
/// heap: larger first buffers were fresh memory maps, faulted in and unmapped for every
/// request, which cost a 16-token prompt a third of its time to first token on two threads.
const INITIAL_CAPACITY: usize = KV_TILE;

#[derive(Debug, Clone)]
enum HostBuf {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl HostBuf {
    fn zeros(format: KvFormat, n: usize) -> HostBuf {
        match format {
            KvFormat::F16 => HostBuf::F16(vec![f16::ZERO; n]),
            KvFormat::F32 => HostBuf::F32(vec![0f32; n]),
        }
    }

    fn len(&self) -> usize {
        match self {
            HostBuf::F16(v) => v.len(),
            HostBuf::F32(v) => v.len(),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            HostBuf::F16(v) => v.len() * 2,
            HostBuf::F32(v) => v.len() * 4,
        }
    }

    /// A buffer of `heads` runs of `tiles` blocks of `block` elements each, every head's run
    /// beginning with its first `keep` blocks here (runs of `len / heads` blocks).
    fn regrown(&self, heads: usize, block: usize, tiles: usize, keep: usize) -> HostBuf {
        fn copy<E: Copy + Default>(
            v: &[E],
            heads: usize,
            block: usize,
            tiles: usize,
            keep: usize,
        ) -> Vec<E> {
            // A fresh zeroed allocation comes from the OS untouched: pages past what is
            // copied are never faulted in.
            let mut grown = vec![E::default(); heads * tiles * block];
            let old_tiles = v.len() / (heads * block);
            for h in 0..heads {
                let src = &v[h * old_tiles * block..][..keep * block];
                grown[h * tiles * block..][..keep * block].copy_from_slice(src);
            }
            grown
        }
        match self {
            HostBuf::F16(v) => HostBuf::F16(copy(v, heads, block, tiles, keep)),
            HostBuf::F32(v) => HostBuf::F32(copy(v, heads, block, tiles, keep)),
        }
    }
}

#[derive(Debug, Clone)]
enum LayerKv {
    Empty,
    /// Whole tiles: `heads * tiles * dim * KV_TILE` elements each; only the first `len`
    /// positions are meaningful.
    Host {
        keys: HostBuf,
        values: HostBuf,
        heads: usize,
        dim: usize,
    },
    Device {
        keys: Tensor,
        values: Tensor,
    },
}

/// One layer's cached keys and values on the CPU, read in place, in tiles (see the module
/// documentation): positions `0..len`.
#[derive(Debug, Clone, Copy)]
pub struct KvTiles<'a, E> {
    keys: &'a [E],
    values: &'a [E],
    pub heads: usize,
    pub dim: usize,
    pub len: usize,
    /// Tiles each head's run has room for.
    capacity: usize,
}

impl<'a, E: KvElement> KvTiles<'a, E> {
    /// A view of tiled buffers (runs of whole tiles for `heads` heads of `dim`, all the same
    /// length) holding at least `len` positions.
    pub fn new(
        keys: &'a [E],
        values: &'a [E],
        heads: usize,
        dim: usize,
        len: usize,
    ) -> Result<Self> {
        let run = heads * dim * KV_TILE;
        let capacity = keys.len().checked_div(run).unwrap_or(0);
        if heads == 0
            || dim == 0
            || keys.len() != capacity * run
            || values.len() != keys.len()
            || capacity < len.div_ceil(KV_TILE)
        {
            return Err(Error::invalid(format!(
                "KV tiles of {} and {} elements cannot hold {len} positions of {heads} x {dim}",
                keys.len(),
                values.len()
            )));
        }
        Ok(KvTiles {
            keys,
            values,
            heads,
            dim,
            len,
            capacity,
        })
    }

    /// Tiles holding at least one of the `len` positions.
    pub fn tiles(&self) -> usize {
        self.len.div_ceil(KV_TILE)
    }

    fn block(&self, tile: usize, head: usize) -> std::ops::Range<usize> {
        let size = self.dim * KV_TILE;
        let start = (head * self.capacity + tile) * size;
        start..start + size
    }

    /// Head `head`'s keys in tile `tile`, `[dim][KV_TILE]`.
    pub fn keys(&self, tile: usize, head: usize) -> &'a [E] {
        &self.keys[self.block(tile, head)]
    }

    /// Head `head`'s values in tile `tile`, `[KV_TILE][dim]`.
    pub fn values(&self, tile: usize, head: usize) -> &'a [E] {
        &self.values[self.block(tile, head)]
    }

    /// Position `p`'s key for `head`, as f32 (for tests and inspection).
    pub fn key(&self, p: usize, head: usize) -> Vec<f32> {
        let block = self.keys(p / KV_TILE, head);
        (0..self.dim)
            .map(|d| block[d * KV_TILE + p % KV_TILE].to_f32())
            .collect()
    }

    /// Position `p`'s value for `head`, as f32.
    pub fn value(&self, p: usize, head: usize) -> Vec<f32> {
        let block = self.values(p / KV_TILE, head);
        block[(p % KV_TILE) * self.dim..][..self.dim]
            .iter()
            .map(|x| x.to_f32())
            .collect()
    }
}

/// [`KvTiles`] in the cache's format.
#[derive(Debug, Clone, Copy)]
pub enum HostKv<'a> {
    F16(KvTiles<'a, f16>),
    F32(KvTiles<'a, f32>),
}

impl HostKv<'_> {
    pub fn len(&self) -> usize {
        match self {
            HostKv::F16(t) => t.len,
            HostKv::F32(t) => t.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Position `p`'s key for `head`, as f32.
    pub fn key(&self, p: usize, head: usize) -> Vec<f32> {
        match self {
            HostKv::F16(t) => t.key(p, head),
            HostKv::F32(t) => t.key(p, head),
        }
    }

    /// Position `p`'s value for `head`, as f32.
    pub fn value(&self, p: usize, head: usize) -> Vec<f32> {
        match self {
            HostKv::F16(t) => t.value(p, head),
            HostKv::F32(t) => t.value(p, head),
        }
    }
}

/// Writes rows `[t, heads * dim]` of keys and values as positions `first..first + t` into tiled
/// buffers.
fn scatter<E: KvElement>(
    keys: &mut [E],
    values: &mut [E],
    (heads, dim): (usize, usize),
    first: usize,
    new_keys: &[f32],
    new_values: &[f32],
) {
    let width = heads * dim;
    let size = dim * KV_TILE;
    let capacity = keys.len() / (heads * size);
    for (i, (k, v)) in new_keys
        .chunks_exact(width)
        .zip(new_values.chunks_exact(width))
        .enumerate()
    {
        let p = first + i;
        let (tile, col) = (p / KV_TILE, p % KV_TILE);
        for h in 0..heads {
            let block = (h * capacity + tile) * size;
            let (k, v) = (&k[h * dim..][..dim], &v[h * dim..][..dim]);
            for (d, &x) in k.iter().enumerate() {
                keys[block + d * KV_TILE + col] = E::from_f32(x);
            }
            for (dst, &x) in values[block + col * dim..][..dim].iter_mut().zip(v) {
                *dst = E::from_f32(x);
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
    max_len: usize,
    format: KvFormat,
}

impl KvCache {
    pub fn new(num_layers: usize, max_len: usize) -> Self {
        Self::with_format(num_layers, max_len, KvFormat::default())
    }

    pub fn with_format(num_layers: usize, max_len: usize, format: KvFormat) -> Self {
        KvCache {
            layers: vec![LayerKv::Empty; num_layers],
            len: 0,
            max_len,
            format,
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

    /// The format of the CPU buffers.
    pub fn format(&self) -> KvFormat {
        self.format
    }

    /// Bytes held by the buffers (capacity, not just the used part).
    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|layer| match layer {
                LayerKv::Empty => 0,
                LayerKv::Host { keys, values, .. } => keys.bytes() + values.bytes(),
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
                        heads,
                        dim,
                    } => {
                        let (block, keep) = (dim * KV_TILE, len.div_ceil(KV_TILE));
                        let tiles = capacity / KV_TILE;
                        LayerKv::Host {
                            keys: keys.regrown(*heads, block, tiles, keep),
                            values: values.regrown(*heads, block, tiles, keep),
                            heads: *heads,
                            dim: *dim,
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
            format: self.format,
        })
    }

    /// Doubling from a small start, in whole tiles, never reserving past the context window.
    fn capacity_for(needed: usize, max_len: usize) -> usize {
        needed
            .next_power_of_two()
            .max(INITIAL_CAPACITY)
            .min(max_len)
            .max(needed)
            .next_multiple_of(KV_TILE)
    }

    /// Forgets everything after the first `len` tokens (the buffers stay allocated).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Writes the keys and values of `t` more positions of `layer` on the CPU (`[t, heads *
    /// dim]` each) after the first `self.len()`. Call [`KvCache::advance`] once every layer has
    /// written them.
    pub fn write_host_rows(
        &mut self,
        layer: usize,
        (heads, dim): (usize, usize),
        new_keys: &[f32],
        new_values: &[f32],
    ) -> Result<()> {
        let width = heads * dim;
        if width == 0 || !new_keys.len().is_multiple_of(width) || new_values.len() != new_keys.len()
        {
            return Err(Error::invalid(format!(
                "{} keys and {} values are not rows of {heads} heads of {dim}",
                new_keys.len(),
                new_values.len()
            )));
        }
        let t = new_keys.len() / width;
        let needed = self.len + t;
        if needed > self.max_len {
            return Err(Error::invalid(format!(
                "{needed} positions do not fit a KV cache of {}",
                self.max_len
            )));
        }
        let capacity = Self::capacity_for(needed, self.max_len);
        let format = self.format;
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| Error::invalid(format!("KV cache has no layer {layer}")))?;
        if let LayerKv::Empty = slot {
            *slot = LayerKv::Host {
                keys: HostBuf::zeros(format, 0),
                values: HostBuf::zeros(format, 0),
                heads,
                dim,
            };
        }
        match slot {
            LayerKv::Host {
                keys,
                values,
                heads: h,
                dim: d,
            } if (*h, *d) == (heads, dim) => {
                if keys.len() < needed.next_multiple_of(KV_TILE) * width {
                    let (block, keep) = (dim * KV_TILE, self.len.div_ceil(KV_TILE));
                    let tiles = capacity / KV_TILE;
                    *keys = keys.regrown(heads, block, tiles, keep);
                    *values = values.regrown(heads, block, tiles, keep);
                }
                let shape = (heads, dim);
                match (keys, values) {
                    (HostBuf::F16(k), HostBuf::F16(v)) => {
                        scatter(k, v, shape, self.len, new_keys, new_values)
                    }
                    (HostBuf::F32(k), HostBuf::F32(v)) => {
                        scatter(k, v, shape, self.len, new_keys, new_values)
                    }
                    _ => return Err(Error::invalid("KV cache keys and values differ in format")),
                }
                Ok(())
            }
            _ => Err(Error::invalid(format!(
                "KV cache layer {layer} does not hold CPU rows of {heads} heads of {dim}"
            ))),
        }
    }

    /// Positions `0..upto` of `layer` on the CPU, read in place.
    pub fn host_layer(&self, layer: usize, upto: usize) -> Option<HostKv<'_>> {
        match self.layers.get(layer)? {
            LayerKv::Host {
                keys,
                values,
                heads,
                dim,
            } => match (keys, values) {
                (HostBuf::F16(k), HostBuf::F16(v)) => {
                    KvTiles::new(k, v, *heads, *dim, upto).ok().map(HostKv::F16)
                }
                (HostBuf::F32(k), HostBuf::F32(v)) => {
                    KvTiles::new(k, v, *heads, *dim, upto).ok().map(HostKv::F32)
                }
                _ => None,
            },
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
            self.write_host_rows(layer, (heads, dim), &rows(k)?, &rows(v)?)?;
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

    /// Position `p`'s keys for every head: exact in f16 (small integers and halves).
    fn row(p: usize, width: usize) -> Vec<f32> {
        (0..width)
            .map(|i| ((p * 7 + i) % 512) as f32 / 2.0)
            .collect()
    }

    #[test]
    fn written_rows_read_back_and_survive_growth_and_copies() {
        for format in [KvFormat::F16, KvFormat::F32] {
            let (heads, dim) = (3, 8);
            let width = heads * dim;
            let mut cache = KvCache::with_format(1, 1000, format);
            let mut written = 0;
            for t in [1, 3, 70, 5] {
                let keys: Vec<f32> = (written..written + t).flat_map(|p| row(p, width)).collect();
                let values: Vec<f32> = keys.iter().map(|k| -k).collect();
                cache
                    .write_host_rows(0, (heads, dim), &keys, &values)
                    .expect("writes");
                cache.advance(t);
                written += t;
            }
            let check = |cache: &KvCache, n: usize| {
                let kv = cache.host_layer(0, n).expect("CPU rows");
                assert_eq!(kv.len(), n);
                for p in 0..n {
                    for h in 0..heads {
                        let want = &row(p, width)[h * dim..][..dim];
                        assert_eq!(kv.key(p, h), want, "{format:?} position {p} head {h}");
                        let negated: Vec<f32> = want.iter().map(|x| -x).collect();
                        assert_eq!(kv.value(p, h), negated);
                    }
                }
            };
            check(&cache, written);
            check(&cache.copy_prefix(40).expect("copies"), 40);
            check(&cache.copy_prefix(64).expect("copies"), 64);
            // 79 positions: grown from one tile to two.
            assert_eq!(cache.allocated_bytes(), 2 * 128 * width * format.bytes());
        }
    }

    #[test]
    fn a_tile_holds_keys_as_columns_and_values_as_rows() {
        let (heads, dim) = (2, 4);
        let mut cache = KvCache::with_format(1, 256, KvFormat::F32);
        let keys: Vec<f32> = (0..66 * heads * dim).map(|i| i as f32).collect();
        cache
            .write_host_rows(0, (heads, dim), &keys, &keys)
            .expect("writes");
        let Some(HostKv::F32(kv)) = cache.host_layer(0, 66) else {
            panic!("f32 tiles")
        };
        assert_eq!(kv.tiles(), 2);
        // Tile 1 (positions 64, 65), head 1: key dim d of position 64 + j is a column entry.
        let (k, v) = (kv.keys(1, 1), kv.values(1, 1));
        for d in 0..dim {
            for j in 0..2 {
                let x = ((64 + j) * heads * dim + dim + d) as f32;
                assert_eq!(k[d * KV_TILE + j], x);
                assert_eq!(v[j * dim + d], x);
            }
        }
    }

    #[test]
    fn rows_that_do_not_fit_are_refused() {
        let mut cache = KvCache::new(2, 16);
        for (keys, values) in [(5, 5), (8, 4), (0, 0)] {
            let (k, v) = (vec![0f32; keys], vec![0f32; values]);
            let shape = if keys == 0 { (0, 4) } else { (1, 4) };
            assert!(
                cache.write_host_rows(0, shape, &k, &v).is_err(),
                "{keys} {values}"
            );
        }
        assert!(cache
            .write_host_rows(2, (1, 4), &[0.0; 4], &[0.0; 4])
            .is_err());
        cache
            .write_host_rows(1, (1, 4), &[0.0; 4], &[0.0; 4])
            .expect("layer 1");
        assert!(cache
            .write_host_rows(1, (2, 4), &[0.0; 8], &[0.0; 8])
            .is_err());
        // Past the window.
        assert!(cache
            .write_host_rows(0, (1, 4), &[0.0; 68], &[0.0; 68])
            .is_err());
    }
}
