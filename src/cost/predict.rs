//! Latency prediction from a cost table: the sum of the model's op latencies, plus the dispatch
//! overhead per op where the entries exclude it.
//!
//! A shape found in the table uses its measured median. A missing shape is interpolated by a
//! **model-scaled nearest neighbour**: per op kind, a cost model `t = c0 + c1·flops + c2·bytes`
//! (non-negative coefficients, least squares on relative error) is fitted to that kind's
//! entries. The missing shape takes the time of the nearest entry (Euclidean distance over the
//! log2 of the dimensions) multiplied by the ratio of the cost model at the two shapes. The
//! result equals the table at profiled shapes, and between them it follows the op's work.
//!
//! A shape with any dimension below half the smallest or above twice the largest profiled value
//! of that kind is an extrapolation. It is still predicted the same way, but it is marked in the
//! result and logged as a warning, because its error is unknown.

use super::ops::{model_ops, Mode, Op, OpKind};
use super::table::CostTable;
use super::CostError;
use crate::arch::{Architecture, Dtype};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Origin of an op's predicted latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The shape is in the table.
    Exact,
    /// Interpolated within the table's range.
    Interpolated,
    /// Some dimension lies far outside the table's range (factor 2 beyond it).
    Extrapolated,
}

/// One op of the model with its predicted latency.
#[derive(Debug, Clone, Serialize)]
pub struct OpPrediction {
    pub op: String,
    pub kind: OpKind,
    pub role: &'static str,
    pub layer: Option<usize>,
    pub ns: f64,
    pub source: Source,
}

/// A model's predicted latency with its breakdown.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub mode: Mode,
    pub batch: u64,
    pub seq: u64,
    /// Sum of op latencies and dispatch overheads, in milliseconds.
    pub raw_ms: f64,
    /// `raw_ms` corrected by the table's calibration for this mode, when it has one.
    pub calibrated_ms: Option<f64>,
    /// Part of `raw_ms` that is dispatch overhead added on top of the entries.
    pub overhead_ms: f64,
    /// Milliseconds per op kind.
    pub by_kind: BTreeMap<String, f64>,
    /// Milliseconds per layer, in layer order.
    pub by_layer: Vec<f64>,
    /// Milliseconds outside the layers: embeddings, final norm and output head.
    pub outside_layers_ms: f64,
    pub exact_ops: usize,
    pub interpolated_ops: usize,
    pub extrapolated_ops: usize,
    /// Distinct extrapolated shapes, such as `matmul(m=1, n=32000, k=4096)`.
    pub extrapolated: Vec<String>,
    pub ops: Vec<OpPrediction>,
}

impl Prediction {
    /// Returns the calibrated latency when available, else the raw one.
    pub fn best_ms(&self) -> f64 {
        self.calibrated_ms.unwrap_or(self.raw_ms)
    }
}

/// Per-kind interpolation state built once from a table.
struct KindModel {
    entries: Vec<(Op, f64)>,
    log_dims: Vec<Vec<f64>>,
    /// `c0, c_flops, c_bytes` of the cost model.
    coefficients: [f64; 3],
    /// Smallest and largest profiled value of each dimension.
    ranges: Vec<(u64, u64)>,
}

impl KindModel {
    fn new(entries: Vec<(Op, f64)>, dtype: Dtype) -> KindModel {
        let log_dims = entries.iter().map(|(op, _)| op.dims.iter().map(|&d| (d as f64).log2()).collect()).collect();
        let n_dims = entries[0].0.dims.len();
        let ranges = (0..n_dims)
            .map(|d| {
                let values = entries.iter().map(|(op, _)| op.dims[d]);
                (values.clone().min().unwrap(), values.max().unwrap())
            })
            .collect();
        let features: Vec<[f64; 3]> = entries.iter().map(|(op, _)| [1.0, op.flops(), op.bytes(dtype)]).collect();
        let times: Vec<f64> = entries.iter().map(|(_, t)| *t).collect();
        let coefficients = fit_nonnegative_relative(&features, &times);
        KindModel { entries, log_dims, coefficients, ranges }
    }

    fn cost_model(&self, op: &Op, dtype: Dtype) -> f64 {
        let c = self.coefficients;
        c[0] + c[1] * op.flops() + c[2] * op.bytes(dtype)
    }

