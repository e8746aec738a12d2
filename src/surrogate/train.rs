//! Training of one ensemble member: AdamW on mini-batches of a bootstrap resample, with early
//! stopping on a held-out split that keeps the best weights seen.
//!
//! Everything here runs on one thread and draws randomness only from the member's own
//! generator, so a member's weights depend on the seed alone, never on the thread count.

use rand::seq::SliceRandom;
use rand::Rng;

use super::mlp::{Activation, ForwardCache, Mlp};

/// Settings of one training run, taken from `EnsembleConfig`.
#[derive(Debug, Clone)]
pub struct TrainSettings {
    pub activation: Activation,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub patience: usize,
}

/// Training data already standardised: `x` is `n × n_features`, `y` is `n × n_targets`.
pub struct TrainData<'a> {
    pub x: &'a [f32],
    pub y: &'a [f32],
    pub n_features: usize,
    pub n_targets: usize,
}

/// Outcome of one member's training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemberReport {
    /// Mean squared error (standardised units) of the kept weights on the early-stopping set.
    pub best_loss: f64,
    /// Epoch (1-based) whose weights were kept, 0 when the starting weights were best.
    pub best_epoch: usize,
    /// Epochs run before early stopping or the epoch limit.
    pub epochs_run: usize,
}

/// First and second moment estimates of Adam for one parameter tensor.
struct Moments {
    first: Vec<f32>,
    second: Vec<f32>,
}

impl Moments {
    fn zeros(len: usize) -> Self {
        Moments { first: vec![0.0; len], second: vec![0.0; len] }
    }
}

/// AdamW state (Loshchilov and Hutter 2019: the decay is applied to the weights directly,
/// not added to the gradient). Biases are not decayed.
struct AdamW {
    lr: f32,
    weight_decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    step: i32,
    weights: Vec<Moments>,
    biases: Vec<Moments>,
}

impl AdamW {
    fn new(mlp: &Mlp, lr: f64, weight_decay: f64) -> Self {
        AdamW {
            lr: lr as f32,
            weight_decay: weight_decay as f32,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 0,
            weights: mlp.layers.iter().map(|l| Moments::zeros(l.weight.len())).collect(),
            biases: mlp.layers.iter().map(|l| Moments::zeros(l.bias.len())).collect(),
        }
    }

    fn update(&mut self, mlp: &mut Mlp, grads: &super::mlp::Gradients) {
        self.step += 1;
        let correction1 = 1.0 - self.beta1.powi(self.step);
        let correction2 = 1.0 - self.beta2.powi(self.step);
        let step_size = self.lr / correction1;
        let (beta1, beta2, eps) = (self.beta1, self.beta2, self.eps);

        let adam = |params: &mut [f32], grad: &[f32], moments: &mut Moments, decay: f32| {
            for i in 0..params.len() {
                let g = grad[i];
                moments.first[i] = beta1 * moments.first[i] + (1.0 - beta1) * g;
                moments.second[i] = beta2 * moments.second[i] + (1.0 - beta2) * g * g;
                let denom = (moments.second[i] / correction2).sqrt() + eps;
                params[i] -= decay * params[i] + step_size * moments.first[i] / denom;
            }
        };

        let decay = self.lr * self.weight_decay;
        for (i, layer) in mlp.layers.iter_mut().enumerate() {
            adam(&mut layer.weight, &grads.weight[i], &mut self.weights[i], decay);
            adam(&mut layer.bias, &grads.bias[i], &mut self.biases[i], 0.0);
        }
    }
}

