//! [`CostTableFeedback`]: search hooks that join a cost table to a search.
//!
//! - **Features.** Every candidate gets the log of its calibrated table latency for each
//!   measured pass as extra surrogate features, so the surrogate starts from the table's
//!   estimate and learns what the table misses.
//! - **Recalibration.** Each measured latency of an evaluated candidate is added to the table
//!   as a calibration measurement, and the table's correction is refitted. Later features, and
//!   so later proposals, use the corrected estimates.
//! - **Error over time.** Before each measurement is added, the calibrated prediction is
//!   compared with it. `summary.json` reports these errors per result and per block of
//!   results, under `cost_table`.
//!
//! The table's op entries never change during a search, only its calibration does, so raw
//! predictions come from one [`Predictor`] built at the start.

use super::config::SearchHooks;
use crate::arch::Architecture;
use crate::cost::predict::Predictor;
use crate::cost::{CostTable, Mode};
use crate::eval::measure::MeasureSettings;
use crate::eval::{EvalOutcome, Status};
use crate::space::Candidate;

/// One measured forward pass the evaluator reports as a metric.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MeasuredPass {
    /// Metric name of the measured latency in milliseconds, such as `latency_decode_ms`.
    pub metric: String,
    pub mode: Mode,
    pub batch: u64,
    /// Prefill: tokens per sequence. Decode: tokens already in the KV cache; the new token
    /// attends one position more, which is the table's decode `seq`.
    pub seq: u64,
}

impl MeasuredPass {
    /// Returns the passes of the `measure` evaluator with `settings`.
    pub fn of_measure(settings: &MeasureSettings) -> Vec<MeasuredPass> {
        vec![
            MeasuredPass { metric: "latency_prefill_ms".into(), mode: Mode::Prefill, batch: settings.batch, seq: settings.prefill_seq },
            MeasuredPass { metric: "latency_decode_ms".into(), mode: Mode::Decode, batch: settings.batch, seq: settings.decode_cache },
        ]
    }

    /// Returns the table's `seq` for this pass of `arch`, shortened as the `measure` evaluator shortens
    /// passes of architectures with a short context.
    fn table_seq(&self, arch: &Architecture) -> u64 {
        match self.mode {
            Mode::Prefill => self.seq.min(arch.max_seq_len).max(1),
            Mode::Decode => self.seq.min(arch.max_seq_len.saturating_sub(1)).max(1) + 1,
        }
    }
}

/// One measured latency compared with the table's calibrated prediction made before it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedbackPoint {
    /// Index of the result among those this feedback saw, in history order.
    pub result: usize,
    pub metric: String,
    pub predicted_ms: f64,
    pub measured_ms: f64,
    /// `|predicted − measured| / measured`, in percent.
    pub ape_pct: f64,
    /// Whether the table's correction was fitted on earlier measurements when predicting.
    pub calibrated: bool,
}

/// Search hooks that add a cost table's predictions as features and recalibrate the table
/// with every measured latency. See the module docs.
pub struct CostTableFeedback {
    table: CostTable,
    predictor: Predictor<'static>,
    passes: Vec<MeasuredPass>,
    points: Vec<FeedbackPoint>,
    results: usize,
    extrapolated_candidates: usize,
    failures: Vec<String>,
}

impl std::fmt::Debug for CostTableFeedback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CostTableFeedback").field("table", &self.table.path()).field("passes", &self.passes).finish()
    }
}

/// Results per block in [`CostTableFeedback::summary`]'s error-over-time table.
pub const ERROR_BLOCK: usize = 5;

impl CostTableFeedback {
    /// Joins `table` to a search whose evaluator reports the latencies of `passes`. Fails when
    /// the table lacks a mode that a pass needs.
    pub fn new(table: CostTable, passes: Vec<MeasuredPass>) -> crate::Result<CostTableFeedback> {
        if passes.is_empty() {
            return Err(crate::Error::Invalid("a cost table needs at least one measured latency metric to recalibrate".into()));
        }
        for pass in &passes {
            if !table.settings.modes.contains(&pass.mode) {
                return Err(crate::Error::Invalid(format!(
                    "cost table {} has no {} entries, but {} is a {} latency; profile with --modes prefill,decode",
                    table.path(),
                    pass.mode,
                    pass.metric,
                    pass.mode
                )));
            }
        }
        let predictor = Predictor::owned(table.clone()).quiet();
        Ok(CostTableFeedback {
            table,
            predictor,
            passes,
            points: Vec::new(),
            results: 0,
            extrapolated_candidates: 0,
            failures: Vec::new(),
        })
    }

    /// Returns the table with every measurement so far and its refitted correction.
    pub fn table(&self) -> &CostTable {
        &self.table
    }

    /// Returns every measurement compared with its prediction, in history order.
    pub fn points(&self) -> &[FeedbackPoint] {
        &self.points
    }

