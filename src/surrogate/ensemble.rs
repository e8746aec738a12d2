//! The ensemble: K MLPs trained on bootstrap resamples, with the feature and target
//! standardisation they were trained under, fitting, warm-started refits, CPU prediction and
//! the versioned JSON model file.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::data::InputSpec;
use super::mlp::{Activation, Mlp};
use super::scorer::{CpuScorer, Prediction};
use super::train::{train_member, MemberReport, TrainData, TrainSettings};
use super::SurrogateError;

/// Version of the model file layout; [`Ensemble::load`] rejects any other.
pub const FORMAT_VERSION: u32 = 1;

/// Rows one CPU task predicts. Larger batches are split into tasks of this size over the
/// rayon thread pool. A product's bits can depend on its row count, because `gemm` takes
/// another path for a single row. The task size is therefore fixed, not derived from the thread
/// count, so every row gets the same products on any machine. A task of 32 rows (about
/// 1.8 MFLOP for the default ensemble) already outweighs rayon's cost per task.
const CPU_CHUNK_ROWS: usize = 32;

/// Most members an ensemble may have. Training and scoring time grow linearly with the count,
/// and `surrogate fit` prints nothing while it trains.
const MAX_MEMBERS: usize = 1000;

/// Minimum number of rows, each out of bag for some member, that a spread calibration needs.
const MIN_OUT_OF_BAG_ROWS: usize = 10;

/// Smallest and largest spread factor a model may hold. Beyond them the f32 standard deviations
/// underflow to 0 or overflow to infinity.
const SPREAD_SCALE_RANGE: (f64, f64) = (1e-3, 1e6);

/// Training settings of an ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnsembleConfig {
    /// Number of MLPs (K).
    pub members: usize,
    /// Widths of the hidden layers.
    pub hidden: Vec<usize>,
    pub activation: Activation,
    /// Maximum passes over each member's training rows.
    pub epochs: usize,
    /// Rows per mini-batch.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Decoupled weight decay per step, as a multiple of the learning rate (AdamW).
    pub weight_decay: f64,
    /// Epochs without improvement on the held-out split before training stops.
    pub patience: usize,
    /// Share of rows each member holds out for early stopping, drawn per member.
    pub val_fraction: f64,
    /// Seed of every random choice (initial weights, splits, resamples, batch order).
    pub seed: u64,
    /// Per target, whether it is fitted in log space. Empty means no target is; otherwise it
    /// has one entry per target.
    pub log_targets: Vec<bool>,
    /// Whether each member trains on a bootstrap resample of its training rows (true) or on
    /// the rows themselves (false).
    pub bootstrap: bool,
    /// Whether to widen or narrow the reported spread per target so that about 95% of
    /// out-of-bag residuals lie within ±2 spreads (see [`Ensemble::spread_scale`]).
    pub calibrate_spread: bool,
}

impl Default for EnsembleConfig {
    fn default() -> Self {
        EnsembleConfig {
            members: 5,
            hidden: vec![64, 64],
            activation: Activation::Silu,
            epochs: 500,
            batch_size: 64,
            lr: 1e-3,
            weight_decay: 1e-4,
            patience: 50,
            val_fraction: 0.15,
            seed: 0,
            log_targets: Vec::new(),
            bootstrap: true,
            calibrate_spread: false,
        }
    }
}

