//! Causal attention over the KV cache on the CPU, one query row at a time (with AVX-512, two
//! side by side, each with the arithmetic it has alone).
//!
//! Every query row is computed the same way whatever else is in the pass: the same dot products
//! in the same order, no mask tensor (a row simply stops at its own position). So a position's
//! result does not depend on how the prompt was split between passes, which is what lets the
//! prefix cache give the same tokens as a full prefill. (A batched matmul picks its blocking,
//! hence its summation order, by shape; on this model a last-bit difference in one activation
//! can move a log-probability by a tenth after 8-bit activation rounding.)

use rayon::prelude::*;

use crate::cache::kv::HostKv;
use crate::fastmath::exp_shifted;

/// The head layout of one attention layer.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub query: usize,
    pub kv: usize,
    pub dim: usize,
}

/// Attention for `t` queries at absolute positions `pos..pos + t`.
///
/// - `q`: `[t, query heads * dim]`, rotary embedding applied.
/// - `kv`: the layer's cache, holding positions `0..pos + t`.
/// - Returns `[t, query heads * dim]` (the layout the output projection reads) and, when
///   `keep_probs`, the softmax weights `[query heads, t, pos + t]` (zero above the diagonal).
pub fn causal_attention(
    q: &[f32],
    kv: HostKv<'_>,
    pos: usize,
    t: usize,
    heads: Heads,
    keep_probs: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (query, dim) = (heads.query, heads.dim);
    let total = pos + t;
    let per_head: Vec<(Vec<f32>, Vec<f32>)> = (0..query)
        .into_par_iter()
        .map(|h| {
            let mut out = vec![0f32; t * dim];
            let mut probs = if keep_probs {
                vec![0f32; t * total]
            } else {
                Vec::new()
            };
            let mut scores = vec![0f32; 2 * total];
            attend_head(q, kv, pos, t, heads, h, &mut scores, |i, row, p| {
                out[i * dim..][..dim].copy_from_slice(row);
                if keep_probs {
                    probs[i * total..][..p.len()].copy_from_slice(p);
                }
            });
            (out, probs)
        })
        .collect();
    let mut y = vec![0f32; t * query * dim];
    for (h, (out, _)) in per_head.iter().enumerate() {
        for i in 0..t {
            y[(i * query + h) * dim..][..dim].copy_from_slice(&out[i * dim..][..dim]);
        }
    }
    let probs = keep_probs.then(|| per_head.into_iter().flat_map(|(_, p)| p).collect());
    (y, probs)
}