    fn is_far_outside(&self, op: &Op) -> bool {
        op.dims.iter().zip(&self.ranges).any(|(&v, &(lo, hi))| (v as f64) < lo as f64 / 2.0 || (v as f64) > hi as f64 * 2.0)
    }

    /// Interpolated time of a shape that is not in the table, in nanoseconds.
    fn interpolate(&self, op: &Op, dtype: Dtype) -> f64 {
        let target: Vec<f64> = op.dims.iter().map(|&d| (d as f64).log2()).collect();
        let distance = |dims: &Vec<f64>| dims.iter().zip(&target).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
        let nearest = (0..self.entries.len())
            .min_by(|&a, &b| distance(&self.log_dims[a]).total_cmp(&distance(&self.log_dims[b])))
            .expect("a kind model has at least one entry");
        let (neighbour, neighbour_ns) = &self.entries[nearest];

        let at_target = self.cost_model(op, dtype);
        let at_neighbour = self.cost_model(neighbour, dtype);
        if at_target > 0.0 && at_neighbour > 0.0 {
            neighbour_ns * at_target / at_neighbour
        } else {
            *neighbour_ns
        }
    }
}

/// Fits `t ≈ c·x` with `c ≥ 0` (three coefficients), minimising the squared relative error
/// `Σ ((c·x_i − t_i) / t_i)²`. With three unknowns, the non-negative least-squares optimum is
/// the best of the unconstrained fits over the seven non-empty coefficient subsets that come out
/// non-negative.
fn fit_nonnegative_relative(features: &[[f64; 3]], times: &[f64]) -> [f64; 3] {
    // Each row is divided by its target time (the relative error), and then each column is
    // scaled to a maximum of 1, so the normal equations stay well conditioned although FLOPs
    // and the constant differ by ten orders of magnitude.
    let weighted: Vec<[f64; 3]> = features.iter().zip(times).map(|(row, &t)| row.map(|x| x / t)).collect();
    let mut scale = [0.0f64; 3];
    for row in &weighted {
        for j in 0..3 {
            scale[j] = scale[j].max(row[j].abs());
        }
    }
    let rows: Vec<[f64; 3]> = weighted
        .iter()
        .map(|row| std::array::from_fn(|j| if scale[j] > 0.0 { row[j] / scale[j] } else { 0.0 }))
        .collect();

    let mut best: Option<(f64, [f64; 3])> = None;
    for subset in 1u32..8 {
        let columns: Vec<usize> = (0..3).filter(|j| subset & (1 << j) != 0 && scale[*j] > 0.0).collect();
        if columns.is_empty() || columns.len() as u32 != subset.count_ones() {
            continue;
        }
        let Some(solution) = least_squares_ones(&rows, &columns) else { continue };
        if solution.iter().any(|&c| c < 0.0) {
            continue;
        }
        let mut coefficients = [0.0; 3];
        for (&j, &c) in columns.iter().zip(&solution) {
            coefficients[j] = c;
        }
        let residual: f64 = rows
            .iter()
            .map(|r| {
                let fitted: f64 = (0..3).map(|j| r[j] * coefficients[j]).sum();
                (fitted - 1.0).powi(2)
            })
            .sum();
        if best.is_none_or(|(r, _)| residual < r) {
            best = Some((residual, coefficients));
        }
    }

    let scaled = best.map(|(_, c)| c).unwrap_or([0.0; 3]);
    std::array::from_fn(|j| if scale[j] > 0.0 { scaled[j] / scale[j] } else { 0.0 })
}

/// Least squares of `rows[:, columns] · c ≈ 1` by the normal equations with partial pivoting.
/// Returns `None` when the system is singular.
fn least_squares_ones(rows: &[[f64; 3]], columns: &[usize]) -> Option<Vec<f64>> {
    let n = columns.len();
    let mut a = vec![vec![0.0; n + 1]; n];
    for r in rows {
        for (i, &ci) in columns.iter().enumerate() {
            for (j, &cj) in columns.iter().enumerate() {
                a[i][j] += r[ci] * r[cj];
            }
            a[i][n] += r[ci];
        }
    }
    let largest = (0..n).map(|i| a[i][i].abs()).fold(0.0, f64::max);
    for col in 0..n {
        let pivot = (col..n).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 * largest {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col].clone();
        for (row, values) in a.iter_mut().enumerate() {
            if row != col {
                let factor = values[col] / pivot_row[col];
                for (value, pivot) in values.iter_mut().zip(&pivot_row).skip(col) {
                    *value -= factor * pivot;
                }
            }
        }
    }
    Some((0..n).map(|i| a[i][n] / a[i][i]).collect())
}