impl EnsembleConfig {
    /// Checks the settings for an ensemble of `n_targets` targets. Messages name the fields.
    pub(crate) fn validate(&self, n_targets: usize) -> Result<(), SurrogateError> {
        let invalid = |msg: String| Err(SurrogateError::Invalid(msg));
        if !(1..=MAX_MEMBERS).contains(&self.members) {
            return invalid(format!("members ({}) must be between 1 and {MAX_MEMBERS}", self.members));
        }
        if let Some(position) = self.hidden.iter().position(|&w| w == 0) {
            return invalid(format!("hidden layer {position} has width 0; give every hidden layer at least 1 unit"));
        }
        if self.batch_size == 0 {
            return invalid("batch_size (0) must be at least 1".into());
        }
        if self.epochs == 0 {
            return invalid("epochs (0) must be at least 1, or the members keep their random weights".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 1.0) {
            return invalid(format!("lr ({}) must be in (0, 1]; Adam's usual range is 1e-4 to 1e-2", self.lr));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return invalid(format!("weight_decay ({}) must be zero or positive", self.weight_decay));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return invalid(format!("val_fraction ({}) must be in [0, 1)", self.val_fraction));
        }
        if !self.log_targets.is_empty() && self.log_targets.len() != n_targets {
            return invalid(format!("log_targets has {} entries but there are {n_targets} targets; give one per target or none", self.log_targets.len()));
        }
        Ok(())
    }

    /// Rejects an ensemble whose training state does not fit in the available memory: per
    /// member, the weights, their gradients and Adam's two moments, as f32.
    fn check_memory(&self, n_in: usize, n_out: usize) -> crate::Result<()> {
        // f64, because products of widths overflow for absurd configurations.
        let mut widths = vec![n_in as f64];
        widths.extend(self.hidden.iter().map(|&w| w as f64));
        widths.push(n_out as f64);
        let params: f64 = widths.windows(2).map(|pair| pair[0] * pair[1] + pair[1]).sum();
        let bytes = (self.members as f64 * params * 4.0 * 4.0) as u64;
        crate::model::weights::check_memory("the ensemble's weights, gradients and optimiser state", bytes, "use fewer members or narrower hidden layers")
    }
}

/// Per-column shift and scale: a standardised value is `(value - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    pub mean: Vec<f64>,
    /// Population standard deviation, replaced by 1 for a constant column so it maps to 0.
    pub std: Vec<f64>,
}

impl Scaling {
    /// Computes the scaling of the columns of `rows` (all of one length).
    fn of_columns(rows: &[Vec<f64>]) -> Scaling {
        let n = rows.len() as f64;
        let width = rows[0].len();
        let mut mean = vec![0.0; width];
        for row in rows {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; width];
        for row in rows {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v - m) * (v - m);
            }
        }
        let std = var.iter().map(|s| (s / n).sqrt()).map(|s| if s > 1e-12 { s } else { 1.0 }).collect();
        Scaling { mean, std }
    }

    /// Fails when the mean or standard deviation of a column overflowed, because a model
    /// saved with it could not be read back. `names` labels the columns, `role` is `feature` or
    /// `target`, and `fix` is the advice.
    fn check_finite(&self, names: &[String], role: &str, fix: &str) -> crate::Result<()> {
        for ((name, mean), std) in names.iter().zip(&self.mean).zip(&self.std) {
            if !(mean.is_finite() && std.is_finite()) {
                return Err(SurrogateError::Invalid(format!(
                    "{role} `{name}` spans too wide a range to standardise: its mean or standard deviation overflows a 64-bit float; {fix}"
                ))
                .into());
            }
        }
        Ok(())
    }
}

/// Transform applied to a target before standardisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetTransform {
    Identity,
    /// Natural logarithm; the target must be positive.
    Log,
}

/// An ensemble of MLPs that predicts several targets with an uncertainty.
///
/// The prediction of a target is the mean over members of each member's output, mapped back
/// to the target's original units (unstandardised and, for a log target, exponentiated). The
/// uncertainty is the population standard deviation of those same back-transformed member
/// outputs, so for a log target both numbers are in the original units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ensemble {
    format_version: u32,
    /// Version of alphanas that wrote the file, for diagnostics only.
    alphanas_version: String,
    feature_names: Vec<String>,
    feature_scaling: Scaling,
    /// Encoding of table columns into the features, when the model was fitted from a table.
    #[serde(default)]
    input: Option<InputSpec>,
    target_names: Vec<String>,
    target_transforms: Vec<TargetTransform>,
    /// Scaling of the targets after their transform.
    target_scaling: Scaling,
    config: EnsembleConfig,
    /// Number of refits since the first fit; it varies the random streams of each refit.
    refits: u64,
    members: Vec<Mlp>,
    /// Per target, the factor applied to the members' spread when it is reported, fitted on
    /// out-of-bag rows when `config.calibrate_spread` is set. Absent means 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spread_scale: Option<Vec<f64>>,
}

