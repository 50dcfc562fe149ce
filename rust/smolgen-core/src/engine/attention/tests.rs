use super::*;
use crate::cache::kv::{KvCache, KvFormat};

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
}

/// A one-layer cache of `total` random positions, and the queries of every position.
fn setup(heads: Heads, total: usize, format: KvFormat, seed: u64) -> (KvCache, Vec<f32>) {
    let mut seed = seed;
    let width = heads.kv * heads.dim;
    let k: Vec<f32> = (0..total * width).map(|_| 2.0 * lcg(&mut seed)).collect();
    let v: Vec<f32> = (0..total * width).map(|_| lcg(&mut seed)).collect();
    let q: Vec<f32> = (0..total * heads.query * heads.dim)
        .map(|_| 3.0 * lcg(&mut seed))
        .collect();
    let mut cache = KvCache::with_format(1, 1 << 16, format);
    cache
        .write_host_rows(0, (heads.kv, heads.dim), &k, &v)
        .expect("writes");
    cache.advance(total);
    (cache, q)
}

/// Straightforward f64 attention over what the cache holds: the definition. Returns
/// `[t, query * dim]` for queries at `pos..pos + t`.
fn reference(q: &[f32], kv: HostKv<'_>, pos: usize, t: usize, h: Heads) -> Vec<f64> {
    let mut y = vec![0f64; t * h.query * h.dim];
    for head in 0..h.query {
        let g = head / h.group();
        for i in 0..t {
            let seen = pos + i + 1;
            let qi = &q[(i * h.query + head) * h.dim..][..h.dim];
            let s: Vec<f64> = (0..seen)
                .map(|j| {
                    let k = kv.key(j, g);
                    (0..h.dim).map(|d| qi[d] as f64 * k[d] as f64).sum::<f64>()
                        / (h.dim as f64).sqrt()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for (j, e) in e.iter().enumerate() {
                let v = kv.value(j, g);
                for d in 0..h.dim {
                    y[(i * h.query + head) * h.dim + d] += e / z * v[d] as f64;
                }
            }
        }
    }
    y
}

const SHAPES: [(usize, usize, usize); 6] = [
    (9, 3, 64),  // SmolLM2-135M
    (15, 5, 64), // 360M
    (4, 4, 64),  // 1.7B's grouping (one query head per KV head)
    (6, 2, 12),  // a head size the SIMD path does not take
    (4, 1, 24),  // one KV head, three vectors per row
    (2, 2, 8),
];

#[test]
fn matches_the_definition_for_every_grouping_and_format() {
    for (query, kv, dim) in SHAPES {
        let heads = Heads { query, kv, dim };
        for (format, total) in [
            (KvFormat::F32, 70),
            (KvFormat::F16, 131),
            (KvFormat::F32, 3),
        ] {
            let (cache, q) = setup(heads, total, format, 7);
            let view = cache.host_layer(0, total).expect("rows");
            let (y, probs) = causal_attention(&q, view, 0, total, heads, true);
            let want = reference(&q, view, 0, total, heads);
            for (a, b) in y.iter().zip(&want) {
                assert!(
                    (*a as f64 - b).abs() < 2e-5,
                    "{heads:?} {format:?}: {a} vs {b}"
                );
            }
            let probs = probs.expect("kept");
            for (r, row) in probs.chunks(total).enumerate() {
                let i = r % total;
                let s: f32 = row.iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "row {r} sums to {s}");
                assert!(row[i + 1..].iter().all(|&p| p == 0.0), "causal");
            }
        }
    }
}

/// One query's result is the same bits however the rows are grouped into units and passes,
/// and however the tiles are split into partials.
#[test]
fn a_position_gives_the_same_bits_in_every_split() {
    for (query, kv, dim) in SHAPES {
        let heads = Heads { query, kv, dim };
        for format in [KvFormat::F16, KvFormat::F32] {
            let total = 200;
            let (cache, q) = setup(heads, total, format, 11);
            let view = cache.host_layer(0, total).expect("rows");
            let (all, _) = causal_attention(&q, view, 0, total, heads, false);
            let width = query * dim;
            // The last rows alone after the cached ones, in odd-sized passes.
            for (pos, t) in [(130, 70), (63, 1), (64, 5), (199, 1), (0, 1)] {
                let tail = cache.host_layer(0, pos + t).expect("rows");
                let (y, _) = causal_attention(&q[pos * width..], tail, pos, t, heads, false);
                assert_eq!(
                    y[..],
                    all[pos * width..][..t * width],
                    "{heads:?} {pos} {t}"
                );
            }
            // Units of a few rows, and tiles split into partials then folded.
            let mut s = UnitScratch::default();
            for (r0, r1, split) in [(0, 3, 1), (5, 12, 2), (150, 151, 1), (190, 200, 3)] {
                for group in 0..kv {
                    let unit = Unit {
                        q: &q,
                        pos: 0,
                        rows: (r0, r1),
                        group,
                        heads,
                    };
                    let check = |row: usize, head: usize, out: &[f32]| {
                        assert_eq!(out, &all[(row * query + head) * dim..][..dim]);
                    };
                    attend_unit(&unit, view, &mut s, check);
                    let tiles = unit.tiles();
                    let n = unit.queries();
                    let mut parts = vec![f32::NAN; tiles * n * partial_len(dim)];
                    let per = tiles.div_ceil(split);
                    for c in 0..split {
                        let range = (c * per).min(tiles)..((c + 1) * per).min(tiles);
                        let at = range.start * n * partial_len(dim);
                        unit_partials(&unit, view, range, &mut s, &mut parts[at..]);
                    }
                    fold_partials(&unit, &parts, &mut s, check);
                }
            }
        }
    }
}

/// Checks that path `P`'s products give the portable bits for every head size in `dims`,
/// block of queries, width and validity pattern, extreme magnitudes included, with and without
/// a next block to fetch (which changes nothing but timing).
///
/// # Safety
/// `P`'s CPU features are available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
unsafe fn simd_products_match<E: KvElement, P: blocks::Blocks<E>>(seed: &mut u64, dims: &[usize]) {
    for &dim in dims {
        for magnitude in [1.0f32, 300.0] {
            let keys: Vec<E> = (0..dim * KV_TILE)
                .map(|_| E::from_f32(magnitude * lcg(seed)))
                .collect();
            for n in [1usize, 2, 3, 6, 7, 13] {
                let next = n.is_multiple_of(2).then_some(&keys[..]);
                let q: Vec<f32> = (0..n * dim).map(|_| magnitude * lcg(seed)).collect();
                for width in [8, 16, 24, 40, 56, 64] {
                    let mut a = vec![0f32; n * KV_TILE];
                    let mut b = vec![0f32; n * KV_TILE];
                    portable::scores(&q, dim, &keys, width, 0.125, &mut a);
                    // SAFETY: the caller's contract; the sizes are checked.
                    unsafe { blocks::scores::<E, P>(&q, dim, &keys, next, width, 0.125, &mut b) };
                    assert_eq!(a, b, "scores dim {dim} n {n} width {width}");
                }
                let weights: Vec<f32> = (0..n * KV_TILE).map(|_| lcg(seed) + 0.5).collect();
                let mut valid: Vec<usize> = (0..n)
                    .map(|_| ((lcg(seed) + 0.5) * 65.0) as usize)
                    .collect();
                valid.sort();
                for v in valid.iter_mut() {
                    *v = (*v).clamp(1, KV_TILE);
                }
                let mut a = vec![0f32; n * dim];
                let mut b = vec![0f32; n * dim];
                portable::mix(&weights, &valid, &keys, dim, &mut a);
                // SAFETY: as above.
                unsafe { blocks::mix::<E, P>(&weights, &valid, &keys, next, dim, &mut b) };
                assert_eq!(a, b, "mix dim {dim} n {n} valid {valid:?}");
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_avx2_products_give_the_portable_bits() {
    if !x86::available() {
        return;
    }
    let mut seed = 3;
    // SAFETY: the features were checked above.
    unsafe {
        simd_products_match::<f32, x86::Avx2>(&mut seed, &[8, 16, 24, 64, 72]);
        simd_products_match::<f16, x86::Avx2>(&mut seed, &[8, 16, 24, 64, 72]);
    }
}

#[cfg(target_arch = "aarch64")]
#[test]
fn the_neon_products_give_the_portable_bits() {
    let mut seed = 3;
    // SAFETY: every AArch64 CPU has NEON.
    unsafe {
        simd_products_match::<f32, neon::Neon>(&mut seed, &[4, 8, 12, 24, 64, 72]);
        simd_products_match::<f16, neon::Neon>(&mut seed, &[4, 8, 12, 24, 64, 72]);
    }
}