/// Predicts from one table, with the per-kind interpolation models built once. Build one when
/// predicting many architectures.
pub struct Predictor<'a> {
    table: std::borrow::Cow<'a, CostTable>,
    kinds: HashMap<OpKind, KindModel>,
    warn: bool,
}

impl<'a> Predictor<'a> {
    pub fn new(table: &'a CostTable) -> Predictor<'a> {
        Predictor::build(std::borrow::Cow::Borrowed(table))
    }

    /// Builds a predictor that owns its table, for callers that keep it while the original changes.
    /// Its calibration is the one `table` has now.
    pub fn owned(table: CostTable) -> Predictor<'static> {
        Predictor::build(std::borrow::Cow::Owned(table))
    }

    fn build(table: std::borrow::Cow<'a, CostTable>) -> Predictor<'a> {
        let kinds = OpKind::ALL
            .into_iter()
            .filter_map(|kind| {
                let entries = table.entries_of(kind);
                (!entries.is_empty()).then(|| (kind, KindModel::new(entries, table.dtype)))
            })
            .collect();
        Predictor { table, kinds, warn: true }
    }

    /// Stops [`Predictor::predict`] from logging extrapolated shapes; they are still listed in
    /// each prediction. For callers that predict many candidates and report extrapolation
    /// themselves.
    pub fn quiet(mut self) -> Self {
        self.warn = false;
        self
    }

    /// Predicted latency of one op in nanoseconds, excluding dispatch overhead.
    pub fn op_ns(&self, op: &Op, mode: Mode) -> Result<(f64, Source), CostError> {
        if let Some(entry) = self.table.lookup(op) {
            return Ok((entry.median_ns, Source::Exact));
        }
        let model = self.kinds.get(&op.kind).ok_or(CostError::MissingOp { op: op.kind.name(), mode })?;
        let source = if model.is_far_outside(op) { Source::Extrapolated } else { Source::Interpolated };
        Ok((model.interpolate(op, self.table.dtype), source))
    }

    /// Predicts one forward pass of `arch`. Extrapolated shapes are listed in the result and
    /// logged once per call as a warning.
    pub fn predict(&self, arch: &Architecture, mode: Mode, batch: u64, seq: u64) -> Result<Prediction, CostError> {
        if batch == 0 || seq == 0 {
            return Err(CostError::Invalid(format!("batch ({batch}) and seq ({seq}) must be at least 1")));
        }
        let modes = &self.table.settings.modes;
        if !modes.contains(&mode) {
            let profiled: Vec<&str> = modes.iter().map(|m| m.name()).collect();
            return Err(CostError::Invalid(format!(
                "cost table {} was profiled for {} only, not {mode}; predict with --mode {}, or profile with --modes including {mode}",
                self.table.path(),
                profiled.join(" and "),
                profiled.first().copied().unwrap_or("decode")
            )));
        }
        let overhead_ns = if self.table.entries_include_overhead { 0.0 } else { self.table.dispatch_overhead_ns };

        let mut prediction = Prediction {
            mode,
            batch,
            seq,
            raw_ms: 0.0,
            calibrated_ms: None,
            overhead_ms: 0.0,
            by_kind: BTreeMap::new(),
            by_layer: vec![0.0; arch.n_layers as usize],
            outside_layers_ms: 0.0,
            exact_ops: 0,
            interpolated_ops: 0,
            extrapolated_ops: 0,
            extrapolated: Vec::new(),
            ops: Vec::new(),
        };

        for model_op in model_ops(arch, mode, batch, seq) {
            let (ns, source) = self.op_ns(&model_op.op, mode)?;
            let total_ns = (ns + overhead_ns) * f64::from(model_op.count);
            let ms = total_ns / 1e6;

            prediction.raw_ms += ms;
            prediction.overhead_ms += overhead_ns * f64::from(model_op.count) / 1e6;
            *prediction.by_kind.entry(model_op.op.kind.name().to_string()).or_insert(0.0) += ms;
            match model_op.layer {
                Some(layer) => prediction.by_layer[layer] += ms,
                None => prediction.outside_layers_ms += ms,
            }
            match source {
                Source::Exact => prediction.exact_ops += 1,
                Source::Interpolated => prediction.interpolated_ops += 1,
                Source::Extrapolated => {
                    prediction.extrapolated_ops += 1;
                    let text = model_op.op.to_string();
                    if !prediction.extrapolated.contains(&text) {
                        prediction.extrapolated.push(text);
                    }
                }
            }
            prediction.ops.push(OpPrediction {
                op: model_op.op.to_string(),
                kind: model_op.op.kind,
                role: model_op.role,
                layer: model_op.layer,
                ns: total_ns,
                source,
            });
        }

        if !prediction.raw_ms.is_finite() {
            return Err(CostError::Invalid(format!(
                "the predicted {mode} latency of {arch} is not a finite number, because the ops of the model extrapolate too far from cost table {}; predict models closer to the profiled space",
                self.table.path()
            )));
        }
        if self.warn && !prediction.extrapolated.is_empty() {
            log::warn!(
                "{} of the {} ops of {arch} ({}) lie far outside the cost table's range, so their latencies are extrapolated: {}",
                prediction.extrapolated_ops,
                prediction.ops.len(),
                crate::error::plural(prediction.extrapolated.len(), "distinct shape", "distinct shapes"),
                prediction.extrapolated.join(", ")
            );
        }
        prediction.calibrated_ms = self.table.calibration.as_ref().and_then(|c| c.apply(mode, prediction.raw_ms));
        Ok(prediction)
    }
}

impl CostTable {
    /// Predicts one forward pass of `arch` at the given batch and sequence length. Builds the
    /// interpolation models on each call; use [`Predictor`] for many architectures.
    pub fn predict(&self, arch: &Architecture, mode: Mode, batch: u64, seq: u64) -> Result<Prediction, CostError> {
        Predictor::new(self).predict(arch, mode, batch, seq)
    }