impl Ensemble {
    /// Fits an ensemble to rows `x` (features) and `y` (targets), in their original units.
    pub fn fit(x: &[Vec<f64>], y: &[Vec<f64>], feature_names: Vec<String>, target_names: Vec<String>, cfg: &EnsembleConfig) -> crate::Result<Ensemble> {
        cfg.validate(target_names.len())?;
        cfg.check_memory(feature_names.len(), target_names.len())?;
        let target_transforms: Vec<TargetTransform> = (0..target_names.len())
            .map(|t| if cfg.log_targets.get(t).copied().unwrap_or(false) { TargetTransform::Log } else { TargetTransform::Identity })
            .collect();
        check_rows(x, y, &feature_names, &target_names, &target_transforms)?;
        if x.len() < 2 {
            return Err(SurrogateError::Invalid(format!("fitting needs at least 2 rows, got {}", x.len())).into());
        }

        let transformed = transform_targets(y, &target_transforms);
        let feature_scaling = Scaling::of_columns(x);
        feature_scaling.check_finite(&feature_names, "feature", "rescale it")?;
        let target_scaling = Scaling::of_columns(&transformed);
        target_scaling.check_finite(&target_names, "target", "rescale it, or fit it with --log-target if it is positive")?;
        let mut ensemble = Ensemble {
            format_version: FORMAT_VERSION,
            alphanas_version: env!("CARGO_PKG_VERSION").to_string(),
            feature_scaling,
            target_scaling,
            feature_names,
            input: None,
            target_names,
            target_transforms,
            config: cfg.clone(),
            refits: 0,
            members: Vec::new(),
            spread_scale: None,
        };

        log::info!("fitting a surrogate ensemble of {} members on {} rows ({} features, {} targets)", cfg.members, x.len(), ensemble.n_features(), ensemble.n_targets());
        let n_features = ensemble.n_features();
        let n_targets = ensemble.n_targets();
        let hidden = cfg.hidden.clone();
        ensemble.members = (0..cfg.members)
            .map(|k| {
                let mut rng = member_rng(cfg.seed, k, 0);
                Mlp::new(n_features, &hidden, n_targets, &mut rng)
            })
            .collect();
        ensemble.train_members(x, &transformed, 0);
        Ok(ensemble)
    }

    /// Trains every member further on `x` and `y` (all rows given, usually the old ones plus
    /// new observations), starting from the current weights. The standardisation of the first
    /// fit is kept, because the weights were learned under it.
    pub fn refit(&mut self, x: &[Vec<f64>], y: &[Vec<f64>]) -> crate::Result<()> {
        check_rows(x, y, &self.feature_names, &self.target_names, &self.target_transforms)?;
        if x.len() < 2 {
            return Err(SurrogateError::Invalid(format!("refitting needs at least 2 rows, got {}", x.len())).into());
        }
        self.refits += 1;
        log::info!("refitting the surrogate ensemble (refit {}) on {} rows", self.refits, x.len());
        let transformed = transform_targets(y, &self.target_transforms);
        self.train_members(x, &transformed, self.refits);
        Ok(())
    }

