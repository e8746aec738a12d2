//! The surrogate interface the search uses, and a small built-in surrogate.
//!
//! [`Surrogate`] is what the tree needs from a model: a fit on all data so far (a warm-start
//! refit where the model supports it) and batched prediction of mean and standard deviation
//! per target in one call. [`MlpSurrogate`] wraps the crate's MLP ensemble, and
//! [`RidgeEnsemble`] is a bootstrap ensemble of ridge regressions on quadratic features that
//! fits in milliseconds, for cheap evaluators where refit time would dominate.
//! [`SearchConfig::surrogate`](super::SearchConfig::surrogate) picks one, and
//! [`SearchHooks::make_surrogate`](super::SearchHooks::make_surrogate) can supply any other.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Predictions for `n` rows: `mean` and `std` are row-major `n × n_targets`, in the targets'
/// original units.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub n_targets: usize,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// A regression model over candidate features that the search fits and queries.
pub trait Surrogate: Send {
    /// Short name written to `summary.json`.
    fn name(&self) -> &str;

    /// Fits the model on all rows so far: `x` contains one feature vector per row and `y` one
    /// target vector per row. Called again after each round with the grown data, so a model
    /// may warm-start from its previous weights.
    fn fit(&mut self, x: &[Vec<f64>], y: &[Vec<f64>]) -> crate::Result<()>;

    /// Predicts `n` rows of the row-major feature matrix `x` in one call (one GPU dispatch
    /// for a GPU model).
    fn score(&mut self, x: &[f32], n: usize) -> crate::Result<Prediction>;

    /// Number of [`Surrogate::score`] calls that reached the device (or the CPU) so far.
    fn dispatches(&self) -> u64;
}

/// Bootstrap ensemble of ridge regressions on standardised features, their squares and a
/// random subset of pairwise products per member.
///
/// Targets that are positive in all rows are fitted in log space, so multiplicative effects
/// (latency, perplexity) stay near-linear. The standard deviation is the spread of the member
/// predictions, which reflects how much the bootstrap samples disagree.
#[derive(Debug, Clone)]
pub struct RidgeEnsemble {
    members: usize,
    pairs_per_member: usize,
    lambda: f64,
    seed: u64,
    fitted: Option<Fitted>,
    dispatches: u64,
}

#[derive(Debug, Clone)]
struct Fitted {
    n_features: usize,
    x_mean: Vec<f64>,
    x_scale: Vec<f64>,
    n_targets: usize,
    log_target: Vec<bool>,
    y_mean: Vec<f64>,
    y_scale: Vec<f64>,
    members: Vec<Member>,
}

#[derive(Debug, Clone)]
struct Member {
    pairs: Vec<(usize, usize)>,
    /// `n_basis × n_targets`, row-major.
    weights: Vec<f64>,
}

impl RidgeEnsemble {
    /// Creates an ensemble of `members` models, each with up to `pairs_per_member` pairwise products,
    /// ridge penalty `lambda` (on standardised data) and a `seed` for the bootstrap.
    pub fn new(members: usize, pairs_per_member: usize, lambda: f64, seed: u64) -> Self {
        RidgeEnsemble {
            members: members.max(1),
            pairs_per_member,
            lambda,
            seed,
            fitted: None,
            dispatches: 0,
        }
    }

    /// Creates the default ensemble: 8 members, 48 pairwise products each, penalty 1.
    pub fn with_seed(seed: u64) -> Self {
        RidgeEnsemble::new(8, 48, 1.0, seed)
    }
}

fn n_basis(n_features: usize, n_pairs: usize) -> usize {
    1 + 2 * n_features + n_pairs
}

/// Writes the basis of one standardised row `z` into `out`: bias, linear, squares, products.
fn fill_basis(z: &[f64], pairs: &[(usize, usize)], out: &mut Vec<f64>) {
    out.clear();
    out.push(1.0);
    out.extend_from_slice(z);
    out.extend(z.iter().map(|v| v * v));
    out.extend(pairs.iter().map(|&(a, b)| z[a] * z[b]));
}