    /// Raw (uncalibrated) table latency of one pass, and whether a shape was extrapolated.
    fn raw_ms(&self, arch: &Architecture, pass: &MeasuredPass) -> Result<(f64, bool), String> {
        let prediction = self.predictor.predict(arch, pass.mode, pass.batch, pass.table_seq(arch)).map_err(|e| e.to_string())?;
        Ok((prediction.raw_ms, !prediction.extrapolated.is_empty()))
    }

    /// Calibrated table latency of one pass with the current correction.
    fn calibrated_ms(&self, arch: &Architecture, pass: &MeasuredPass) -> Result<(f64, bool, bool), String> {
        let (raw, extrapolated) = self.raw_ms(arch, pass)?;
        match self.table.calibration.as_ref().and_then(|c| c.apply(pass.mode, raw)) {
            Some(ms) => Ok((ms, true, extrapolated)),
            None => Ok((raw, false, extrapolated)),
        }
    }

    /// Builds the `cost_table` object of `summary.json`: the table, the passes, every comparison and
    /// the MAPE per block of [`ERROR_BLOCK`] results.
    pub fn summary(&self) -> serde_json::Value {
        let mut blocks = Vec::new();
        for pass in &self.passes {
            let points: Vec<&FeedbackPoint> = self.points.iter().filter(|p| p.metric == pass.metric).collect();
            for (index, chunk) in points.chunks(ERROR_BLOCK).enumerate() {
                let mape = chunk.iter().map(|p| p.ape_pct).sum::<f64>() / chunk.len() as f64;
                blocks.push(serde_json::json!({
                    "metric": pass.metric,
                    "first_result": chunk[0].result,
                    "last_result": chunk[chunk.len() - 1].result,
                    "n": chunk.len(),
                    "mape_pct": mape,
                    "index": index,
                }));
            }
        }
        let fits: serde_json::Value = match &self.table.calibration {
            Some(c) => serde_json::to_value(&c.modes).unwrap_or(serde_json::Value::Null),
            None => serde_json::Value::Null,
        };
        serde_json::json!({
            "table": self.table.path(),
            "device": self.table.device.name,
            "backend": self.table.device.backend,
            "passes": self.passes,
            "measurements": self.points.len(),
            "calibration": fits,
            "mape_by_block": blocks,
            "points": self.points,
            "extrapolated_candidates": self.extrapolated_candidates,
            "failures": self.failures,
        })
    }
}

impl SearchHooks for CostTableFeedback {
    fn on_result(&mut self, candidate: &Candidate, outcome: &EvalOutcome) {
        let result = self.results;
        self.results += 1;
        let Candidate::Arch(arch) = candidate else { return };
        if outcome.status != Status::Ok {
            return;
        }
        let mut added = false;
        for pass in self.passes.clone() {
            let Some(&measured) = outcome.metrics.get(&pass.metric) else { continue };
            if !(measured.is_finite() && measured > 0.0) {
                continue;
            }
            let (predicted, calibrated, extrapolated) = match self.calibrated_ms(arch, &pass) {
                Ok(p) => p,
                Err(e) => {
                    self.failures.push(format!("result {result}, {}: {e}", pass.metric));
                    continue;
                }
            };
            if extrapolated {
                self.extrapolated_candidates += 1;
                if self.extrapolated_candidates == 1 {
                    log::warn!(
                        "the cost table does not cover some op shapes of {} at {} (batch {}, seq {}), so its prediction is extrapolated; summary.json counts such predictions as extrapolated_candidates, and profiling at these lengths avoids them",
                        arch.summary(),
                        pass.metric,
                        pass.batch,
                        pass.table_seq(arch)
                    );
                }
            }
            self.points.push(FeedbackPoint {
                result,
                metric: pass.metric.clone(),
                predicted_ms: predicted,
                measured_ms: measured,
                ape_pct: 100.0 * (predicted - measured).abs() / measured,
                calibrated,
            });
            match self.table.add_measurement_at(arch, pass.mode, pass.batch, pass.table_seq(arch), measured) {
                Ok(()) => added = true,
                Err(e) => self.failures.push(format!("result {result}, {}: {e}", pass.metric)),
            }
        }
        if added {
            if let Err(e) = self.table.recalibrate() {
                self.failures.push(format!("result {result}: recalibration failed: {e}"));
            }
        }
    }

    fn extra_feature_names(&self) -> Vec<String> {
        self.passes.iter().map(|p| format!("table_log_{}", p.metric)).collect()
    }

    fn extra_features(&self, candidate: &Candidate, out: &mut Vec<f32>) {
        for pass in &self.passes {
            let value = match candidate {
                Candidate::Arch(arch) => match self.calibrated_ms(arch, pass) {
                    Ok((ms, _, _)) if ms > 0.0 => ms.ln() as f32,
                    _ => 0.0,
                },
                Candidate::Row { .. } => 0.0,
            };
            out.push(value);
        }
    }