    /// Trains all members in parallel (one rayon task each). Each member uses only its own
    /// random stream, so the result is the same for any thread count.
    fn train_members(&mut self, x: &[Vec<f64>], transformed_y: &[Vec<f64>], round: u64) {
        let xs = standardise_rows(x, &self.feature_scaling);
        let ys = standardise_rows(transformed_y, &self.target_scaling);
        let data = TrainData { x: &xs, y: &ys, n_features: self.n_features(), n_targets: self.n_targets() };
        let cfg = &self.config;
        let settings = TrainSettings {
            activation: cfg.activation,
            epochs: cfg.epochs,
            batch_size: cfg.batch_size,
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            patience: cfg.patience.max(1),
        };
        let n = x.len();

        let trained: Vec<(MemberReport, Vec<usize>)> = self
            .members
            .par_iter_mut()
            .enumerate()
            .map(|(k, member)| {
                let mut rng = member_rng(cfg.seed, k, round + 1);
                let (train_rows, stop_rows) = split_rows(n, cfg.val_fraction, cfg.bootstrap, &mut rng);
                (train_member(member, &data, &train_rows, &stop_rows, &settings, &mut rng), train_rows)
            })
            .collect();

        for (k, (report, _)) in trained.iter().enumerate() {
            log::debug!("member {k}: held-out MSE {:.5} (standardised) at epoch {} of {} run", report.best_loss, report.best_epoch, report.epochs_run);
        }
        if self.config.calibrate_spread {
            let train_rows: Vec<Vec<usize>> = trained.into_iter().map(|(_, rows)| rows).collect();
            self.spread_scale = self.fit_spread_scale(&xs, &ys, &train_rows);
        }
    }

    /// Fits, per target, the factor that puts 95% of out-of-bag residuals within ±2 spreads.
    ///
    /// For each row, the residual is taken from the mean of the members that did not train on
    /// it (its held-out and unsampled rows), in standardised target space. The spread is that of
    /// all members there. A mean of few members errs more than the whole ensemble's, so the
    /// factor leans wide. Returns `None` when fewer than [`MIN_OUT_OF_BAG_ROWS`] rows are out of
    /// bag for some member.
    fn fit_spread_scale(&self, xs: &[f32], ys: &[f32], train_rows: &[Vec<usize>]) -> Option<Vec<f64>> {
        let (d, t, k) = (self.n_features(), self.n_targets(), self.members.len());
        if k < 2 {
            log::warn!("one member has no spread to scale, so every standard deviation is 0; fit two or more members for an uncertainty");
            return None;
        }
        let n = xs.len() / d;
        let mut outputs = vec![0.0f32; k * n * t];
        let mut scratch = [Vec::new(), Vec::new()];
        for (member, out) in self.members.iter().zip(outputs.chunks_exact_mut(n * t)) {
            member.forward_into(self.config.activation, xs, n, out, &mut scratch);
        }

        let mut in_bag = vec![false; k * n];
        for (member, rows) in train_rows.iter().enumerate() {
            rows.iter().for_each(|&row| in_bag[member * n + row] = true);
        }

        let mut scales = Vec::with_capacity(t);
        for target in 0..t {
            let mut ratios = Vec::with_capacity(n);
            for row in 0..n {
                let at = |member: usize| f64::from(outputs[(member * n + row) * t + target]);
                let out_of_bag: Vec<usize> = (0..k).filter(|&member| !in_bag[member * n + row]).collect();
                if out_of_bag.is_empty() {
                    continue;
                }
                let oob_mean = out_of_bag.iter().map(|&m| at(m)).sum::<f64>() / out_of_bag.len() as f64;
                let mean = (0..k).map(at).sum::<f64>() / k as f64;
                let spread = ((0..k).map(|m| (at(m) - mean).powi(2)).sum::<f64>() / k as f64).sqrt().max(1e-6);
                ratios.push((f64::from(ys[row * t + target]) - oob_mean).abs() / (2.0 * spread));
            }

            if ratios.len() < MIN_OUT_OF_BAG_ROWS {
                log::warn!(
                    "only {} rows are out of bag for some member, fewer than the {MIN_OUT_OF_BAG_ROWS} needed to scale the spread, so it is reported as the members' raw spread",
                    ratios.len()
                );
                return None;
            }
            ratios.sort_by(f64::total_cmp);
            // Kept within the range a saved model may hold, for example after a perfect fit.
            scales.push(crate::stats::percentile_sorted(&ratios, 0.95).clamp(SPREAD_SCALE_RANGE.0, SPREAD_SCALE_RANGE.1));
        }
        log::debug!("spread scale per target: {scales:?}");
        Some(scales)
    }

