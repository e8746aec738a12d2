//! Calibration: a per-mode linear correction `measured ≈ a · predicted + b`, fitted to measured
//! whole-model latencies. The sum of isolated op timings misses what a real forward pass adds or
//! saves: cache reuse between ops, KV-cache writes, buffer copies. These effects scale roughly
//! with the model, so a slope and an intercept per mode absorb most of them.
//!
//! The fit minimises the squared relative error `Σ ((a·p_i + b − m_i) / m_i)²`, so small and
//! large models weigh alike, matching how the error is reported (MAPE, share within ±10%).

use super::ops::Mode;
use super::table::CostTable;
use super::CostError;
use crate::arch::Architecture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One measured forward pass kept in the table, so the fit can be redone when entries change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub arch: Architecture,
    pub mode: Mode,
    pub batch: u64,
    pub seq: u64,
    pub measured_ms: f64,
    /// Raw prediction from the table's entries when last fitted.
    pub predicted_ms: f64,
}

/// The correction of one mode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinearFit {
    /// Slope applied to the raw prediction.
    pub a: f64,
    /// Intercept in milliseconds.
    pub b: f64,
    /// Models the fit used.
    pub n_models: usize,
    /// Mean absolute percentage error of the raw predictions on those models, as a fraction.
    pub mape_before: f64,
    /// The same after the correction (an in-sample figure: held-out errors come from
    /// `alphanas validate-cost`).
    pub mape_after: f64,
    /// Smallest raw prediction among the fitted models. Below it the correction is the pure
    /// scale it has there, so a negative intercept cannot push small models towards zero.
    /// Absent in tables written before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_predicted_ms: Option<f64>,
}

impl LinearFit {
    /// Fits `a` and `b` to raw predictions and measurements (both in ms). One model gives a pure
    /// scale (`b = 0`). A slope that would come out non-positive also falls back to a pure scale,
    /// the median ratio, because a correction must keep larger predictions larger. Returns
    /// `None` without data.
    pub fn fit(predicted: &[f64], measured: &[f64]) -> Option<LinearFit> {
        let n = predicted.len().min(measured.len());
        if n == 0 {
            return None;
        }
        let (predicted, measured) = (&predicted[..n], &measured[..n]);

        let (a, b) = if n == 1 {
            (measured[0] / predicted[0], 0.0)
        } else {
            // Weighted normal equations for rows (p_i / m_i, 1 / m_i) with target 1.
            let (mut spp, mut sp1, mut s11, mut sp, mut s1) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for (&p, &m) in predicted.iter().zip(measured) {
                let (x, w) = (p / m, 1.0 / m);
                spp += x * x;
                sp1 += x * w;
                s11 += w * w;
                sp += x;
                s1 += w;
            }
            let det = spp * s11 - sp1 * sp1;
            let a = (sp * s11 - s1 * sp1) / det;
            let b = (spp * s1 - sp1 * sp) / det;
            if det.abs() > 1e-300 && a.is_finite() && b.is_finite() && a > 0.0 {
                (a, b)
            } else {
                let mut ratios: Vec<f64> = measured.iter().zip(predicted).map(|(m, p)| m / p).collect();
                ratios.sort_by(f64::total_cmp);
                (crate::stats::percentile_sorted(&ratios, 0.5), 0.0)
            }
        };

        let min_predicted_ms = predicted.iter().copied().fold(f64::INFINITY, f64::min);
        let mut fit = LinearFit { a, b, n_models: n, mape_before: 0.0, mape_after: 0.0, min_predicted_ms: Some(min_predicted_ms) };
        let corrected: Vec<f64> = predicted.iter().map(|&p| fit.apply(p)).collect();
        fit.mape_before = crate::stats::mape(predicted, measured);
        fit.mape_after = crate::stats::mape(&corrected, measured);
        Some(fit)
    }

    /// Returns the corrected latency. Within and above the fitted range it is `a·raw + b`.
    /// Below the smallest fitted prediction it is `raw` times the ratio the line gives there,
    /// because extrapolating the intercept to small models can make their latency tiny or
    /// negative. The result is never below 1% of the raw one.
    pub fn apply(&self, raw_ms: f64) -> f64 {
        let corrected = match self.min_predicted_ms {
            Some(low) if raw_ms < low && low > 0.0 => raw_ms * (self.a * low + self.b) / low,
            _ => self.a * raw_ms + self.b,
        };
        corrected.max(0.01 * raw_ms)
    }
}

