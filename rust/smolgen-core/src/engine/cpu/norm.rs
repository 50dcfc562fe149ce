//! RMSNorm as ggml computes it, and the residual add.

/// ggml's RMSNorm then its multiply by the weight: the sum of squares in f64, `scale` in f32.
pub(super) fn rms_norm(x: &[f32], weight: &[f32], eps: f64, out: &mut [f32]) {
    let n = weight.len();
    for (xr, yr) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let mean = (sum_of_squares(xr) / n as f64) as f32;
        let scale = 1.0 / (mean + eps as f32).sqrt();
        for ((y, &v), &w) in yr.iter_mut().zip(xr).zip(weight) {
            *y = (v * scale) * w;
        }
    }
}

/// The f32 squares of `x` summed in f64, as ggml sums them but in eight interleaved partial sums:
/// one running sum is a chain of dependent f64 additions, which made the norms a tenth of a
/// short prompt's prefill. The f64 sums differ from ggml's one running sum by a few units in
/// their last place, which leaves the f32 mean as it is except at a rounding tie.
fn sum_of_squares(x: &[f32]) -> f64 {
    const LANES: usize = 8;
    let mut partial = [0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|&v| (v * v) as f64).sum();
    for chunk in chunks {
        for (p, &v) in partial.iter_mut().zip(chunk) {
            *p += (v * v) as f64;
        }
    }
    partial.iter().sum::<f64>() + tail
}

pub(super) fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