    /// Predicts `n` rows of raw (unstandardised) features, `x` being `n × n_features`
    /// row-major. Batches of more than 32 rows are split into tasks of 32 rows over the rayon
    /// thread pool, so the results do not depend on the thread count.
    ///
    /// # Panics
    /// When `x.len() != n * n_features`, which is a bug in the caller; [`CpuScorer`] checks
    /// this and returns an error instead.
    pub fn predict(&self, x: &[f32], n: usize) -> Prediction {
        assert_eq!(x.len(), n * self.n_features(), "predict: x has {} values, expected {n} rows × {} features", x.len(), self.n_features());
        let t = self.n_targets();
        let mut prediction = Prediction { n, n_targets: t, mean: vec![0.0; n * t], std: vec![0.0; n * t] };
        let plan = self.inference_plan();
        let d = self.n_features();

        let chunk = CPU_CHUNK_ROWS;
        if n <= chunk {
            let mut scratch = InferenceScratch::default();
            plan.predict_rows(&self.members, x, n, &mut prediction.mean, &mut prediction.std, &mut scratch);
            return prediction;
        }
        x.par_chunks(chunk * d)
            .zip(prediction.mean.par_chunks_mut(chunk * t))
            .zip(prediction.std.par_chunks_mut(chunk * t))
            .for_each_init(InferenceScratch::default, |scratch, ((xc, mc), sc)| {
                plan.predict_rows(&self.members, xc, xc.len() / d, mc, sc, scratch);
            });
        prediction
    }

    /// Returns a scorer that runs [`Ensemble::predict`] on a copy of this ensemble.
    pub fn cpu_scorer(&self) -> CpuScorer {
        CpuScorer::new(self.clone())
    }

    /// Per-column shifts and scales, in `f32`, that the CPU and GPU paths both apply.
    pub(crate) fn inference_plan(&self) -> InferencePlan {
        InferencePlan {
            activation: self.config.activation,
            n_features: self.n_features(),
            n_targets: self.n_targets(),
            feature_mean: self.feature_scaling.mean.iter().map(|&v| v as f32).collect(),
            feature_inv_std: self.feature_scaling.std.iter().map(|&v| (1.0 / v) as f32).collect(),
            target_mean: self.target_scaling.mean.iter().map(|&v| v as f32).collect(),
            target_std: self.target_scaling.std.iter().map(|&v| v as f32).collect(),
            target_log: self.target_transforms.iter().map(|&t| t == TargetTransform::Log).collect(),
            spread_scale: self.spread_scale().iter().map(|&v| v as f32).collect(),
        }
    }

    /// Returns the factor per target by which the members' spread is multiplied when reported:
    /// 1 unless the ensemble was fitted with `calibrate_spread`.
    pub fn spread_scale(&self) -> Vec<f64> {
        self.spread_scale.clone().unwrap_or_else(|| vec![1.0; self.n_targets()])
    }

    /// Writes the model as pretty JSON.
    pub fn save(&self, path: impl AsRef<Path>) -> crate::Result<()> {
        let path = path.as_ref();
        let text = serde_json::to_string_pretty(self).map_err(|e| SurrogateError::Invalid(format!("cannot encode the model as JSON: {e}")))?;
        std::fs::write(path, text).map_err(|e| crate::Error::io(format!("cannot write model {}", path.display()), e))?;
        Ok(())
    }