/// Query head `h` for `t` queries at positions `pos..pos + t`: calls `emit(i, output, probs)`
/// for each query `i` with its `dim` outputs and its softmax weights over keys `0..=pos + i`.
/// `scratch` holds at least `2 * (pos + t)` floats. The work of one row never depends on `t` or
/// on the other heads, so any split of a prompt or of the heads gives the same bits. (With
/// AVX-512, 64-wide rows go two at a time, each 512-bit register holding both rows' eight
/// lanes: the same arithmetic per row as one at a time.)
#[allow(clippy::too_many_arguments)]
pub fn attend_head(
    q: &[f32],
    kv: HostKv<'_>,
    pos: usize,
    t: usize,
    heads: Heads,
    h: usize,
    scratch: &mut [f32],
    mut emit: impl FnMut(usize, &[f32], &[f32]),
) {
    let Heads {
        query,
        kv: kv_heads,
        dim,
    } = heads;
    let g = h / (query / kv_heads); // query heads share KV heads in consecutive groups
    let scale = 1.0 / (dim as f32).sqrt();
    let mut on_stack = [0f32; MAX_STACK_HEAD_DIM];
    let mut on_heap = Vec::new();
    let acc = if dim <= MAX_STACK_HEAD_DIM {
        &mut on_stack[..dim]
    } else {
        on_heap.resize(dim, 0f32);
        &mut on_heap[..]
    };
    let (keys, values) = (
        Rows::new(kv.keys, kv.stride, g * dim),
        Rows::new(kv.values, kv.stride, g * dim),
    );
    let query_row = |i: usize| &q[(i * query + h) * dim..][..dim];
    // Rows before `first` went in pairs.
    #[cfg(not(target_arch = "x86_64"))]
    let first = 0;
    #[cfg(target_arch = "x86_64")]
    let mut first = 0;
    #[cfg(target_arch = "x86_64")]
    if dim == 64 && wide512() {
        let (scores_a, scores_b) = scratch.split_at_mut(pos + t);
        let mut acc_b = [0f32; 64];
        while first + 1 < t {
            let seen = pos + first + 1; // the first row's keys; the second sees one more
            let (a, b) = (&mut scores_a[..seen], &mut scores_b[..seen + 1]);
            let (acc_a, acc_b) = (&mut *acc, &mut acc_b);
            // SAFETY: the CPU has AVX-512 F, AVX2 and FMA (checked by `wide512`); both query
            // rows hold 64 floats; the key and value rows `0..=seen` are in the cache.
            unsafe {
                let (max_a, max_b) = x86::score_keys_pair_64(
                    query_row(first),
                    query_row(first + 1),
                    keys,
                    scale,
                    a,
                    b,
                );
                normalize_pair(a, max_a, b, max_b);
                x86::mix_values_pair_64(a, b, values, acc_a, acc_b);
            }
            emit(first, acc_a, a);
            emit(first + 1, acc_b, b);
            first += 2;
        }
    }
    for i in first..t {
        let seen = pos + i + 1; // keys 0..=pos + i
        let scores = &mut scratch[..seen];
        let max = score_keys(query_row(i), keys, scale, scores);
        normalize(scores, max);
        mix_values(scores, values, acc);
        emit(i, acc, scores);
    }
}

/// [`normalize`] for two rows, `b` one longer than `a`: the same arithmetic per row, the two
/// sums' dependent chains interleaved.
#[cfg(target_arch = "x86_64")]
fn normalize_pair(a: &mut [f32], max_a: f32, b: &mut [f32], max_b: f32) {
    exp_shifted(a, max_a);
    exp_shifted(b, max_b);
    let (mut sum_a, mut sum_b) = (0f32, 0f32);
    for (x, y) in a.iter().zip(b.iter()) {
        sum_a += x;
        sum_b += y;
    }
    sum_b += b[a.len()];
    let (inv_a, inv_b) = (1.0 / sum_a, 1.0 / sum_b);
    for x in a.iter_mut() {
        *x *= inv_a;
    }
    for y in b.iter_mut() {
        *y *= inv_b;
    }
}

/// Scores (whose maximum is `max`) to softmax weights, in place.
fn normalize(scores: &mut [f32], max: f32) {
    exp_shifted(scores, max);
    let mut sum = 0f32;
    for s in scores.iter() {
        sum += s;
    }
    let inv = 1.0 / sum;
    for s in scores.iter_mut() {
        *s *= inv;
    }
}

/// One head's slice of every cached position: row `j` is `data[j * stride + offset..][..dim]`.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    stride: usize,
    offset: usize,
}

impl<'a> Rows<'a> {
    fn new(data: &'a [f32], stride: usize, offset: usize) -> Self {
        Rows {
            data,
            stride,
            offset,
        }
    }
    #[inline(always)]
    fn row(&self, j: usize, dim: usize) -> &'a [f32] {
        &self.data[j * self.stride + self.offset..][..dim]
    }
    /// Where 64-wide rows `j..j + KEYS_AT_ONCE` start (each in bounds).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn run_of_64(&self, j: usize) -> [*const f32; x86::KEYS_AT_ONCE] {
        // A plain loop, no closure: see `x86::score_keys_64`.
        let mut rows = [std::ptr::null::<f32>(); x86::KEYS_AT_ONCE];
        for (r, row) in rows.iter_mut().enumerate() {
            *row = self.row(j + r, 64).as_ptr();
        }
        rows
    }
    /// The rows from `j` on.
    #[cfg(target_arch = "x86_64")]
    fn skip(&self, j: usize) -> Rows<'a> {
        Rows {
            data: &self.data[(j * self.stride).min(self.data.len())..],
            ..*self
        }
    }
}

