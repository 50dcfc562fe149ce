//! RMSNorm as ggml computes it, and the residual add.

/// ggml's RMSNorm then its multiply by the weight: the sum of squares in f64, `scale` in f32.
pub(super) fn rms_norm(x: &[f32], weight: &[f32], eps: f64, out: &mut [f32]) {
    let n = weight.len();
    for (xr, yr) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum: f64 = xr.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps as f32).sqrt();
        for ((y, &v), &w) in yr.iter_mut().zip(xr).zip(weight) {
            *y = (v * scale) * w;
        }
    }
}

pub(super) fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