    /// Reads a model written by [`Ensemble::save`], checking its version and shapes.
    pub fn load(path: impl AsRef<Path>) -> crate::Result<Ensemble> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io(format!("cannot read model {}", path.display()), e))?;
        Self::from_json(&text).map_err(|e| SurrogateError::Model(format!("{}: {e}", path.display())).into())
    }

    /// Parses a model from JSON text, checking its version and shapes.
    pub fn from_json(text: &str) -> Result<Ensemble, String> {
        #[derive(Deserialize)]
        struct VersionOnly {
            format_version: Option<u32>,
        }
        let version: VersionOnly = serde_json::from_str(text).map_err(|e| format!("not a surrogate model file: {e}"))?;
        match version.format_version {
            Some(FORMAT_VERSION) => {}
            Some(other) => return Err(format!("format_version {other} is not supported; this alphanas reads version {FORMAT_VERSION}, so refit the model")),
            None => return Err("missing format_version; this is not a surrogate model file".into()),
        }
        let deserializer = &mut serde_json::Deserializer::from_str(text);
        let ensemble: Ensemble = serde_path_to_error::deserialize(deserializer).map_err(|e| format!("invalid model at `{}`: {}", e.path(), e.inner()))?;
        ensemble.check_shapes()?;
        Ok(ensemble)
    }

    /// Checks that every member's layers chain from the features to the targets and that the
    /// scalings have one entry per column.
    fn check_shapes(&self) -> Result<(), String> {
        let d = self.feature_names.len();
        let t = self.target_names.len();
        if self.feature_scaling.mean.len() != d || self.feature_scaling.std.len() != d {
            return Err(format!("feature scaling has {} entries for {d} features", self.feature_scaling.mean.len()));
        }
        if self.target_scaling.mean.len() != t || self.target_scaling.std.len() != t || self.target_transforms.len() != t {
            return Err(format!("target scaling or transforms do not have one entry for each of the {t} targets"));
        }
        if self.members.is_empty() {
            return Err("the model has no members".into());
        }
        if let Some(scale) = &self.spread_scale {
            let (low, high) = SPREAD_SCALE_RANGE;
            if scale.len() != t || scale.iter().any(|s| !(low..=high).contains(s)) {
                return Err(format!("spread_scale must hold one factor from {low:e} to {high:e} for each target ({t})"));
            }
        }
        for (k, member) in self.members.iter().enumerate() {
            if member.layers.is_empty() {
                return Err(format!("member {k} has no layers"));
            }
            let mut width = d;
            for (i, layer) in member.layers.iter().enumerate() {
                if layer.n_in != width || layer.weight.len() != layer.n_in * layer.n_out || layer.bias.len() != layer.n_out {
                    return Err(format!("member {k} layer {i} has inconsistent sizes (expected {width} inputs)"));
                }
                width = layer.n_out;
            }
            if width != t {
                return Err(format!("member {k} outputs {width} values for {t} targets"));
            }
            if member.layers.len() != self.members[0].layers.len() || member.layers.iter().zip(&self.members[0].layers).any(|(a, b)| a.n_out != b.n_out) {
                return Err(format!("member {k} has other layer widths than member 0; all members must share one shape"));
            }
        }
        Ok(())
    }

    /// Checks that `names` are exactly this model's features, in order. The error names the
    /// missing and the extra columns.
    pub fn check_feature_names(&self, names: &[String]) -> Result<(), SurrogateError> {
        if names == self.feature_names.as_slice() {
            return Ok(());
        }
        let missing: Vec<&str> = self.feature_names.iter().filter(|f| !names.contains(f)).map(String::as_str).collect();
        let extra: Vec<&str> = names.iter().filter(|f| !self.feature_names.contains(f)).map(String::as_str).collect();
        if missing.is_empty() && extra.is_empty() {
            return Err(SurrogateError::FeatureMismatch(format!("the features are in another order; the model expects {}", self.feature_names.join(","))));
        }
        Err(SurrogateError::FeatureMismatch(format!("missing: [{}], extra: [{}]", missing.join(", "), extra.join(", "))))
    }

    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    pub fn target_names(&self) -> &[String] {
        &self.target_names
    }

    pub fn target_transforms(&self) -> &[TargetTransform] {
        &self.target_transforms
    }

    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    pub fn n_targets(&self) -> usize {
        self.target_names.len()
    }

    pub fn config(&self) -> &EnsembleConfig {
        &self.config
    }

    pub fn members(&self) -> &[Mlp] {
        &self.members
    }

    /// Returns a copy whose weights and biases are rounded to f16 and back: the CPU twin of a
    /// GPU scorer with f16 weights (`WeightPrecision::F16`).
    pub fn with_f16_weights(&self) -> Ensemble {
        let mut copy = self.clone();
        for member in &mut copy.members {
            for layer in &mut member.layers {
                for value in layer.weight.iter_mut().chain(layer.bias.iter_mut()) {
                    *value = half::f16::from_f32(*value).to_f32();
                }
            }
        }
        copy
    }

    /// Returns the encoding of table columns into features, when the model was fitted from a
    /// table.
    pub fn input_spec(&self) -> Option<&InputSpec> {
        self.input.as_ref()
    }

    /// Records how table columns map to the features; its feature names must be the model's.
    pub fn set_input_spec(&mut self, spec: InputSpec) -> Result<(), SurrogateError> {
        self.check_feature_names(&spec.feature_names())?;
        self.input = Some(spec);
        Ok(())
    }
}

