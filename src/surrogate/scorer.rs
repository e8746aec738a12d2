//! The scoring interface the search uses: a batch of feature rows in, ensemble mean and
//! standard deviation per target out, with a count of backend dispatches.

use super::ensemble::{Ensemble, InferencePlan, InferenceScratch};
use super::SurrogateError;

/// Ensemble predictions for `n` rows: `mean` and `std` are `n × n_targets`, row-major, in the
/// targets' original units.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub n: usize,
    pub n_targets: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Prediction {
    /// Ensemble mean of `target` for `row`.
    pub fn mean_at(&self, row: usize, target: usize) -> f32 {
        self.mean[row * self.n_targets + target]
    }

    /// Standard deviation over members of `target` for `row`.
    pub fn std_at(&self, row: usize, target: usize) -> f32 {
        self.std[row * self.n_targets + target]
    }
}

/// A scorer of batches of raw (unstandardised) feature rows.
pub trait Scorer: Send {
    /// Scores `n` rows of `x` (`n × n_features`, row-major).
    fn score(&mut self, x: &[f32], n: usize) -> crate::Result<Prediction>;

    /// Backend dispatches issued so far: one per [`Scorer::score`] call on the CPU, and one
    /// compute dispatch per call on the GPU while the batch fits the device limits.
    fn dispatches(&self) -> u64;
}

/// Checks that `x` contains `n` rows of `n_features` finite values.
pub(crate) fn check_batch(x: &[f32], n: usize, n_features: usize) -> Result<(), SurrogateError> {
    if x.len() != n * n_features {
        return Err(SurrogateError::Invalid(format!("the batch has {} values, but {n} rows × {n_features} features need {}", x.len(), n * n_features)));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(SurrogateError::Invalid(format!("feature {} of batch row {} is {}; every feature must be finite", i % n_features, i / n_features, x[i])));
    }
    Ok(())
}

/// Scores on the CPU with [`Ensemble::predict`], reusing buffers between calls for batches
/// of up to 256 rows.
#[derive(Debug)]
pub struct CpuScorer {
    ensemble: Ensemble,
    plan: InferencePlan,
    scratch: InferenceScratch,
    dispatches: u64,
}

impl CpuScorer {
    pub(crate) fn new(ensemble: Ensemble) -> Self {
        let plan = ensemble.inference_plan();
        CpuScorer { ensemble, plan, scratch: InferenceScratch::default(), dispatches: 0 }
    }

    pub fn ensemble(&self) -> &Ensemble {
        &self.ensemble
    }
}

impl Scorer for CpuScorer {
    fn score(&mut self, x: &[f32], n: usize) -> crate::Result<Prediction> {
        check_batch(x, n, self.ensemble.n_features())?;
        self.dispatches += 1;
        if n > 256 {
            return Ok(self.ensemble.predict(x, n));
        }
        let t = self.ensemble.n_targets();
        let mut prediction = Prediction { n, n_targets: t, mean: vec![0.0; n * t], std: vec![0.0; n * t] };
        self.plan.predict_rows(self.ensemble.members(), x, n, &mut prediction.mean, &mut prediction.std, &mut self.scratch);
        Ok(prediction)
    }

    fn dispatches(&self) -> u64 {
        self.dispatches
    }
}