/// The calibration stored in a table: the measurements and the fit per mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub modes: BTreeMap<Mode, LinearFit>,
    pub measurements: Vec<Measurement>,
}

impl Calibration {
    /// Returns the corrected latency for `mode`, or `None` when that mode has no fit.
    pub fn apply(&self, mode: Mode, raw_ms: f64) -> Option<f64> {
        self.modes.get(&mode).map(|fit| fit.apply(raw_ms))
    }
}

impl CostTable {
    /// Records a measured forward pass at the table's batch and sequence length. Call
    /// [`CostTable::recalibrate`] afterwards to refit.
    pub fn add_measurement(&mut self, arch: &Architecture, mode: Mode, measured_ms: f64) -> Result<(), CostError> {
        let (batch, seq) = (self.settings.batch, self.settings.seq);
        self.add_measurement_at(arch, mode, batch, seq, measured_ms)
    }

    /// Records a measured forward pass at any batch and sequence length.
    pub fn add_measurement_at(&mut self, arch: &Architecture, mode: Mode, batch: u64, seq: u64, measured_ms: f64) -> Result<(), CostError> {
        if !(measured_ms.is_finite() && measured_ms > 0.0) {
            return Err(CostError::Invalid(format!(
                "measured latency ({measured_ms} ms) of {arch} must be a positive finite number"
            )));
        }
        // Quiet, because callers that measure many models report extrapolation themselves.
        let predicted_ms = super::predict::Predictor::new(self).quiet().predict(arch, mode, batch, seq)?.raw_ms;
        let calibration = self.calibration.get_or_insert_with(Calibration::default);
        calibration.measurements.push(Measurement { arch: arch.clone(), mode, batch, seq, measured_ms, predicted_ms });
        Ok(())
    }

    /// Predicts every stored measurement again from the current entries and refits the
    /// correction of each mode that has measurements. Logs the in-sample error before and after.
    pub fn recalibrate(&mut self) -> Result<(), CostError> {
        let Some(mut calibration) = self.calibration.take() else {
            return Ok(());
        };
        let result = self.refit(&mut calibration);
        self.calibration = Some(calibration);
        result
    }