    fn summary(&self) -> Option<(String, serde_json::Value)> {
        Some(("cost_table".into(), CostTableFeedback::summary(self)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::presets;
    use crate::cost::model_ops;
    use crate::cost::table::tests::{test_device, test_settings};
    use crate::stats::TimingStats;
    use std::collections::BTreeMap;

    /// Builds a table at batch 1, seq 16 whose op latencies are 1 µs plus 0.1 ns per FLOP, for three
    /// small Llama-style models.
    fn small_table() -> (CostTable, Vec<Architecture>) {
        let mut table = CostTable::new(test_device(), crate::arch::Dtype::F32, test_settings(), 0.0, true);
        let archs: Vec<Architecture> =
            [128u64, 256, 384].into_iter().map(|d| Architecture { d_model: d, d_ff: 3 * d, ..presets::llama_tiny() }).collect();
        for arch in &archs {
            for mode in Mode::ALL {
                for o in model_ops(arch, mode, 1, 16) {
                    let t = 1000.0 + o.op.flops() / 10.0;
                    table.insert(&o.op, &TimingStats { median_ns: t, p10_ns: t, p90_ns: t, runs: 1 });
                }
            }
        }
        (table, archs)
    }

    fn ok_outcome(metrics: &[(&str, f64)]) -> EvalOutcome {
        let metrics: BTreeMap<String, f64> = metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        EvalOutcome { status: Status::Ok, metrics, error: None, elapsed_s: 0.0 }
    }

    #[test]
    fn measurements_recalibrate_the_features() {
        let (table, archs) = small_table();
        let passes = vec![MeasuredPass { metric: "latency_decode_ms".into(), mode: Mode::Decode, batch: 1, seq: 15 }];
        let mut feedback = CostTableFeedback::new(table, passes).unwrap();
        assert_eq!(feedback.extra_feature_names(), vec!["table_log_latency_decode_ms".to_string()]);

        let candidate = Candidate::Arch(archs[0].clone());
        let mut before = Vec::new();
        feedback.extra_features(&candidate, &mut before);
        let raw = before[0].exp() as f64;
        assert!(raw > 0.0);

        // The device turns out to be exactly 3× slower than the table predicts, on every model.
        for arch in &archs {
            let (raw_ms, _) = feedback.raw_ms(arch, &feedback.passes[0].clone()).unwrap();
            feedback.on_result(&Candidate::Arch(arch.clone()), &ok_outcome(&[("latency_decode_ms", 3.0 * raw_ms)]));
        }
        let mut after = Vec::new();
        feedback.extra_features(&candidate, &mut after);
        let corrected = after[0].exp() as f64;
        assert!((corrected / raw - 3.0).abs() < 0.01, "raw {raw}, corrected {corrected}");

        let points = feedback.points();
        assert_eq!(points.len(), archs.len());
        assert!(!points[0].calibrated, "the first prediction has no correction yet");
        assert!((points[0].ape_pct - 100.0 * 2.0 / 3.0).abs() < 0.1, "{:?}", points[0]);
        assert!(points[1].calibrated);
        assert!(points[1].ape_pct < points[0].ape_pct, "{points:?}");
        let summary = feedback.summary();
        assert_eq!(summary["measurements"], archs.len());
        assert_eq!(summary["table"], feedback.table().path());
    }

    #[test]
    fn failed_results_and_rows_are_skipped() {
        let (table, archs) = small_table();
        let mut feedback = CostTableFeedback::new(table, MeasuredPass::of_measure(&MeasureSettings { prefill_seq: 16, decode_cache: 15, ..MeasureSettings::default() })).unwrap();
        let failed = EvalOutcome::failed(Status::Failed, "boom", 0.0);
        feedback.on_result(&Candidate::Arch(archs[0].clone()), &failed);
        feedback.on_result(&Candidate::Arch(archs[0].clone()), &ok_outcome(&[("latency_decode_ms", f64::NAN)]));
        assert!(feedback.points().is_empty());
        let mut out = Vec::new();
        feedback.extra_features(&Candidate::Row { index: 0, source_row: 0, values: Vec::new() }, &mut out);
        assert_eq!(out, vec![0.0, 0.0]);
    }

    #[test]
    fn table_without_mode_is_rejected() {
        let (mut table, _) = small_table();
        table.settings.modes = vec![Mode::Prefill];
        let passes = vec![MeasuredPass { metric: "latency_decode_ms".into(), mode: Mode::Decode, batch: 1, seq: 15 }];
        let err = CostTableFeedback::new(table, passes).unwrap_err().to_string();
        assert!(err.contains("no decode entries"), "{err}");
    }
}