    /// Predicts at the batch and sequence length the table was profiled for.
    pub fn predict_default(&self, arch: &Architecture, mode: Mode) -> Result<Prediction, CostError> {
        self.predict(arch, mode, self.settings.batch, self.settings.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::presets;
    use crate::cost::table::tests::{test_device, test_settings};
    use crate::stats::TimingStats;

    /// Computes op times of a synthetic device: 10 GFLOP/s, 5 GB/s, 2 µs per op, work and bytes added.
    fn synthetic_ns(op: &Op) -> f64 {
        2000.0 + op.flops() / 10.0 + op.bytes(Dtype::F32) / 5.0
    }

    fn table_with(ops: &[Op]) -> CostTable {
        let mut table = CostTable::new(test_device(), Dtype::F32, test_settings(), 500.0, true);
        for op in ops {
            let t = synthetic_ns(op);
            table.insert(op, &TimingStats { median_ns: t, p10_ns: t, p90_ns: t, runs: 1 });
        }
        table
    }

    fn all_model_ops(arch: &Architecture, batch: u64, seq: u64) -> Vec<Op> {
        let mut ops: Vec<Op> = Mode::ALL.into_iter().flat_map(|m| model_ops(arch, m, batch, seq)).map(|o| o.op).collect();
        ops.sort();
        ops.dedup();
        ops
    }

    #[test]
    fn exact_table_sums_ops() {
        let arch = presets::llama_tiny();
        let table = table_with(&all_model_ops(&arch, 1, 16));
        let prediction = table.predict(&arch, Mode::Prefill, 1, 16).unwrap();
        let expected_ms: f64 = model_ops(&arch, Mode::Prefill, 1, 16).iter().map(|o| synthetic_ns(&o.op)).sum::<f64>() / 1e6;
        assert!((prediction.raw_ms - expected_ms).abs() < 1e-9 * expected_ms);
        assert_eq!(prediction.interpolated_ops + prediction.extrapolated_ops, 0);
        let layers: f64 = prediction.by_layer.iter().sum::<f64>() + prediction.outside_layers_ms;
        assert!((layers - prediction.raw_ms).abs() < 1e-9);
        let kinds: f64 = prediction.by_kind.values().sum();
        assert!((kinds - prediction.raw_ms).abs() < 1e-9);
    }

    #[test]
    fn overhead_added_when_entries_exclude_it() {
        let arch = presets::llama_tiny();
        let mut table = table_with(&all_model_ops(&arch, 1, 16));
        let with = table.predict(&arch, Mode::Decode, 1, 16).unwrap();
        table.entries_include_overhead = false;
        let without = table.predict(&arch, Mode::Decode, 1, 16).unwrap();
        let expected = with.ops.len() as f64 * 500.0 / 1e6;
        assert!((without.raw_ms - with.raw_ms - expected).abs() < 1e-9);
        assert!((without.overhead_ms - expected).abs() < 1e-9);
    }

    #[test]
    fn interpolation_between_profiled_widths() {
        // Profile d_model 256 and 512 but predict 384: the fitted cost model is exact for the
        // synthetic device, so interpolation must land within 1%.
        let mut ops = Vec::new();
        for d in [256, 512] {
            let arch = Architecture { d_model: d, d_ff: d * 3, ..presets::llama_tiny() };
            ops.extend(all_model_ops(&arch, 1, 16));
        }
        let table = table_with(&ops);
        let arch = Architecture { d_model: 384, d_ff: 1152, n_heads: 6, n_kv_heads: Some(2), ..presets::llama_tiny() };
        let prediction = table.predict(&arch, Mode::Prefill, 1, 16).unwrap();
        let truth: f64 = model_ops(&arch, Mode::Prefill, 1, 16).iter().map(|o| synthetic_ns(&o.op)).sum::<f64>() / 1e6;
        assert!(prediction.interpolated_ops > 0);
        assert_eq!(prediction.extrapolated_ops, 0);
        let error = (prediction.raw_ms - truth).abs() / truth;
        assert!(error < 0.01, "relative error {error}");
    }

    #[test]
    fn far_shapes_flagged_as_extrapolated() {
        let arch = presets::llama_tiny();
        let table = table_with(&all_model_ops(&arch, 1, 16));
        let huge = Architecture { d_model: 4096, d_ff: 11008, n_heads: 32, n_kv_heads: Some(8), ..arch };
        let prediction = table.predict(&huge, Mode::Prefill, 1, 16).unwrap();
        assert!(prediction.extrapolated_ops > 0);
        assert!(prediction.extrapolated.iter().any(|s| s.contains("k=4096")), "{:?}", prediction.extrapolated);
        assert!(prediction.ops.iter().any(|o| o.source == Source::Extrapolated));
    }

    #[test]
    fn missing_op_kind_is_an_error() {
        let arch = presets::llama_tiny();
        let table = table_with(&all_model_ops(&arch, 1, 16));
        let gpt2 = presets::gpt2_small();
        let err = table.predict(&gpt2, Mode::Prefill, 1, 16).unwrap_err().to_string();
        assert!(err.contains("no layernorm entries"), "{err}");
    }

    #[test]
    fn nonnegative_fit_recovers_coefficients() {
        let ops: Vec<Op> = [(8, 64, 64), (8, 128, 64), (32, 256, 128), (1, 512, 512), (16, 1024, 256)]
            .into_iter()
            .map(|(m, n, k)| Op::matmul(m, n, k))
            .collect();
        let features: Vec<[f64; 3]> = ops.iter().map(|op| [1.0, op.flops(), op.bytes(Dtype::F32)]).collect();
        let times: Vec<f64> = ops.iter().map(synthetic_ns).collect();
        let c = fit_nonnegative_relative(&features, &times);
        assert!((c[0] - 2000.0).abs() / 2000.0 < 1e-6, "{c:?}");
        assert!((c[1] - 0.1).abs() / 0.1 < 1e-6, "{c:?}");
        assert!((c[2] - 0.2).abs() / 0.2 < 1e-6, "{c:?}");
    }
}