/// Solves `a · x = b` for a symmetric positive definite `a` (`p × p`) and `t` right-hand
/// sides (`b` is `p × t`, row-major) by Cholesky decomposition. Returns `None` when `a` is not
/// positive definite.
fn cholesky_solve(mut a: Vec<f64>, p: usize, mut b: Vec<f64>, t: usize) -> Option<Vec<f64>> {
    for j in 0..p {
        let mut diag = a[j * p + j];
        for k in 0..j {
            diag -= a[j * p + k] * a[j * p + k];
        }
        if diag <= 0.0 || !diag.is_finite() {
            return None;
        }
        let diag = diag.sqrt();
        a[j * p + j] = diag;
        for i in (j + 1)..p {
            let mut s = a[i * p + j];
            for k in 0..j {
                s -= a[i * p + k] * a[j * p + k];
            }
            a[i * p + j] = s / diag;
        }
    }
    // Forward substitution L y = b, then back substitution Lᵀ x = y.
    for i in 0..p {
        for c in 0..t {
            let mut s = b[i * t + c];
            for k in 0..i {
                s -= a[i * p + k] * b[k * t + c];
            }
            b[i * t + c] = s / a[i * p + i];
        }
    }
    for i in (0..p).rev() {
        for c in 0..t {
            let mut s = b[i * t + c];
            for k in (i + 1)..p {
                s -= a[k * p + i] * b[k * t + c];
            }
            b[i * t + c] = s / a[i * p + i];
        }
    }
    Some(b)
}

impl Surrogate for RidgeEnsemble {
    fn name(&self) -> &str {
        "ridge-ensemble"
    }

    fn fit(&mut self, x: &[Vec<f64>], y: &[Vec<f64>]) -> crate::Result<()> {
        if x.is_empty() || x.len() != y.len() {
            return Err(crate::Error::Invalid(format!(
                "the surrogate needs as many target rows as feature rows and at least one (got {} and {})",
                x.len(),
                y.len()
            )));
        }
        let n = x.len();
        let n_features = x[0].len();
        let n_targets = y[0].len();
        if x.iter().any(|r| r.len() != n_features) || y.iter().any(|r| r.len() != n_targets) {
            return Err(crate::Error::Invalid("surrogate rows differ in length".into()));
        }

        // Standardise features and (log-)targets.
        let column_stats = |values: &mut dyn Iterator<Item = f64>| {
            let v: Vec<f64> = values.collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / v.len() as f64;
            let scale = if var > 1e-24 { var.sqrt() } else { 1.0 };
            (mean, scale)
        };
        let (x_mean, x_scale): (Vec<f64>, Vec<f64>) =
            (0..n_features).map(|j| column_stats(&mut x.iter().map(|r| r[j]))).unzip();
        let log_target: Vec<bool> = (0..n_targets).map(|t| y.iter().all(|r| r[t] > 0.0)).collect();
        let transformed: Vec<Vec<f64>> = y
            .iter()
            .map(|r| r.iter().zip(&log_target).map(|(&v, &l)| if l { v.ln() } else { v }).collect())
            .collect();
        let (y_mean, y_scale): (Vec<f64>, Vec<f64>) =
            (0..n_targets).map(|t| column_stats(&mut transformed.iter().map(|r| r[t]))).unzip();
        let z: Vec<Vec<f64>> = x
            .iter()
            .map(|r| r.iter().enumerate().map(|(j, v)| (v - x_mean[j]) / x_scale[j]).collect())
            .collect();
        let yz: Vec<Vec<f64>> = transformed
            .iter()
            .map(|r| r.iter().enumerate().map(|(t, v)| (v - y_mean[t]) / y_scale[t]).collect())
            .collect();

        let mut all_pairs: Vec<(usize, usize)> =
            (0..n_features).flat_map(|a| ((a + 1)..n_features).map(move |b| (a, b))).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ (n as u64).wrapping_mul(0x9E37_79B9));
        let mut members = Vec::with_capacity(self.members);
        let mut basis = Vec::new();
        for _ in 0..self.members {
            all_pairs.shuffle(&mut rng);
            let pairs: Vec<(usize, usize)> =
                all_pairs.iter().copied().take(self.pairs_per_member).collect();
            let p = n_basis(n_features, pairs.len());
            let mut gram = vec![0.0; p * p];
            let mut rhs = vec![0.0; p * n_targets];
            // Each member fits its own bootstrap sample, except that a lone member fits every row once.
            let rows: Vec<usize> = if self.members == 1 {
                (0..n).collect()
            } else {
                (0..n).map(|_| rng.random_range(0..n)).collect()
            };
            for i in rows {
                fill_basis(&z[i], &pairs, &mut basis);
                for a in 0..p {
                    let ba = basis[a];
                    if ba == 0.0 {
                        continue;
                    }
                    for b in 0..=a {
                        gram[a * p + b] += ba * basis[b];
                    }
                    for t in 0..n_targets {
                        rhs[a * n_targets + t] += ba * yz[i][t];
                    }
                }
            }
            for a in 0..p {
                for b in 0..a {
                    gram[b * p + a] = gram[a * p + b];
                }
                gram[a * p + a] += self.lambda;
            }
            let weights = cholesky_solve(gram, p, rhs, n_targets).ok_or_else(|| {
                crate::Error::Other("the ridge surrogate's normal equations are singular; check features for NaN".into())
            })?;
            members.push(Member { pairs, weights });
        }
        self.fitted = Some(Fitted {
            n_features,
            x_mean,
            x_scale,
            n_targets,
            log_target,
            y_mean,
            y_scale,
            members,
        });
        Ok(())
    }

    fn score(&mut self, x: &[f32], n: usize) -> crate::Result<Prediction> {
        let fitted = self
            .fitted
            .as_ref()
            .ok_or_else(|| crate::Error::Other("the surrogate was asked to score before any fit".into()))?;
        let f = fitted.n_features;
        if x.len() != n * f {
            return Err(crate::Error::Invalid(format!(
                "surrogate input has {} values, expected {n} rows × {f} features",
                x.len()
            )));
        }
        self.dispatches += 1;
        let t_count = fitted.n_targets;
        let m_count = fitted.members.len() as f64;
        let mut mean = vec![0.0; n * t_count];
        let mut std = vec![0.0; n * t_count];
        let mut z = vec![0.0; f];
        let mut basis = Vec::new();
        let mut sums = vec![0.0; t_count];
        let mut squares = vec![0.0; t_count];
        for row in 0..n {
            for j in 0..f {
                z[j] = (x[row * f + j] as f64 - fitted.x_mean[j]) / fitted.x_scale[j];
            }
            sums.iter_mut().for_each(|v| *v = 0.0);
            squares.iter_mut().for_each(|v| *v = 0.0);
            for member in &fitted.members {
                fill_basis(&z, &member.pairs, &mut basis);
                for t in 0..t_count {
                    let mut s = 0.0;
                    for (a, b) in basis.iter().enumerate() {
                        s += b * member.weights[a * t_count + t];
                    }
                    sums[t] += s;
                    squares[t] += s * s;
                }
            }
            for t in 0..t_count {
                let mu = sums[t] / m_count;
                let var = (squares[t] / m_count - mu * mu).max(0.0);
                let centre = fitted.y_mean[t] + fitted.y_scale[t] * mu;
                let spread = fitted.y_scale[t] * var.sqrt();
                let (m, s) = if fitted.log_target[t] {
                    // Delta method: a log-space deviation s scales the value by about (1 ± s).
                    let value = centre.exp();
                    (value, value * spread)
                } else {
                    (centre, spread)
                };
                mean[row * t_count + t] = m;
                std[row * t_count + t] = s;
            }
        }
        Ok(Prediction { n_targets: t_count, mean, std })
    }

    fn dispatches(&self) -> u64 {
        self.dispatches
    }
}

