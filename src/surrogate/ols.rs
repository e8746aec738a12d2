//! Ordinary least squares, the linear baseline the ensemble is compared with.

use super::SurrogateError;

/// A linear model per target, `y = intercept + Σ coef_j · x_j`, fitted by least squares.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearModel {
    /// `n_targets × n_features`, row-major.
    pub coefficients: Vec<f64>,
    pub intercepts: Vec<f64>,
    pub n_features: usize,
}

impl LinearModel {
    /// Fits every target by least squares through the normal equations on centred features,
    /// solved by Cholesky factorisation.
    pub fn fit(x: &[Vec<f64>], y: &[Vec<f64>]) -> Result<LinearModel, SurrogateError> {
        if x.is_empty() || x.len() != y.len() {
            return Err(SurrogateError::Invalid(format!("least squares needs equally many feature and target rows, got {} and {}", x.len(), y.len())));
        }
        let n = x.len() as f64;
        let d = x[0].len();
        let t = y[0].len();
        let x_mean: Vec<f64> = (0..d).map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n).collect();
        let y_mean: Vec<f64> = (0..t).map(|k| y.iter().map(|r| r[k]).sum::<f64>() / n).collect();

        // Gram matrix XᵀX and right-hand sides Xᵀy of the centred data.
        let mut gram = vec![0.0; d * d];
        let mut rhs = vec![0.0; d * t];
        for (xr, yr) in x.iter().zip(y) {
            for i in 0..d {
                let xi = xr[i] - x_mean[i];
                for j in 0..d {
                    gram[i * d + j] += xi * (xr[j] - x_mean[j]);
                }
                for k in 0..t {
                    rhs[i * t + k] += xi * (yr[k] - y_mean[k]);
                }
            }
        }
        // A relative ridge of 1e-12 on each diagonal entry keeps nearly collinear features
        // solvable without biasing a well-posed fit. A constant feature has a zero diagonal
        // after centring, so it gets 1 there and its coefficient comes out 0.
        for i in 0..d {
            let diagonal = gram[i * d + i];
            gram[i * d + i] = if diagonal > 0.0 { diagonal * (1.0 + 1e-12) } else { 1.0 };
        }

        let factor = cholesky(&gram, d).ok_or_else(|| SurrogateError::Invalid("least squares failed: the features are linearly dependent; drop the duplicated or derived columns".into()))?;
        let mut coefficients = vec![0.0; t * d];
        for k in 0..t {
            let b: Vec<f64> = (0..d).map(|i| rhs[i * t + k]).collect();
            let solution = cholesky_solve(&factor, d, &b);
            coefficients[k * d..(k + 1) * d].copy_from_slice(&solution);
        }
        let intercepts = (0..t).map(|k| y_mean[k] - (0..d).map(|j| coefficients[k * d + j] * x_mean[j]).sum::<f64>()).collect();
        Ok(LinearModel { coefficients, intercepts, n_features: d })
    }

    /// Predicts every target for one row.
    pub fn predict_row(&self, x: &[f64]) -> Vec<f64> {
        let d = self.n_features;
        self.intercepts.iter().enumerate().map(|(k, c)| c + (0..d).map(|j| self.coefficients[k * d + j] * x[j]).sum::<f64>()).collect()
    }
}

/// Lower-triangular `L` with `L·Lᵀ = a` (`d × d`), or `None` when `a` is not positive definite.
fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let sum: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = a[i * d + i] - sum;
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - sum) / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// Solves `L·Lᵀ·x = b` by forward then backward substitution.
fn cholesky_solve(l: &[f64], d: usize, b: &[f64]) -> Vec<f64> {
    let mut z = vec![0.0; d];
    for i in 0..d {
        z[i] = (b[i] - (0..i).map(|k| l[i * d + k] * z[k]).sum::<f64>()) / l[i * d + i];
    }
    let mut x = vec![0.0; d];
    for i in (0..d).rev() {
        x[i] = (z[i] - (i + 1..d).map(|k| l[k * d + i] * x[k]).sum::<f64>()) / l[i * d + i];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_exact_linear_relation() {
        let x: Vec<Vec<f64>> = (0..30).map(|i| vec![i as f64, ((i * 7) % 11) as f64 * 100.0]).collect();
        let y: Vec<Vec<f64>> = x.iter().map(|r| vec![3.0 + 2.0 * r[0] - 0.01 * r[1], -r[0]]).collect();
        let model = LinearModel::fit(&x, &y).unwrap();
        assert!((model.intercepts[0] - 3.0).abs() < 1e-8);
        assert!((model.coefficients[0] - 2.0).abs() < 1e-8);
        assert!((model.coefficients[1] + 0.01).abs() < 1e-10);
        assert!((model.coefficients[2] + 1.0).abs() < 1e-8);
        let p = model.predict_row(&[4.0, 500.0]);
        assert!((p[0] - 6.0).abs() < 1e-8);
    }

    #[test]
    fn constant_feature_does_not_break_fit() {
        let x: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64, 5.0]).collect();
        let y: Vec<Vec<f64>> = x.iter().map(|r| vec![1.0 + r[0]]).collect();
        let model = LinearModel::fit(&x, &y).unwrap();
        assert!((model.predict_row(&[20.0, 5.0])[0] - 21.0).abs() < 1e-6);
    }
}
