//! Statistics over latency samples.

/// The `q`-quantile (0 ≤ q ≤ 1) of sorted samples, nearest rank: the smallest sample with at least
/// `q` of all samples at or below it (0 for no samples).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}