/// The crate's MLP ensemble ([`crate::surrogate::Ensemble`]) behind the [`Surrogate`]
/// interface, scoring on the CPU or, with [`MlpSurrogate::on_gpu`], on a GPU. The first
/// [`Surrogate::fit`] trains from scratch, and later ones warm-start from the current weights.
pub struct MlpSurrogate {
    config: crate::surrogate::EnsembleConfig,
    feature_names: Vec<String>,
    target_names: Vec<String>,
    ensemble: Option<crate::surrogate::Ensemble>,
    scorer: Option<Box<dyn crate::surrogate::Scorer + Send>>,
    gpu: Option<std::sync::Arc<crate::device::GpuContext>>,
    /// Dispatches of scorers replaced by refits.
    earlier_dispatches: u64,
}

impl MlpSurrogate {
    /// Creates an untrained ensemble with `config` over the named features and targets. Targets that
    /// are positive in every row of the first fit are fitted in log space unless
    /// `config.log_targets` is set.
    pub fn new(config: crate::surrogate::EnsembleConfig, feature_names: &[String], target_names: &[String]) -> Self {
        MlpSurrogate {
            config,
            feature_names: feature_names.to_vec(),
            target_names: target_names.to_vec(),
            ensemble: None,
            scorer: None,
            gpu: None,
            earlier_dispatches: 0,
        }
    }

    /// Scores on `gpu`, one dispatch per [`Surrogate::score`] call, instead of the CPU.
    pub fn on_gpu(mut self, gpu: std::sync::Arc<crate::device::GpuContext>) -> Self {
        self.gpu = Some(gpu);
        self
    }
}

impl Surrogate for MlpSurrogate {
    fn name(&self) -> &str {
        "mlp-ensemble"
    }

