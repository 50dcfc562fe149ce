//! The searches ggml's reference K-quant quantizers (`quantize_row_q{2,3,4,5,6}_K_ref`, what
//! `llama-quantize` runs without an importance matrix) make on each 16- or 32-value group: which
//! scale, offset and codes represent the group. Every sum and product is the f32 operation ggml
//! performs, in ggml's order (Rust never fuses them into FMAs), so the blocks built from these
//! choices are ggml's byte for byte.

use std::array::from_fn;

/// A group whose largest magnitude is below this counts as all zero (ggml's `GROUP_MAX_EPS`).
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// `v` rounded to the nearest integer, ties to even, the way ggml rounds: add 1.5 * 2^23 and read
/// the low mantissa bits. Exact for `|v| < 2^22`; outside that range (and for NaN) it gives the
/// same wrapped value ggml's does, which is what bit-exactness asks for.
#[inline(always)]
pub(super) fn nearest_int(v: f32) -> i32 {
    ((v + 12_582_912.0).to_bits() & 0x007F_FFFF) as i32 - 0x0040_0000
}

/// The first value of largest magnitude in `x`, or `None` when the group counts as all zero.
fn signed_max(x: &[f32]) -> Option<f32> {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (amax >= GROUP_MAX_EPS).then_some(max)
}

/// The first `N * L` values of `x` as `L` groups of `N`.
pub(super) fn groups<const N: usize, const L: usize>(x: &[f32]) -> [[f32; N]; L] {
    from_fn(|g| from_fn(|i| x[N * g + i]))
}

/// The steps of a scale search: candidate `i` (0..=`steps`) maps the group's range onto
/// `nmax + first + step * i` code steps.
#[derive(Clone, Copy)]
pub(super) struct ScaleSearch {
    pub(super) first: f32,
    pub(super) step: f32,
    pub(super) steps: i32,
}

/// Symmetric codes for Q6_K, for each of `L` groups of `N` values: `x ~ scale * (q - nmax)`
/// with `q` in `0..2 nmax`, returning each group's `scale`. The candidates are the scales that
/// map the value of largest magnitude to `-(nmax + 0.1 k)` for `k` in -9..=9; each candidate's
/// codes are the rounded `x / scale`, and the kept one has the least `x^2`-weighted squared
/// error once its scale is refit by least squares (the largest `(sum w x l)^2 / sum w l^2`); the
/// first wins ties. The returned scale is that refit. An all-zero group gets scale 0 and codes
/// 0. The groups are searched side by side, as in [`make_qkx2_quants`].
pub(super) fn make_qx_quants<const N: usize, const L: usize>(
    x: &[[f32; N]; L],
    nmax: i32,
    codes: &mut [[u8; N]; L],
) -> [f32; L] {
    let maxes = x.map(|xs| signed_max(&xs));
    // All-zero groups' lanes compute unused values.
    let max = maxes.map(|m| m.unwrap_or(1.0));
    let xt: [[f32; L]; N] = from_fn(|i| from_fn(|g| x[g][i]));
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    // (sum w x l, sum w l^2) with w = x^2.
    let sums = |iscale: &[f32; L]| {
        let (mut lx, mut l2) = ([0f32; L], [0f32; L]);
        for v in &xt {
            for g in 0..L {
                let (l, w) = (code(iscale[g], v[g]) as f32, v[g] * v[g]);
                lx[g] += w * v[g] * l;
                l2[g] += w * l * l;
            }
        }
        (lx, l2)
    };
    let take = |iscale: &[f32; L], lanes: &[bool; L], best: &mut [[u8; L]; N]| {
        let mask = lane_mask(lanes);
        for (q, v) in best.iter_mut().zip(&xt) {
            let new = from_fn(|g| (code(iscale[g], v[g]) + nmax) as u8);
            blend(q, &new, &mask);
        }
    };
    let iscale = max.map(|m| -(nmax as f32) / m);
    let (sumlx, suml2) = sums(&iscale);
    let mut best = [[0u8; L]; N];
    take(&iscale, &[true; L], &mut best);
    let mut scale: [f32; L] = from_fn(|g| {
        if suml2[g] != 0.0 {
            sumlx[g] / suml2[g]
        } else {
            0.0
        }
    });
    let mut best_fit: [f32; L] = from_fn(|g| scale[g] * sumlx[g]);
    for k in (-9..=9).filter(|&k| k != 0) {
        let iscale = max.map(|m| -(nmax as f32 + 0.1 * k as f32) / m);
        let (sumlx, suml2) = sums(&iscale);
        let better = from_fn(|g| suml2[g] > 0.0 && sumlx[g] * sumlx[g] > best_fit[g] * suml2[g]);
        if !better.contains(&true) {
            continue;
        }
        take(&iscale, &better, &mut best);
        for g in (0..L).filter(|&g| better[g]) {
            scale[g] = sumlx[g] / suml2[g];
            best_fit[g] = scale[g] * sumlx[g];
        }
    }
    for (g, group) in codes.iter_mut().enumerate() {
        *group = from_fn(|i| if maxes[g].is_some() { best[i][g] } else { 0 });
    }
    from_fn(|g| if maxes[g].is_some() { scale[g] } else { 0.0 })
}