/// Trains `mlp` in place on rows `train_rows` of `data` and returns the report. Early stopping
/// watches the mean squared error on `stop_rows`, which should be disjoint from `train_rows`.
/// With `stop_rows` empty it watches the training rows instead.
pub fn train_member(mlp: &mut Mlp, data: &TrainData, train_rows: &[usize], stop_rows: &[usize], settings: &TrainSettings, rng: &mut impl Rng) -> MemberReport {
    let stop_rows = if stop_rows.is_empty() { train_rows } else { stop_rows };
    let mut optimizer = AdamW::new(mlp, settings.lr, settings.weight_decay);
    let mut order = train_rows.to_vec();
    let mut cache = ForwardCache::default();
    let batch_size = settings.batch_size.max(1);
    let mut batch_x = Vec::with_capacity(batch_size * data.n_features);
    let mut batch_y = Vec::with_capacity(batch_size * data.n_targets);

    let mut best_loss = mean_squared_error(mlp, settings.activation, data, stop_rows);
    let mut best_weights = mlp.clone();
    let mut best_epoch = 0;
    let mut epochs_run = 0;

    for epoch in 1..=settings.epochs {
        order.shuffle(rng);
        for batch in order.chunks(batch_size) {
            gather(data, batch, &mut batch_x, &mut batch_y);
            let n = batch.len();
            let output = mlp.forward_train(settings.activation, &batch_x, n, &mut cache);

            // Gradient of the mean over rows and targets of the squared error.
            let scale = 2.0 / (n * data.n_targets) as f32;
            let d_out: Vec<f32> = output.iter().zip(&batch_y).map(|(o, t)| scale * (o - t)).collect();
            let grads = mlp.backward(settings.activation, &cache, d_out, n);
            optimizer.update(mlp, &grads);
        }
        epochs_run = epoch;

        let loss = mean_squared_error(mlp, settings.activation, data, stop_rows);
        if loss < best_loss {
            best_loss = loss;
            best_weights.clone_from(mlp);
            best_epoch = epoch;
        } else if epoch - best_epoch >= settings.patience {
            break;
        }
    }

    *mlp = best_weights;
    MemberReport { best_loss, best_epoch, epochs_run }
}

/// Copies the rows `rows` of `data` into the batch buffers.
fn gather(data: &TrainData, rows: &[usize], batch_x: &mut Vec<f32>, batch_y: &mut Vec<f32>) {
    batch_x.clear();
    batch_y.clear();
    for &r in rows {
        batch_x.extend_from_slice(&data.x[r * data.n_features..(r + 1) * data.n_features]);
        batch_y.extend_from_slice(&data.y[r * data.n_targets..(r + 1) * data.n_targets]);
    }
}

/// Mean squared error over `rows` and all targets, in standardised units. Sums in `f64` in
/// row order, so the value is reproducible.
fn mean_squared_error(mlp: &Mlp, activation: Activation, data: &TrainData, rows: &[usize]) -> f64 {
    if rows.is_empty() {
        return 0.0;
    }
    let mut x = Vec::new();
    let mut y = Vec::new();
    gather(data, rows, &mut x, &mut y);
    let mut out = vec![0.0; rows.len() * data.n_targets];
    let mut scratch = [Vec::new(), Vec::new()];
    mlp.forward_into(activation, &x, rows.len(), &mut out, &mut scratch);
    let sum: f64 = out.iter().zip(&y).map(|(o, t)| f64::from(o - t).powi(2)).sum();
    sum / out.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn training_fits_a_smooth_function() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let n = 200;
        let x: Vec<f32> = (0..n).map(|i| -2.0 + 4.0 * i as f32 / n as f32).collect();
        let y: Vec<f32> = x.iter().map(|v| (1.5 * v).sin()).collect();
        let data = TrainData { x: &x, y: &y, n_features: 1, n_targets: 1 };
        let rows: Vec<usize> = (0..n).collect();
        let mut mlp = Mlp::new(1, &[32, 32], 1, &mut rng);
        let settings = TrainSettings { activation: Activation::Tanh, epochs: 300, batch_size: 32, lr: 3e-3, weight_decay: 0.0, patience: 300 };

        let before = mean_squared_error(&mlp, settings.activation, &data, &rows);
        let report = train_member(&mut mlp, &data, &rows, &[], &settings, &mut rng);
        let after = mean_squared_error(&mlp, settings.activation, &data, &rows);

        assert!(before > 0.05, "the untrained network already fits: {before}");
        assert!(after < 1e-3, "training left a mean squared error of {after}");
        assert_eq!(report.best_loss, after);
    }

    #[test]
    fn early_stopping_keeps_best_weights() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        // The stopping rows contradict the training rows, so training makes them worse.
        let x = vec![0.0f32, 1.0, 0.0, 1.0];
        let y = vec![1.0f32, -1.0, -1.0, 1.0];
        let data = TrainData { x: &x, y: &y, n_features: 1, n_targets: 1 };
        let mut mlp = Mlp::new(1, &[8], 1, &mut rng);
        let start = mlp.clone();
        let settings = TrainSettings { activation: Activation::Relu, epochs: 50, batch_size: 2, lr: 1e-2, weight_decay: 0.0, patience: 5 };

        let start_loss = mean_squared_error(&mlp, settings.activation, &data, &[2, 3]);
        let report = train_member(&mut mlp, &data, &[0, 1], &[2, 3], &settings, &mut rng);

        assert!(report.best_loss <= start_loss);
        assert!(report.epochs_run < 50, "patience 5 did not stop training");
        if report.best_epoch == 0 {
            assert_eq!(mlp, start, "best weights were the starting ones but were not restored");
        }
    }
}
