//! The machine's memory read bandwidth, measured, so that a decode speed can be put next to
//! the physical limit: a decode step reads every weight once.

use std::time::Instant;

use crate::error::{Error, Result};

/// Best-of-`repeats` GB/s (1e9 bytes per second) of `threads` threads together reading a
/// `megabytes` buffer (much larger than the caches) once, each its own contiguous share.
pub fn measure_read_bandwidth(threads: usize, megabytes: usize, repeats: usize) -> Result<f64> {
    if threads == 0 || megabytes == 0 || repeats == 0 {
        return Err(Error::invalid(
            "threads, megabytes and repeats must all be at least 1",
        ));
    }
    let words = megabytes
        .checked_mul(1 << 20)
        .ok_or_else(|| Error::invalid("buffer size overflows"))?
        / 8;
    // Written once so that every page is really there (a zeroed allocation would read the
    // shared zero page).
    let data: Vec<u64> = (0..words as u64).collect();
    let chunk = words.div_ceil(threads);
    let mut best = f64::INFINITY;
    let mut checksum = 0u64;
    for _ in 0..repeats {
        let start = Instant::now();
        let sums: Vec<u64> = std::thread::scope(|scope| {
            let handles: Vec<_> = data
                .chunks(chunk)
                .map(|part| scope.spawn(move || sum_words(part)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
        });
        best = best.min(start.elapsed().as_secs_f64());
        checksum = checksum.wrapping_add(sums.iter().fold(0, |a, &b| a.wrapping_add(b)));
    }
    std::hint::black_box(checksum);
    Ok((words * 8) as f64 / best / 1e9)
}

/// A plain wrapping sum: the compiler turns it into wide vector adds, so the loop is bound by
/// loads (an array of explicit running sums measured 8x slower here: it stays in memory).
fn sum_words(part: &[u64]) -> u64 {
    part.iter().fold(0u64, |a, &x| a.wrapping_add(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_something_positive_and_rejects_zero() {
        let gbs = measure_read_bandwidth(2, 8, 2).expect("measured");
        assert!(gbs.is_finite() && gbs > 0.0);
        assert!(measure_read_bandwidth(0, 8, 1).is_err());
        assert!(measure_read_bandwidth(1, 0, 1).is_err());
    }
}