/// Symmetric codes for Q3_K: `x ~ scale * (q - nmax)` with `q` in `0..2 nmax`, returning
/// `scale`. Start from the codes that map the value of largest magnitude to `-nmax`, then, for
/// up to five sweeps, move single codes to their least-squares best whenever that raises the
/// `x^2`-weighted `(sum w x l)^2 / sum w l^2`; the scale is the least-squares one for the final
/// codes. An all-zero group gets scale 0 and codes 0.
pub(super) fn make_q3_quants<const N: usize>(x: &[f32; N], nmax: i32, codes: &mut [u8; N]) -> f32 {
    let Some(max) = signed_max(x) else {
        *codes = [0; N];
        return 0.0;
    };
    let iscale = -(nmax as f32) / max;
    let mut l: [i32; N] = from_fn(|i| nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1));
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (&v, &li) in x.iter().zip(&l) {
        let (li, w) = (li as f32, v * v);
        sumlx += w * v * li;
        suml2 += w * li * li;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (&v, li) in x.iter().zip(l.iter_mut()) {
            let (w, old) = (v * v, *li as f32);
            // The sums without this value's term.
            let slx = sumlx - w * v * old;
            if slx > 0.0 {
                let sl2 = suml2 - w * old * old;
                let new = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new != *li {
                    let (slx, sl2) = (slx + w * v * new as f32, sl2 + w * new as f32 * new as f32);
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        (*li, sumlx, suml2) = (new, slx, sl2);
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (q, &li) in codes.iter_mut().zip(&l) {
        *q = (li + nmax) as u8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Codes with an offset for Q2_K, Q4_K and Q5_K, for each of `L` groups of `N` values:
/// `x ~ scale * q - min` with `q` in `0..=nmax` and `min >= 0`, returning each group's
/// `(scale, min)`. The first candidate spans `[min(x, 0), max(x)]` with `nmax` steps; each step
/// of `search` rounds the values onto another number of steps over that span and refits scale
/// and offset by `weights`-weighted least squares (the offset capped at 0, the scale then refit
/// alone). The kept candidate has the least weighted error, absolute (`mad`) or squared; the
/// first wins ties, and later steps span from the kept offset. A group with nothing to span
/// (all values equal and not positive) gets scale 0, codes 0 and `min = -x`.
///
/// The groups are searched side by side, one lane each: every lane does the f32 operations of
/// the one-group search in the same order, so the lanes only add independent work for the CPU
/// to overlap (the sums are chains of dependent adds).
pub(super) fn make_qkx2_quants<const N: usize, const L: usize>(
    x: &[[f32; N]; L],
    weights: &[[f32; N]; L],
    nmax: i32,
    search: ScaleSearch,
    mad: bool,
    codes: &mut [[u8; N]; L],
) -> [(f32, f32); L] {
    // Value `i` of every group side by side.
    let xt: [[f32; L]; N] = from_fn(|i| from_fn(|g| x[g][i]));
    let wt: [[f32; L]; N] = from_fn(|i| from_fn(|g| weights[g][i]));
    let (mut min, mut max) = (xt[0], xt[0]);
    let mut sum_w = wt[0];
    let mut sum_x: [f32; L] = from_fn(|g| sum_w[g] * xt[0][g]);
    for (v, w) in xt.iter().zip(&wt).skip(1) {
        for g in 0..L {
            if v[g] < min[g] {
                min[g] = v[g];
            }
            if v[g] > max[g] {
                max[g] = v[g];
            }
            sum_w[g] += w[g];
            sum_x[g] += w[g] * v[g];
        }
    }
    min = min.map(|m| if m > 0.0 { 0.0 } else { m });
    // Groups with nothing to span; their lanes compute unused values.
    let (flat, flat_min): ([bool; L], _) = (from_fn(|g| max[g] == min[g]), min);
    let round = |iscale: &[f32; L], min: &[f32; L], codes: &mut [[u8; L]; N]| {
        offset_codes(&xt, iscale, min, nmax, codes)
    };
    let error = |scale: &[f32; L], min: &[f32; L], codes: &[[u8; L]; N]| {
        offset_error(&xt, &wt, scale, min, mad, codes)
    };
    let iscale: [f32; L] = from_fn(|g| nmax as f32 / (max[g] - min[g]));
    let mut scale = iscale.map(|s| 1.0 / s);
    let mut best = [[0u8; L]; N];
    round(&iscale, &min, &mut best);
    let mut best_error = error(&scale, &min, &best);
    let mut trial = [[0u8; L]; N];
    for i in 0..=search.steps {
        let steps = search.first + search.step * i as f32 + nmax as f32;
        let iscale: [f32; L] = from_fn(|g| steps / (max[g] - min[g]));
        round(&iscale, &min, &mut trial);
        let (mut sum_l, mut sum_l2, mut sum_xl) = ([0f32; L], [0f32; L], [0f32; L]);
        for ((q, v), w) in trial.iter().zip(&xt).zip(&wt) {
            for g in 0..L {
                let l = q[g] as f32;
                sum_l[g] += w[g] * l;
                sum_l2[g] += w[g] * l * l;
                sum_xl[g] += w[g] * l * v[g];
            }
        }
        let (mut this_scale, mut this_min, mut fits) = ([0f32; L], [0f32; L], [false; L]);
        for g in 0..L {
            let det = sum_w[g] * sum_l2[g] - sum_l[g] * sum_l[g];
            fits[g] = det > 0.0;
            let m = (sum_l2[g] * sum_x[g] - sum_l[g] * sum_xl[g]) / det;
            (this_scale[g], this_min[g]) = if m > 0.0 {
                (sum_xl[g] / sum_l2[g], 0.0)
            } else {
                ((sum_w[g] * sum_xl[g] - sum_x[g] * sum_l[g]) / det, m)
            };
        }
        let this_error = error(&this_scale, &this_min, &trial);
        let better: [bool; L] = from_fn(|g| fits[g] && this_error[g] < best_error[g]);
        if !better.contains(&true) {
            continue;
        }
        let mask = lane_mask(&better);
        for (b, t) in best.iter_mut().zip(&trial) {
            blend(b, t, &mask);
        }
        for g in 0..L {
            if better[g] {
                (best_error[g], scale[g], min[g]) = (this_error[g], this_scale[g], this_min[g]);
            }
        }
    }
    for (g, group) in codes.iter_mut().enumerate() {
        *group = from_fn(|i| if flat[g] { 0 } else { best[i][g] });
    }
    from_fn(|g| {
        if flat[g] {
            (0.0, -flat_min[g])
        } else {
            (scale[g], -min[g])
        }
    })
}

/// Each lane's codes `round(iscale * (x - min))`, clamped to `0..=nmax`.
#[inline(always)]
fn offset_codes<const N: usize, const L: usize>(
    xt: &[[f32; L]; N],
    iscale: &[f32; L],
    min: &[f32; L],
    nmax: i32,
    codes: &mut [[u8; L]; N],
) {
    for (q, v) in codes.iter_mut().zip(xt) {
        for g in 0..L {
            q[g] = nearest_int(iscale[g] * (v[g] - min[g])).clamp(0, nmax) as u8;
        }
    }
}

/// Each lane's weighted error of `scale * q + min` against `x`, absolute (`mad`) or squared.
#[inline(always)]
fn offset_error<const N: usize, const L: usize>(
    xt: &[[f32; L]; N],
    wt: &[[f32; L]; N],
    scale: &[f32; L],
    min: &[f32; L],
    mad: bool,
    codes: &[[u8; L]; N],
) -> [f32; L] {
    let mut sum = [0f32; L];
    for ((q, v), w) in codes.iter().zip(xt).zip(wt) {
        for g in 0..L {
            let diff = scale[g] * q[g] as f32 + min[g] - v[g];
            sum[g] += w[g] * if mad { diff.abs() } else { diff * diff };
        }
    }
    sum
}

/// 0xFF in the lanes that are set, 0 elsewhere.
#[inline(always)]
fn lane_mask<const L: usize>(lanes: &[bool; L]) -> [u8; L] {
    lanes.map(|b| 0u8.wrapping_sub(b as u8))
}

/// `to` takes `from`'s codes in the lanes `mask` sets (branch-free, so it vectorizes).
#[inline(always)]
fn blend<const L: usize>(to: &mut [u8; L], from: &[u8; L], mask: &[u8; L]) {
    for g in 0..L {
        to[g] = (from[g] & mask[g]) | (to[g] & !mask[g]);
    }
}