/// `scores[j] = dot(q, key j) * scale` for every `j < scores.len()`; returns their maximum.
fn score_keys(q: &[f32], keys: Rows<'_>, scale: f32, scores: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if q.len().is_multiple_of(8) && wide_vectors() {
        // SAFETY: the CPU has AVX2 and FMA (checked once by `wide_vectors`).
        return unsafe { x86::score_keys(q, keys, scale, scores) };
    }
    score_keys_portable(q, keys, scale, scores)
}

fn score_keys_portable(q: &[f32], keys: Rows<'_>, scale: f32, scores: &mut [f32]) -> f32 {
    let mut max = f32::NEG_INFINITY;
    for (j, s) in scores.iter_mut().enumerate() {
        *s = dot(q, keys.row(j, q.len())) * scale;
        max = max.max(*s);
    }
    max
}

/// `acc = sum_j probs[j] * value j`, each element summed over `j` in order.
fn mix_values(probs: &[f32], values: Rows<'_>, acc: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if acc.len().is_multiple_of(8) && wide_vectors() {
        // SAFETY: the CPU has AVX2 and FMA (checked once by `wide_vectors`).
        return unsafe { x86::mix_values(probs, values, acc) };
    }
    mix_values_portable(probs, values, acc)
}

fn mix_values_portable(probs: &[f32], values: Rows<'_>, acc: &mut [f32]) {
    let dim = acc.len();
    acc.fill(0.0);
    for (j, &p) in probs.iter().enumerate() {
        for (o, &x) in acc.iter_mut().zip(values.row(j, dim)) {
            *o = p.mul_add(x, *o);
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn wide_vectors() -> bool {
    static AVX2_FMA: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX2_FMA.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// [`wide_vectors`] and AVX-512 F: two rows' 256-bit lanes side by side in one register.
#[cfg(target_arch = "x86_64")]
fn wide512() -> bool {
    static AVX512F: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX512F.get_or_init(|| wide_vectors() && is_x86_feature_detected!("avx512f"))
}

/// The same arithmetic as the portable loops, in 256-bit vectors: the same eight running sums
/// per dot product, each step one fused multiply-add as `f32::mul_add` is, reduced in the same
/// order, so both give identical bits.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Rows;

    /// Keys scored side by side in [`score_keys_64`]: enough chains of 4-cycle FMAs to keep
    /// both FMA units busy, few enough that they and the query fit the 16 registers.
    pub(super) const KEYS_AT_ONCE: usize = 8;

    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        // ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), as `super::dot` adds them.
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let u = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps::<1>(u, u)))
    }

    /// # Safety
    /// AVX2 and FMA are available; `q.len()` is a multiple of 8; every key row is in bounds.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn score_keys(
        q: &[f32],
        keys: Rows<'_>,
        scale: f32,
        scores: &mut [f32],
    ) -> f32 {
        if q.len() == 64 {
            // SAFETY: the caller's contract, and the length just checked.
            return unsafe { score_keys_64(q, keys, scale, scores) };
        }
        let dim = q.len();
        let mut max = f32::NEG_INFINITY;
        for (j, s) in scores.iter_mut().enumerate() {
            let k = keys.row(j, dim);
            let mut acc = _mm256_setzero_ps();
            for c in (0..dim).step_by(8) {
                // SAFETY: `c + 8 <= dim` and both rows hold `dim` floats.
                let (x, y) = unsafe {
                    (
                        _mm256_loadu_ps(q.as_ptr().add(c)),
                        _mm256_loadu_ps(k.as_ptr().add(c)),
                    )
                };
                acc = _mm256_fmadd_ps(x, y, acc);
            }
            *s = hsum(acc) * scale;
            max = max.max(*s);
        }
        max
    }

    /// [`score_keys`] for 64-wide heads (SmolLM2's): the query stays in registers and
    /// [`KEYS_AT_ONCE`] keys run side by side, so that their chains of dependent fused
    /// multiply-adds overlap (one key's chain bounded the loop). Each key's arithmetic is
    /// unchanged.
    ///
    /// # Safety
    /// As [`score_keys`], with `q.len() == 64`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn score_keys_64(q: &[f32], keys: Rows<'_>, scale: f32, scores: &mut [f32]) -> f32 {
        // Plain loops, no closures: a closure here gets this function's target features, so
        // a generic helper such as `array::from_fn` could not inline it in a portable build
        // (a call per key, 6% of a 512-token prefill).
        let mut qv = [_mm256_setzero_ps(); 8];
        for (c, x) in qv.iter_mut().enumerate() {
            // SAFETY: `q` holds 64 floats.
            *x = unsafe { _mm256_loadu_ps(q.as_ptr().add(8 * c)) };
        }
        let mut max = f32::NEG_INFINITY;
        let runs = scores.len() / KEYS_AT_ONCE * KEYS_AT_ONCE;
        for j in (0..runs).step_by(KEYS_AT_ONCE) {
            let rows = keys.run_of_64(j);
            let mut acc = [_mm256_setzero_ps(); KEYS_AT_ONCE];
            for (c, x) in qv.iter().enumerate() {
                for (a, k) in acc.iter_mut().zip(rows) {
                    // SAFETY: a key row holds 64 floats.
                    let y = unsafe { _mm256_loadu_ps(k.add(8 * c)) };
                    *a = _mm256_fmadd_ps(*x, y, *a);
                }
            }
            for (s, a) in scores[j..j + KEYS_AT_ONCE].iter_mut().zip(acc) {
                *s = hsum(a) * scale;
                max = max.max(*s);
            }
        }
        for (j, s) in scores.iter_mut().enumerate().skip(runs) {
            let k = keys.row(j, 64).as_ptr();
            let mut acc = _mm256_setzero_ps();
            for (c, x) in qv.iter().enumerate() {
                // SAFETY: a key row holds 64 floats.
                let y = unsafe { _mm256_loadu_ps(k.add(8 * c)) };
                acc = _mm256_fmadd_ps(*x, y, acc);
            }
            *s = hsum(acc) * scale;
            max = max.max(*s);
        }
        max
    }

    /// # Safety
    /// AVX2 and FMA are available; `acc.len()` is a multiple of 8; every value row is in bounds.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn mix_values(probs: &[f32], values: Rows<'_>, acc: &mut [f32]) {
        let dim = acc.len();
        // Up to 64 outputs at a time in registers, so each value row is read once per span.
        let mut c = 0;
        while c < dim {
            let width = (dim - c).min(64);
            // SAFETY: `c + width <= dim`, a multiple of 8 (the caller's contract).
            unsafe {
                match width / 8 {
                    8 => mix_span::<8>(probs, values, acc, c),
                    7 => mix_span::<7>(probs, values, acc, c),
                    6 => mix_span::<6>(probs, values, acc, c),
                    5 => mix_span::<5>(probs, values, acc, c),
                    4 => mix_span::<4>(probs, values, acc, c),
                    3 => mix_span::<3>(probs, values, acc, c),
                    2 => mix_span::<2>(probs, values, acc, c),
                    _ => mix_span::<1>(probs, values, acc, c),
                }
            }
            c += width;
        }
    }

    /// Outputs `c..c + 8N`: each summed over the rows in order, as the portable loop does.
    ///
    /// # Safety
    /// AVX2 and FMA are available; `c + 8N <= acc.len()` and every value row holds `acc.len()` floats.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mix_span<const N: usize>(probs: &[f32], values: Rows<'_>, acc: &mut [f32], c: usize) {
        let dim = acc.len();
        let mut sums = [_mm256_setzero_ps(); N];
        for (j, &p) in probs.iter().enumerate() {
            let v = values.row(j, dim).as_ptr();
            let pv = _mm256_set1_ps(p);
            for (k, sum) in sums.iter_mut().enumerate() {
                // SAFETY: `c + 8k + 8 <= dim` and the row holds `dim` floats.
                let x = unsafe { _mm256_loadu_ps(v.add(c + 8 * k)) };
                *sum = _mm256_fmadd_ps(pv, x, *sum);
            }
        }
        for (k, sum) in sums.iter().enumerate() {
            // SAFETY: `c + 8k + 8 <= dim = acc.len()`.
            unsafe { _mm256_storeu_ps(acc.as_mut_ptr().add(c + 8 * k), *sum) };
        }
    }

    /// Two rows' 256-bit registers side by side: `a` in the low half, `b` in the high one.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn pair(a: __m256, b: __m256) -> __m512 {
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castpd256_pd512(_mm256_castps_pd(a)),
            _mm256_castps_pd(b),
        ))
    }

    /// The eight floats at `p` in both halves of a register.
    ///
    /// # Safety
    /// Eight floats readable at `p`.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn both_halves(p: *const f32) -> __m512 {
        // SAFETY: the caller's contract.
        _mm512_castpd_ps(_mm512_broadcast_f64x4(unsafe { _mm256_loadu_pd(p.cast()) }))
    }

    /// The [`hsum`] of each half of eight registers, all in one: lanes `0..8` the low halves'
    /// (register `r` at lane `r`), lanes `8..16` the high halves'. Each sum is added in
    /// [`hsum`]'s order, `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn hsum_halves(v: [__m512; 8]) -> __m512 {
        // `l + (l + 4)`: register pairs to [r low, r high, r+1 low, r+1 high], four lanes each.
        let fold4 = |a: __m512, b: __m512| {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(a, b),
                _mm512_shuffle_f32x4::<0xDD>(a, b),
            )
        };
        // Then lanes `0 + 2` and `1 + 3` of each 128-bit block, two inputs to one register.
        let fold2 = |a: __m512, b: __m512| {
            _mm512_add_ps(
                _mm512_shuffle_ps::<0x44>(a, b),
                _mm512_shuffle_ps::<0xEE>(a, b),
            )
        };
        // Then `0 + 1`: block `i`, lane `e` is input `e`'s block `i` of `fold4`.
        let fold1 = |a: __m512, b: __m512| {
            _mm512_add_ps(
                _mm512_shuffle_ps::<0x88>(a, b),
                _mm512_shuffle_ps::<0xDD>(a, b),
            )
        };
        let p = [
            fold4(v[0], v[1]),
            fold4(v[2], v[3]),
            fold4(v[4], v[5]),
            fold4(v[6], v[7]),
        ];
        let f = fold1(fold2(p[0], p[1]), fold2(p[2], p[3]));
        // Lane `4i + e` holds register `2e + i / 2`'s half `i % 2`.
        let order = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
        _mm512_permutexvar_ps(order, f)
    }

    /// [`score_keys_64`] for two consecutive rows at once: `a` scores keys `0..a.len()`, `b`
    /// keys `0..b.len()`, one more; returns both maxima. Each register holds both rows' lanes,
    /// so every key is read once for both, and every score is [`score_keys_64`]'s.
    ///
    /// # Safety
    /// AVX-512 F, AVX2 and FMA are available; `qa` and `qb` hold 64 floats; `b.len() ==
    /// a.len() + 1`; every key row is in bounds.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn score_keys_pair_64(
        qa: &[f32],
        qb: &[f32],
        keys: Rows<'_>,
        scale: f32,
        a: &mut [f32],
        b: &mut [f32],
    ) -> (f32, f32) {
        let mut qv = [_mm512_setzero_ps(); 8];
        for (c, x) in qv.iter_mut().enumerate() {
            // SAFETY: both rows hold 64 floats.
            *x = unsafe {
                pair(
                    _mm256_loadu_ps(qa.as_ptr().add(8 * c)),
                    _mm256_loadu_ps(qb.as_ptr().add(8 * c)),
                )
            };
        }
        let n = a.len();
        let runs = n / KEYS_AT_ONCE * KEYS_AT_ONCE;
        let (scale_v, mut max) = (_mm512_set1_ps(scale), _mm512_set1_ps(f32::NEG_INFINITY));
        for j in (0..runs).step_by(KEYS_AT_ONCE) {
            let rows = keys.run_of_64(j);
            let mut acc = [_mm512_setzero_ps(); KEYS_AT_ONCE];
            for (c, x) in qv.iter().enumerate() {
                for (s, k) in acc.iter_mut().zip(rows) {
                    // SAFETY: a key row holds 64 floats.
                    *s = _mm512_fmadd_ps(*x, unsafe { both_halves(k.add(8 * c)) }, *s);
                }
            }
            let s = _mm512_mul_ps(hsum_halves(acc), scale_v);
            // SAFETY: `j + 8 <= runs <= a.len() < b.len()`.
            unsafe {
                _mm256_storeu_ps(a.as_mut_ptr().add(j), _mm512_castps512_ps256(s));
                _mm256_storeu_ps(
                    b.as_mut_ptr().add(j),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s))),
                );
            }
            // A NaN score is skipped, as `f32::max` skips it.
            max = _mm512_max_ps(s, max);
        }
        let mut lanes = [0f32; 16];
        // SAFETY: 16 floats.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), max) };
        let (mut max_a, mut max_b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for l in 0..8 {
            max_a = max_a.max(lanes[l]);
            max_b = max_b.max(lanes[8 + l]);
        }
        // The keys past the runs, and `b`'s last, one at a time.
        // SAFETY: the caller's contract.
        unsafe {
            max_a = max_a.max(score_keys_64(qa, keys.skip(runs), scale, &mut a[runs..]));
            max_b = max_b.max(score_keys_64(qb, keys.skip(runs), scale, &mut b[runs..]));
        }
        (max_a, max_b)
    }

    /// [`mix_values`] of 64-wide rows for two consecutive rows at once: `a` weighs value rows
    /// `0..a.len()`, `b` those and one more. Both rows' sums share registers, so every value
    /// row is read once for both; each sum is [`mix_values`]'.
    ///
    /// # Safety
    /// AVX-512 F, AVX2 and FMA are available; `b.len() == a.len() + 1`; every value row is in
    /// bounds.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn mix_values_pair_64(
        a: &[f32],
        b: &[f32],
        values: Rows<'_>,
        acc_a: &mut [f32],
        acc_b: &mut [f32; 64],
    ) {
        let n = a.len();
        let mut sums = [_mm512_setzero_ps(); 8];
        for (j, (&pa, &pb)) in a.iter().zip(b).enumerate() {
            let v = values.row(j, 64).as_ptr();
            let p = pair(_mm256_set1_ps(pa), _mm256_set1_ps(pb));
            for (k, sum) in sums.iter_mut().enumerate() {
                // SAFETY: a value row holds 64 floats.
                *sum = _mm512_fmadd_ps(p, unsafe { both_halves(v.add(8 * k)) }, *sum);
            }
        }
        let last = values.row(n, 64).as_ptr();
        let pb = _mm256_set1_ps(b[n]);
        for (k, sum) in sums.iter().enumerate() {
            let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*sum)));
            // SAFETY: the value row holds 64 floats; both outputs hold 64.
            unsafe {
                let high = _mm256_fmadd_ps(pb, _mm256_loadu_ps(last.add(8 * k)), high);
                _mm256_storeu_ps(acc_a.as_mut_ptr().add(8 * k), _mm512_castps512_ps256(*sum));
                _mm256_storeu_ps(acc_b.as_mut_ptr().add(8 * k), high);
            }
        }
    }
}

