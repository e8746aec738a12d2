//! Accuracy of predictions against true values: errors, ranking and calibration.

use serde::Serialize;

use crate::stats::{kendall_tau, mape, spearman_rho, within};

/// Accuracy of one target's predictions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetMetrics {
    pub target: String,
    pub n: usize,
    /// Mean absolute error, in the target's units.
    pub mae: f64,
    /// Mean absolute percentage error, as a fraction.
    pub mape: f64,
    /// Share of predictions within ±10% of the true value.
    pub within_10pct: f64,
    pub kendall_tau: f64,
    pub spearman_rho: f64,
    /// Share of true values inside mean ± 2 std; `None` for a model without uncertainty.
    pub calibration_2sigma: Option<f64>,
}

impl TargetMetrics {
    /// Scores `predicted` against `actual`; `std` gives the calibration when present.
    pub fn compute(target: &str, predicted: &[f64], std: Option<&[f64]>, actual: &[f64]) -> TargetMetrics {
        let n = actual.len();
        let mae = predicted.iter().zip(actual).map(|(p, a)| (p - a).abs()).sum::<f64>() / n.max(1) as f64;
        let calibration_2sigma = std.map(|s| {
            let inside = predicted.iter().zip(s).zip(actual).filter(|((p, s), a)| (*p - *a).abs() <= 2.0 * *s).count();
            inside as f64 / n.max(1) as f64
        });
        TargetMetrics {
            target: target.to_string(),
            n,
            mae,
            mape: mape(predicted, actual),
            within_10pct: within(predicted, actual, 0.10),
            kendall_tau: rank_or_nan(kendall_tau, predicted, actual),
            spearman_rho: rank_or_nan(spearman_rho, predicted, actual),
            calibration_2sigma,
        }
    }
}

impl TargetMetrics {
    /// Scores a ranking proxy (a column in other units than the target): only Kendall τ and
    /// Spearman ρ mean anything, so the error fields are NaN (null in JSON).
    pub fn ranking_only(target: &str, proxy: &[f64], actual: &[f64]) -> TargetMetrics {
        TargetMetrics {
            target: target.to_string(),
            n: actual.len(),
            mae: f64::NAN,
            mape: f64::NAN,
            within_10pct: f64::NAN,
            kendall_tau: rank_or_nan(kendall_tau, proxy, actual),
            spearman_rho: rank_or_nan(spearman_rho, proxy, actual),
            calibration_2sigma: None,
        }
    }
}

/// Applies a rank correlation, or returns NaN (shown as "-") for fewer than two rows, which
/// have no pair to rank.
fn rank_or_nan(correlation: fn(&[f64], &[f64]) -> f64, x: &[f64], y: &[f64]) -> f64 {
    if y.len() < 2 {
        f64::NAN
    } else {
        correlation(x, y)
    }
}

/// Formats metrics as an aligned text table, one line per (model, target).
pub fn format_table(rows: &[(String, TargetMetrics)]) -> String {
    let mut out = format!("{:<26} {:<24} {:>6} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8}\n", "model", "target", "n", "mae", "mape", "±10%", "tau", "rho", "in±2σ");
    // A ranking proxy has no errors (NaN), shown as "-" like a missing calibration. Large
    // values take the exponent form, so a wild error cannot push the columns apart.
    let cell = |value: f64, digits: usize| {
        if value.is_nan() {
            "-".to_string()
        } else if value.abs() >= 1e9 {
            format!("{value:.3e}")
        } else {
            format!("{value:.digits$}")
        }
    };
    for (model, m) in rows {
        let calibration = m.calibration_2sigma.map(|c| format!("{:.3}", c)).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<26} {:<24} {:>6} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            model,
            m.target,
            m.n,
            cell(m.mae, 5),
            cell(m.mape, 4),
            cell(m.within_10pct, 3),
            cell(m.kendall_tau, 4),
            cell(m.spearman_rho, 4),
            calibration
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_known_predictions() {
        let actual = [1.0, 2.0, 4.0, 8.0];
        let predicted = [1.05, 2.5, 4.0, 7.0];
        let std = [0.1, 0.1, 0.1, 1.0];
        let m = TargetMetrics::compute("t", &predicted, Some(&std), &actual);
        assert!((m.mae - (0.05 + 0.5 + 0.0 + 1.0) / 4.0).abs() < 1e-12);
        assert_eq!(m.within_10pct, 0.5);
        assert_eq!(m.kendall_tau, 1.0);
        assert_eq!(m.calibration_2sigma, Some(0.75));
        assert_eq!(TargetMetrics::compute("t", &predicted, None, &actual).calibration_2sigma, None);
    }
}

/// Out-of-fold predictions of a k-fold cross-validation, row-aligned with the input.
#[derive(Debug, Clone)]
pub struct CrossValidation {
    /// Ensemble mean, `n × n_targets`, each row predicted by the model that did not see it.
    pub mean: Vec<Vec<f64>>,
    /// Ensemble standard deviation, shaped like `mean`.
    pub std: Vec<Vec<f64>>,
    /// Least-squares predictions on the same folds, shaped like `mean`.
    pub ols: Vec<Vec<f64>>,
}

/// Runs `folds`-fold cross-validation of the ensemble and of least squares. Rows are shuffled
/// with `cfg.seed` before being dealt into folds, so each fold is a random subset.
pub fn cross_validate(x: &[Vec<f64>], y: &[Vec<f64>], feature_names: &[String], target_names: &[String], cfg: &super::EnsembleConfig, folds: usize) -> crate::Result<CrossValidation> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    let n = x.len();
    if folds < 2 || folds > n {
        return Err(super::SurrogateError::Invalid(format!("folds ({folds}) must be at least 2 and at most the number of rows ({n})")).into());
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(cfg.seed));

    let t = target_names.len();
    let mut result = CrossValidation { mean: vec![vec![0.0; t]; n], std: vec![vec![0.0; t]; n], ols: vec![vec![0.0; t]; n] };
    for fold in 0..folds {
        let test_rows: Vec<usize> = order.iter().enumerate().filter(|(i, _)| i % folds == fold).map(|(_, &r)| r).collect();
        let train_rows: Vec<usize> = order.iter().enumerate().filter(|(i, _)| i % folds != fold).map(|(_, &r)| r).collect();
        let pick = |rows: &[usize], source: &[Vec<f64>]| rows.iter().map(|&r| source[r].clone()).collect::<Vec<_>>();
        let (train_x, train_y) = (pick(&train_rows, x), pick(&train_rows, y));
        log::info!("cross-validation fold {} of {folds}: {} training rows, {} test rows", fold + 1, train_rows.len(), test_rows.len());

        let model = super::Ensemble::fit(&train_x, &train_y, feature_names.to_vec(), target_names.to_vec(), cfg)?;
        let test_x: Vec<f32> = test_rows.iter().flat_map(|&r| x[r].iter().map(|&v| v as f32)).collect();
        let prediction = model.predict(&test_x, test_rows.len());
        let linear = super::ols::LinearModel::fit(&train_x, &train_y)?;
        for (i, &r) in test_rows.iter().enumerate() {
            for k in 0..t {
                result.mean[r][k] = f64::from(prediction.mean_at(i, k));
                result.std[r][k] = f64::from(prediction.std_at(i, k));
            }
            result.ols[r] = linear.predict_row(&x[r]);
        }
    }
    Ok(result)
}