/// The `f32` constants of one ensemble's input and output mapping.
#[derive(Debug, Clone)]
pub(crate) struct InferencePlan {
    pub activation: Activation,
    pub n_features: usize,
    pub n_targets: usize,
    pub feature_mean: Vec<f32>,
    pub feature_inv_std: Vec<f32>,
    pub target_mean: Vec<f32>,
    pub target_std: Vec<f32>,
    pub target_log: Vec<bool>,
    /// Factor per target applied to the reported spread.
    pub spread_scale: Vec<f32>,
}

/// Reusable buffers of CPU inference.
#[derive(Debug, Default)]
pub(crate) struct InferenceScratch {
    standardised: Vec<f32>,
    member_out: Vec<f32>,
    hidden: [Vec<f32>; 2],
}

impl InferencePlan {
    /// Maps one standardised member output back to the target's units.
    #[inline]
    pub fn to_target_units(&self, target: usize, value: f32) -> f32 {
        let v = value * self.target_std[target] + self.target_mean[target];
        if self.target_log[target] {
            v.exp()
        } else {
            v
        }
    }

    /// Predicts `n` rows into `mean_out` and `std_out` (`n × n_targets` each).
    pub fn predict_rows(&self, members: &[Mlp], x: &[f32], n: usize, mean_out: &mut [f32], std_out: &mut [f32], scratch: &mut InferenceScratch) {
        let d = self.n_features;
        let t = self.n_targets;
        scratch.standardised.clear();
        for row in x.chunks_exact(d) {
            let scaled = row.iter().zip(&self.feature_mean).zip(&self.feature_inv_std).map(|((v, mean), inv_std)| (v - mean) * inv_std);
            scratch.standardised.extend(scaled);
        }

        // Two passes over the members: the first sums for the mean, the second sums squared
        // deviations from it, which avoids the cancellation of a sum-of-squares formula.
        let k = members.len();
        scratch.member_out.resize(k * n * t, 0.0);
        for (m, member) in members.iter().enumerate() {
            let out = &mut scratch.member_out[m * n * t..(m + 1) * n * t];
            member.forward_into(self.activation, &scratch.standardised, n, out, &mut scratch.hidden);
            for (i, v) in out.iter_mut().enumerate() {
                *v = self.to_target_units(i % t, *v);
            }
        }
        let inv_k = 1.0 / k as f32;
        mean_out[..n * t].fill(0.0);
        for m in 0..k {
            for (acc, v) in mean_out.iter_mut().zip(&scratch.member_out[m * n * t..(m + 1) * n * t]) {
                *acc += v;
            }
        }
        mean_out[..n * t].iter_mut().for_each(|v| *v *= inv_k);
        std_out[..n * t].fill(0.0);
        for m in 0..k {
            for ((acc, v), mean) in std_out.iter_mut().zip(&scratch.member_out[m * n * t..(m + 1) * n * t]).zip(mean_out.iter()) {
                *acc += (v - mean) * (v - mean);
            }
        }
        for (i, v) in std_out[..n * t].iter_mut().enumerate() {
            *v = (*v * inv_k).sqrt() * self.spread_scale[i % t];
        }
    }
}