    fn refit(&self, calibration: &mut Calibration) -> Result<(), CostError> {
        // Quiet: every refit predicts every measured model again, and their extrapolated shapes
        // were reported when they were first predicted.
        let predictor = super::predict::Predictor::new(self).quiet();
        for m in &mut calibration.measurements {
            m.predicted_ms = predictor.predict(&m.arch, m.mode, m.batch, m.seq)?.raw_ms;
        }
        calibration.modes.clear();
        for mode in Mode::ALL {
            let (predicted, measured): (Vec<f64>, Vec<f64>) = calibration
                .measurements
                .iter()
                .filter(|m| m.mode == mode)
                .map(|m| (m.predicted_ms, m.measured_ms))
                .unzip();
            if let Some(fit) = LinearFit::fit(&predicted, &measured) {
                log::info!(
                    "calibrated {mode} on {}: measured ≈ {:.4}·predicted + {:.4} ms, MAPE {:.1}% → {:.1}% (in-sample)",
                    crate::error::plural(fit.n_models, "model", "models"),
                    fit.a,
                    fit.b,
                    fit.mape_before * 100.0,
                    fit.mape_after * 100.0
                );
                calibration.modes.insert(mode, fit);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{presets, Dtype};
    use crate::cost::ops::model_ops;
    use crate::cost::table::tests::{test_device, test_settings};
    use crate::stats::TimingStats;

    #[test]
    fn fit_recovers_exact_line() {
        let predicted = [1.0, 2.0, 5.0, 10.0];
        let measured: Vec<f64> = predicted.iter().map(|p| 1.3 * p + 0.4).collect();
        let fit = LinearFit::fit(&predicted, &measured).unwrap();
        assert!((fit.a - 1.3).abs() < 1e-9, "{fit:?}");
        assert!((fit.b - 0.4).abs() < 1e-9, "{fit:?}");
        assert!(fit.mape_after < 1e-9);
        assert!(fit.mape_before > 0.2);
        assert_eq!(fit.n_models, 4);
    }

    #[test]
    fn fit_single_model_is_a_scale() {
        let fit = LinearFit::fit(&[2.0], &[3.0]).unwrap();
        assert_eq!((fit.a, fit.b), (1.5, 0.0));
        assert!(LinearFit::fit(&[], &[]).is_none());
    }

    #[test]
    fn fit_falls_back_when_slope_is_not_positive() {
        // Measurements that fall as predictions rise: the line would have a negative slope.
        let fit = LinearFit::fit(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap();
        assert!(fit.a > 0.0);
        assert_eq!(fit.b, 0.0);
        assert!((fit.a - 1.0).abs() < 1e-12, "median ratio of 3, 1 and 1/3 is 1: {fit:?}");
    }

    #[test]
    fn apply_never_goes_negative() {
        let fit = LinearFit { a: 1.0, b: -5.0, n_models: 2, mape_before: 0.0, mape_after: 0.0, min_predicted_ms: None };
        assert_eq!(fit.apply(1.0), 0.01);
        assert_eq!(fit.apply(10.0), 5.0);
    }

    #[test]
    fn apply_scales_below_fitted_range() {
        // Fitted on raw predictions of 20 to 40 ms: a negative intercept would send a 2 ms model
        // to 0.02 ms. Below 20 ms the ratio at 20 ms (15 / 20) applies instead.
        let fit = LinearFit::fit(&[20.0, 30.0, 40.0], &[15.0, 25.0, 35.0]).unwrap();
        assert!((fit.a - 1.0).abs() < 1e-9, "{fit:?}");
        assert!((fit.b + 5.0).abs() < 1e-9, "{fit:?}");
        assert_eq!(fit.min_predicted_ms, Some(20.0));
        assert!((fit.apply(2.0) - 1.5).abs() < 1e-9, "{}", fit.apply(2.0));
        assert!((fit.apply(30.0) - 25.0).abs() < 1e-9);
        assert!((fit.apply(60.0) - 55.0).abs() < 1e-9);
        // The two pieces meet at the smallest fitted prediction.
        assert!((fit.apply(20.0 - 1e-9) - fit.apply(20.0)).abs() < 1e-6);
    }

    #[test]
    fn add_measurement_then_recalibrate() {
        let mut table = CostTable::new(test_device(), Dtype::F32, test_settings(), 0.0, true);
        let archs: Vec<Architecture> = [128u64, 256, 384]
            .into_iter()
            .map(|d| Architecture { d_model: d, d_ff: 3 * d, ..presets::llama_tiny() })
            .collect();
        for arch in &archs {
            for mode in Mode::ALL {
                for o in model_ops(arch, mode, 1, 16) {
                    let t = 1000.0 + o.op.flops() / 10.0;
                    table.insert(&o.op, &TimingStats { median_ns: t, p10_ns: t, p90_ns: t, runs: 1 });
                }
            }
        }

        // The device runs every model 20% slower than its ops add up to, plus 0.1 ms.
        for arch in &archs {
            let raw = table.predict_default(arch, Mode::Prefill).unwrap().raw_ms;
            table.add_measurement(arch, Mode::Prefill, 1.2 * raw + 0.1).unwrap();
        }
        assert!(table.predict_default(&archs[0], Mode::Prefill).unwrap().calibrated_ms.is_none());
        table.recalibrate().unwrap();

        let calibration = table.calibration.as_ref().unwrap();
        assert_eq!(calibration.measurements.len(), 3);
        assert!(calibration.modes.contains_key(&Mode::Prefill));
        assert!(!calibration.modes.contains_key(&Mode::Decode));
        let prediction = table.predict_default(&archs[1], Mode::Prefill).unwrap();
        let calibrated = prediction.calibrated_ms.unwrap();
        assert!((calibrated - (1.2 * prediction.raw_ms + 0.1)).abs() < 1e-9);
        assert!(table.predict_default(&archs[1], Mode::Decode).unwrap().calibrated_ms.is_none());
    }

    #[test]
    fn add_measurement_rejects_bad_latency() {
        let mut table = CostTable::new(test_device(), Dtype::F32, test_settings(), 0.0, true);
        let err = table.add_measurement(&presets::llama_tiny(), Mode::Decode, f64::NAN).unwrap_err().to_string();
        assert!(err.contains("must be a positive finite number"), "{err}");
    }
}
