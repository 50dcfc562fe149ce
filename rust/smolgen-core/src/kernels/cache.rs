//! Whether a model's weights stay in the last-level cache between tokens.
//!
//! A decode reads every weight once per token. While they all fit the last-level cache they
//! come from there; beyond it, from memory, and the kernels' software prefetch wants another
//! hint (`QWeight::cold`). Measured on a 480 MiB L3 (two threads): the 135M files (100-150
//! MB) decode faster prefetching into L1, the 1.7B ones (0.7-1.8 GB) into L2, and the 360M ones
//! (220-390 MB) about alike either way, since the cache also holds the KV cache and the other
//! threads' data: so the line is drawn at half the cache.

use std::sync::OnceLock;

/// Whether `weight_bytes` of weights exceed half the last-level cache. Where the cache's size
/// is unknown (not Linux, no sysfs), false: the kernels keep their default hint.
pub fn exceeds_last_level_cache(weight_bytes: usize) -> bool {
    last_level_cache_bytes().is_some_and(|llc| weight_bytes > llc / 2)
}

/// The size of CPU 0's last-level data (or unified) cache, read once from sysfs.
pub fn last_level_cache_bytes() -> Option<usize> {
    static LLC: OnceLock<Option<usize>> = OnceLock::new();
    *LLC.get_or_init(|| {
        let caches = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
        caches
            .filter_map(|entry| {
                let dir = entry.ok()?.path();
                let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
                if read("type")?.trim() == "Instruction" {
                    return None;
                }
                let level: u32 = read("level")?.trim().parse().ok()?;
                Some((level, parse_cache_size(read("size")?.trim())?))
            })
            .max()
            .map(|(_, bytes)| bytes)
    })
}

/// A sysfs cache size (`48K`, `2048K`, `480M`, or bytes) in bytes.
fn parse_cache_size(s: &str) -> Option<usize> {
    let (digits, unit) = match s.strip_suffix(['K', 'M', 'G']) {
        Some(d) => (d, &s[d.len()..]),
        None => (s, ""),
    };
    let n: usize = digits.parse().ok()?;
    let scale = match unit {
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => 1,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_cache_sizes_parse() {
        assert_eq!(parse_cache_size("48K"), Some(48 << 10));
        assert_eq!(parse_cache_size("491520K"), Some(480 << 20));
        assert_eq!(parse_cache_size("32M"), Some(32 << 20));
        assert_eq!(parse_cache_size("1G"), Some(1 << 30));
        assert_eq!(parse_cache_size("4096"), Some(4096));
        assert_eq!(parse_cache_size(""), None);
        assert_eq!(parse_cache_size("K"), None);
        assert_eq!(parse_cache_size("12Q"), None);
        assert_eq!(parse_cache_size("99999999999999999999G"), None);
    }

    #[test]
    fn small_weights_stay_warm() {
        assert!(!exceeds_last_level_cache(0));
        if let Some(llc) = last_level_cache_bytes() {
            assert!(llc > 0);
            assert!(!exceeds_last_level_cache(llc / 2));
            assert!(exceeds_last_level_cache(llc / 2 + 1));
        }
    }
}
