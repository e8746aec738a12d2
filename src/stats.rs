//! Summary statistics shared by timing, evaluation reports and benchmarks.

use serde::{Deserialize, Serialize};

/// Median and 10th/90th percentiles of repeated timings, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimingStats {
    pub median_ns: f64,
    pub p10_ns: f64,
    pub p90_ns: f64,
    pub runs: usize,
}

impl TimingStats {
    /// Computes the statistics of `samples_ns`. Percentiles interpolate linearly between order
    /// statistics. Returns `None` for an empty slice.
    pub fn from_samples(samples_ns: &[f64]) -> Option<Self> {
        if samples_ns.is_empty() {
            return None;
        }
        let mut sorted = samples_ns.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        Some(TimingStats {
            median_ns: percentile_sorted(&sorted, 0.5),
            p10_ns: percentile_sorted(&sorted, 0.1),
            p90_ns: percentile_sorted(&sorted, 0.9),
            runs: sorted.len(),
        })
    }
}

/// Linear-interpolated percentile `q` in [0, 1] of an ascending slice.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lower = pos.floor() as usize;
    let upper = pos.ceil() as usize;
    let frac = pos - lower as f64;
    // The step from the lower value, not a weighted sum of both: equal neighbours then give
    // their value exactly, so the percentiles of equal samples cannot come out of order.
    sorted[lower] + (sorted[upper] - sorted[lower]) * frac
}

/// Kendall rank correlation τ-b between two equally long slices (ties handled). O(n²), which
/// is fine for the few thousand points of an evaluation report.
pub fn kendall_tau(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "kendall_tau needs slices of equal length");
    let n = x.len();
    let (mut concordant, mut discordant, mut ties_x, mut ties_y) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in (i + 1)..n {
            let dx = x[i] - x[j];
            let dy = y[i] - y[j];
            if dx == 0.0 && dy == 0.0 {
                continue;
            } else if dx == 0.0 {
                ties_x += 1;
            } else if dy == 0.0 {
                ties_y += 1;
            } else if (dx > 0.0) == (dy > 0.0) {
                concordant += 1;
            } else {
                discordant += 1;
            }
        }
    }
    let denom = (((concordant + discordant + ties_x) as f64) * ((concordant + discordant + ties_y) as f64)).sqrt();
    if denom == 0.0 {
        0.0
    } else {
        (concordant - discordant) as f64 / denom
    }
}

/// Spearman rank correlation ρ, with average ranks for ties.
pub fn spearman_rho(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "spearman_rho needs slices of equal length");
    pearson(&ranks(x), &ranks(y))
}

/// Pearson correlation; 0 when either input is constant.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    if n == 0.0 {
        return 0.0;
    }
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Average ranks (1-based) of `values`, ties sharing their mean rank.
pub fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

/// Mean absolute percentage error, as a fraction (0.05 is 5%).
pub fn mape(predicted: &[f64], actual: &[f64]) -> f64 {
    let n = predicted.len().max(1) as f64;
    predicted.iter().zip(actual).map(|(p, a)| ((p - a) / a).abs()).sum::<f64>() / n
}

/// Share of predictions within ±`tolerance` (relative) of the actual value.
pub fn within(predicted: &[f64], actual: &[f64], tolerance: f64) -> f64 {
    let n = predicted.len().max(1) as f64;
    predicted.iter().zip(actual).filter(|(p, a)| ((*p - *a) / *a).abs() <= tolerance).count() as f64 / n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let samples: Vec<f64> = (1..=11).map(f64::from).collect();
        let stats = TimingStats::from_samples(&samples).unwrap();
        assert_eq!(stats.median_ns, 6.0);
        assert_eq!(stats.p10_ns, 2.0);
        assert_eq!(stats.p90_ns, 10.0);
        assert_eq!(stats.runs, 11);
        assert!(TimingStats::from_samples(&[]).is_none());
    }

    #[test]
    fn equal_samples_give_equal_percentiles() {
        // 751 * 0.8 + 751 * 0.2 rounds to 751.0000000000001, above the median.
        let stats = TimingStats::from_samples(&[751.0, 751.0, 751.0]).unwrap();
        assert_eq!(stats.p10_ns, 751.0);
        assert_eq!(stats.median_ns, 751.0);
        assert_eq!(stats.p90_ns, 751.0);
    }

    #[test]
    fn kendall_known_values() {
        assert_eq!(kendall_tau(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 1.0);
        assert_eq!(kendall_tau(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), -1.0);
        // Pairs: (1,2) concordant, (1,3) concordant, (2,3) discordant: (2-1)/3.
        let tau = kendall_tau(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]);
        assert!((tau - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn spearman_with_ties() {
        assert_eq!(ranks(&[10.0, 20.0, 20.0, 5.0]), vec![2.0, 3.5, 3.5, 1.0]);
        assert!((spearman_rho(&[1.0, 2.0, 3.0, 4.0], &[2.0, 4.0, 6.0, 8.0]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn mape_and_within() {
        let p = [1.05, 2.0, 3.6];
        let a = [1.0, 2.0, 3.0];
        assert!((mape(&p, &a) - (0.05 + 0.0 + 0.2) / 3.0).abs() < 1e-12);
        assert!((within(&p, &a, 0.1) - 2.0 / 3.0).abs() < 1e-12);
    }
}