    fn fit(&mut self, x: &[Vec<f64>], y: &[Vec<f64>]) -> crate::Result<()> {
        match self.ensemble.as_mut() {
            Some(ensemble) => ensemble.refit(x, y)?,
            None => {
                let mut config = self.config.clone();
                if config.log_targets.is_empty() {
                    config.log_targets = (0..self.target_names.len()).map(|t| y.iter().all(|r| r[t] > 0.0)).collect();
                }
                let ensemble = crate::surrogate::Ensemble::fit(
                    x,
                    y,
                    self.feature_names.clone(),
                    self.target_names.clone(),
                    &config,
                )?;
                self.ensemble = Some(ensemble);
            }
        }
        if let Some(old) = self.scorer.take() {
            self.earlier_dispatches += old.dispatches();
        }
        let ensemble = self.ensemble.as_ref().expect("the ensemble was just fitted");
        self.scorer = Some(match &self.gpu {
            Some(ctx) => Box::new(ensemble.gpu_scorer(ctx)?),
            None => Box::new(ensemble.cpu_scorer()),
        });
        Ok(())
    }

    fn score(&mut self, x: &[f32], n: usize) -> crate::Result<Prediction> {
        let scorer = self
            .scorer
            .as_mut()
            .ok_or_else(|| crate::Error::Other("the surrogate was asked to score before any fit".into()))?;
        let prediction = scorer.score(x, n)?;
        Ok(Prediction {
            n_targets: prediction.n_targets,
            mean: prediction.mean.iter().map(|&v| v as f64).collect(),
            std: prediction.std.iter().map(|&v| v as f64).collect(),
        })
    }

    fn dispatches(&self) -> u64 {
        self.earlier_dispatches + self.scorer.as_ref().map_or(0, |s| s.dispatches())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_small_system() {
        let a = vec![4.0, 2.0, 2.0, 3.0];
        let b = vec![2.0, 1.0];
        let x = cholesky_solve(a, 2, b, 1).unwrap();
        assert!((4.0 * x[0] + 2.0 * x[1] - 2.0).abs() < 1e-12);
        assert!((2.0 * x[0] + 3.0 * x[1] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ridge_ensemble_fits_quadratic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let x: Vec<Vec<f64>> = (0..200).map(|_| (0..3).map(|_| rng.random::<f64>()).collect()).collect();
        let y: Vec<Vec<f64>> = x
            .iter()
            // Both targets take negative values, so they are fitted without the log transform.
            .map(|r| vec![-1.0 + 2.0 * r[0] + r[1] * r[2], r[0] * r[0] - 0.5])
            .collect();
        let mut model = RidgeEnsemble::new(4, 10, 1e-3, 5);
        model.fit(&x, &y).unwrap();
        let flat: Vec<f32> = x.iter().flatten().map(|&v| v as f32).collect();
        let pred = model.score(&flat, x.len()).unwrap();
        assert_eq!(model.dispatches(), 1);
        for (i, r) in y.iter().enumerate() {
            for (t, &truth) in r.iter().enumerate() {
                let err = (pred.mean[i * 2 + t] - truth).abs();
                assert!(err < 0.02, "row {i} target {t}: error {err}");
            }
        }
    }

    #[test]
    fn ridge_ensemble_log_target_relative_error() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let x: Vec<Vec<f64>> = (0..200).map(|_| (0..2).map(|_| rng.random::<f64>()).collect()).collect();
        // exp of a quadratic is exactly quadratic in log space.
        let y: Vec<Vec<f64>> = x.iter().map(|r| vec![(1.0 + r[0] - 0.5 * r[1] * r[1]).exp()]).collect();
        let mut model = RidgeEnsemble::new(4, 1, 1e-3, 3);
        model.fit(&x, &y).unwrap();
        let flat: Vec<f32> = x.iter().flatten().map(|&v| v as f32).collect();
        let pred = model.score(&flat, x.len()).unwrap();
        for (i, r) in y.iter().enumerate() {
            let relative = (pred.mean[i] - r[0]).abs() / r[0];
            assert!(relative < 0.01, "row {i}: relative error {relative}");
            assert!(pred.std[i] >= 0.0);
        }
    }

    #[test]
    fn ridge_ensemble_rejects_wrong_width() {
        let mut model = RidgeEnsemble::with_seed(0);
        model.fit(&[vec![1.0, 2.0], vec![2.0, 1.0]], &[vec![1.0], vec![2.0]]).unwrap();
        let err = model.score(&[1.0, 2.0, 3.0], 1).unwrap_err().to_string();
        assert!(err.contains("expected 1 rows × 2 features"), "{err}");
    }
}