/// Random stream of member `k` in training round `round` (0 draws the initial weights, the
/// first fit is round 1, refit r is round r + 1). SplitMix64-style mixing keeps streams of
/// neighbouring seeds apart.
fn member_rng(seed: u64, k: usize, round: u64) -> rand::rngs::StdRng {
    let mut z = seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    rand::rngs::StdRng::seed_from_u64(z ^ (z >> 31))
}

/// Splits rows `0..n` into training rows (a bootstrap resample of the kept rows when
/// `bootstrap`) and held-out rows for early stopping.
fn split_rows(n: usize, val_fraction: f64, bootstrap: bool, rng: &mut impl Rng) -> (Vec<usize>, Vec<usize>) {
    let mut rows: Vec<usize> = (0..n).collect();
    rows.shuffle(rng);
    let n_stop = ((val_fraction * n as f64).round() as usize).min(n - 1);
    let stop_rows = rows[..n_stop].to_vec();
    let kept = &rows[n_stop..];
    let train_rows = if bootstrap { (0..kept.len()).map(|_| kept[rng.random_range(0..kept.len())]).collect() } else { kept.to_vec() };
    (train_rows, stop_rows)
}

/// Checks row counts, widths, finiteness and the positivity of log targets.
fn check_rows(x: &[Vec<f64>], y: &[Vec<f64>], feature_names: &[String], target_names: &[String], transforms: &[TargetTransform]) -> Result<(), SurrogateError> {
    let invalid = |msg: String| Err(SurrogateError::Invalid(msg));
    if feature_names.is_empty() {
        return invalid("no features were given; name at least one feature column".into());
    }
    if target_names.is_empty() {
        return invalid("no targets were given; name at least one target column".into());
    }
    if x.len() != y.len() {
        return invalid(format!("there are {} feature rows but {} target rows; give one target row per feature row", x.len(), y.len()));
    }
    for (r, (xr, yr)) in x.iter().zip(y).enumerate() {
        if xr.len() != feature_names.len() {
            return invalid(format!("feature row {r} has {} values, expected {} ({})", xr.len(), feature_names.len(), feature_names.join(",")));
        }
        if yr.len() != target_names.len() {
            return invalid(format!("target row {r} has {} values, expected {} ({})", yr.len(), target_names.len(), target_names.join(",")));
        }
        if let Some(j) = xr.iter().position(|v| !v.is_finite()) {
            return invalid(format!("feature `{}` in row {r} is {}; remove or fix the row", feature_names[j], xr[j]));
        }
        for (t, v) in yr.iter().enumerate() {
            if !v.is_finite() {
                return invalid(format!("target `{}` in row {r} is {v}; remove or fix the row", target_names[t]));
            }
            if transforms[t] == TargetTransform::Log && *v <= 0.0 {
                return invalid(format!("target `{}` in row {r} is {v}, but a log target must be positive; drop the log transform for it or fix the row", target_names[t]));
            }
        }
    }
    Ok(())
}

fn transform_targets(y: &[Vec<f64>], transforms: &[TargetTransform]) -> Vec<Vec<f64>> {
    y.iter()
        .map(|row| {
            row.iter()
                .zip(transforms)
                .map(|(&v, t)| match t {
                    TargetTransform::Identity => v,
                    TargetTransform::Log => v.ln(),
                })
                .collect()
        })
        .collect()
}

/// Standardises `rows` in `f64` and flattens them row-major into `f32`.
fn standardise_rows(rows: &[Vec<f64>], scaling: &Scaling) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * scaling.mean.len());
    for row in rows {
        for ((v, m), s) in row.iter().zip(&scaling.mean).zip(&scaling.std) {
            out.push(((v - m) / s) as f32);
        }
    }
    out
}