/// Head sizes up to this are accumulated on the stack (Llama models use 64 or 128).
const MAX_STACK_HEAD_DIM: usize = 256;

/// A dot product in a fixed order: eight running sums of fused multiply-adds (so it
/// vectorizes), added up the same way every time.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, a_rest) = a.split_at(a.len() - a.len() % 8);
    let (b8, b_rest) = b.split_at(a8.len());
    for (x, y) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] = x[l].mul_add(y[l], lanes[l]);
        }
    }
    let mut sum = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
        + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
    for (&x, &y) in a_rest.iter().zip(b_rest) {
        sum = x.mul_add(y, sum);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    /// Straightforward f64 attention: the definition. `q` is `[t, heads * dim]`, `k` and `v`
    /// `[positions, kv * dim]`.
    fn reference(q: &[f32], k: &[f32], v: &[f32], pos: usize, t: usize, h: Heads) -> Vec<f64> {
        let width = h.kv * h.dim;
        let mut y = vec![0f64; t * h.query * h.dim];
        for head in 0..h.query {
            let g = head / (h.query / h.kv);
            for i in 0..t {
                let seen = pos + i + 1;
                let s: Vec<f64> = (0..seen)
                    .map(|j| {
                        (0..h.dim)
                            .map(|d| {
                                q[(i * h.query + head) * h.dim + d] as f64
                                    * k[j * width + g * h.dim + d] as f64
                            })
                            .sum::<f64>()
                            / (h.dim as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..h.dim {
                    y[(i * h.query + head) * h.dim + d] = (0..seen)
                        .map(|j| e[j] / z * v[j * width + g * h.dim + d] as f64)
                        .sum();
                }
            }
        }
        y
    }

    #[test]
    fn matches_the_definition_and_does_not_depend_on_the_split() {
        let heads = Heads {
            query: 6,
            kv: 2,
            dim: 12,
        };
        let total = 11;
        let width = heads.kv * heads.dim;
        let mut seed = 7;
        let k: Vec<f32> = (0..total * width).map(|_| lcg(&mut seed)).collect();
        let v: Vec<f32> = (0..total * width).map(|_| lcg(&mut seed)).collect();
        // Queries for all positions, [total, heads * dim].
        let q_all: Vec<f32> = (0..heads.query * total * heads.dim)
            .map(|_| 3.0 * lcg(&mut seed))
            .collect();
        let kv = HostKv {
            keys: &k,
            values: &v,
            width,
            stride: width,
        };
        let (y_all, probs) = causal_attention(&q_all, kv, 0, total, heads, true);
        let want = reference(&q_all, &k, &v, 0, total, heads);
        for (a, b) in y_all.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
        let probs = probs.expect("kept");
        for row in probs.chunks(total) {
            let s: f32 = row.iter().sum();
            assert!((s - 1.0).abs() < 1e-5);
        }
        // The last 3 positions alone, after 8 cached ones: bit-identical rows.
        let (pos, t) = (8, 3);
        let row = heads.query * heads.dim;
        let (y_tail, _) = causal_attention(&q_all[pos * row..], kv, pos, t, heads, false);
        assert_eq!(y_tail[..], y_all[pos * row..]);
    }

    /// Two rows at once give each row's bits from one at a time, for every run length, tail
    /// and row layout, extreme scores included.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn row_pairs_give_the_single_row_bits() {
        if !wide512() {
            return;
        }
        let mut seed = 5;
        for (width, offset, n) in [
            (64, 0, 1),
            (192, 64, 7),
            (192, 128, 8),
            (64, 0, 9),
            (128, 64, 16),
            (64, 0, 17),
            (192, 0, 300),
        ] {
            let keys: Vec<f32> = (0..(n + 1) * width).map(|_| 4.0 * lcg(&mut seed)).collect();
            let values: Vec<f32> = (0..(n + 1) * width).map(|_| lcg(&mut seed)).collect();
            let rows = |data| Rows::new(data, width, offset);
            for magnitude in [1.0, 1e4] {
                let qa: Vec<f32> = (0..64).map(|_| magnitude * lcg(&mut seed)).collect();
                let qb: Vec<f32> = (0..64).map(|_| magnitude * lcg(&mut seed)).collect();
                let (mut a, mut b) = (vec![0f32; n], vec![0f32; n + 1]);
                // SAFETY: AVX-512 F, AVX2 and FMA checked above; 64-wide rows in bounds.
                let (max_a, max_b) = unsafe {
                    x86::score_keys_pair_64(&qa, &qb, rows(&keys), 0.125, &mut a, &mut b)
                };
                let (mut want_a, mut want_b) = (vec![0f32; n], vec![0f32; n + 1]);
                let want_max_a = score_keys_portable(&qa, rows(&keys), 0.125, &mut want_a);
                let want_max_b = score_keys_portable(&qb, rows(&keys), 0.125, &mut want_b);
                assert_eq!((a.clone(), b.clone()), (want_a, want_b), "n={n}");
                assert_eq!((max_a, max_b), (want_max_a, want_max_b));
                let (mut want_a, mut want_b) = (a.clone(), b.clone());
                normalize(&mut want_a, max_a);
                normalize(&mut want_b, max_b);
                normalize_pair(&mut a, max_a, &mut b, max_b);
                assert_eq!((&a, &b), (&want_a, &want_b), "n={n}");
                let (mut acc_a, mut acc_b) = (vec![0f32; 64], [0f32; 64]);
                // SAFETY: as above.
                unsafe { x86::mix_values_pair_64(&a, &b, rows(&values), &mut acc_a, &mut acc_b) };
                let (mut want_a, mut want_b) = (vec![0f32; 64], vec![0f32; 64]);
                mix_values_portable(&a, rows(&values), &mut want_a);
                mix_values_portable(&b, rows(&values), &mut want_b);
                assert_eq!(acc_a, want_a, "n={n}");
                assert_eq!(acc_b[..], want_b[..], "n={n}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_loops_give_the_portable_bits() {
        if !wide_vectors() {
            return;
        }
        let mut seed = 11;
        for (dim, width, offset, n) in [
            (64, 192, 64, 37),
            (64, 64, 0, 8),
            (64, 192, 128, 3),
            (8, 16, 8, 1),
            (128, 128, 0, 300),
            (72, 144, 72, 5),
            (24, 48, 0, 9),
        ] {
            let keys: Vec<f32> = (0..n * width).map(|_| 4.0 * lcg(&mut seed)).collect();
            let q: Vec<f32> = (0..dim).map(|_| lcg(&mut seed)).collect();
            let rows = Rows::new(&keys, width, offset);
            let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
            // SAFETY: AVX2 and FMA checked above; dim is a multiple of 8; rows are in bounds.
            let max_simd = unsafe { x86::score_keys(&q, rows, 0.125, &mut a) };
            let max_portable = score_keys_portable(&q, rows, 0.125, &mut b);
            assert_eq!(a, b);
            assert_eq!(max_simd, max_portable);
            let (mut x, mut y) = (vec![0f32; dim], vec![0f32; dim]);
            // SAFETY: as above.
            unsafe { x86::mix_values(&a, rows, &mut x) };
            mix_values_portable(&a, rows, &mut y);
            assert_eq!(x, y);
        }
    }
}
