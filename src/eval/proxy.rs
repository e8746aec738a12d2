//! Training-free quality estimates computed from the architecture alone.
//!
//! Two estimates are offered:
//! - [`Quality::DecoderParams`]: the non-embedding ("decoder") parameter count, emitted as
//!   `decoder_params` (larger is better). Lightweight Transformer Search (Javaheripi et al.,
//!   "LiteTransformerSearch", NeurIPS 2022) reports a rank correlation of 0.97 to 0.99 between
//!   this count and the perplexity of its fully trained models.
//! - [`Quality::ScalingLaw`]: the Chinchilla loss fit of Hoffmann et al. 2022,
//!   `L(N, D) = E + A / N^α + B / D^β` with E = 1.69, A = 406.4, B = 410.7, α = 0.34,
//!   β = 0.28, emitted as `loss` (smaller is better). N is the total parameter count
//!   including the token embedding and an untied output head, because the Chinchilla model
//!   sizes count all parameters. D is the number of training tokens the user gives.
//!
//! Both also emit the analytic metrics of [`Architecture::metric_map`].

use super::{EvalOutcome, Evaluator, ExactMetric, Status};
use crate::arch::metrics::ANALYTIC_METRICS;
use crate::arch::{Architecture, Dtype};
use crate::space::Candidate;
use std::collections::BTreeMap;
use std::time::Instant;

/// Name of the metric that holds the decoder-parameter proxy.
pub const DECODER_PARAMS: &str = "decoder_params";

/// Name of the metric that holds the scaling-law loss.
pub const LOSS: &str = "loss";

/// Constants of a loss fit `L(N, D) = E + A / N^α + B / D^β`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossFit {
    pub e: f64,
    pub a: f64,
    pub b: f64,
    pub alpha: f64,
    pub beta: f64,
}

impl LossFit {
    /// The fit published by Hoffmann et al. 2022 ("Training Compute-Optimal Large Language
    /// Models", approach 3).
    pub const CHINCHILLA: LossFit = LossFit { e: 1.69, a: 406.4, b: 410.7, alpha: 0.34, beta: 0.28 };

    /// Predicted loss of a model with `params` parameters trained on `tokens` tokens.
    pub fn loss(&self, params: f64, tokens: f64) -> f64 {
        self.e + self.a / params.powf(self.alpha) + self.b / tokens.powf(self.beta)
    }
}

/// Which training-free quality estimate to emit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quality {
    /// Non-embedding parameter count, as `decoder_params` (maximise).
    DecoderParams,
    /// Chinchilla loss for a given number of training tokens, as `loss` (minimise).
    ScalingLaw { train_tokens: f64 },
}

impl Quality {
    /// Builds the estimate from the command-line spelling (`proxy` or `scaling-law`) and the
    /// training-token count, which `scaling-law` requires.
    pub fn from_options(name: &str, train_tokens: Option<f64>) -> crate::Result<Quality> {
        match name {
            "proxy" => Ok(Quality::DecoderParams),
            "scaling-law" => match train_tokens {
                Some(d) if d.is_finite() && d >= 1.0 => Ok(Quality::ScalingLaw { train_tokens: d }),
                Some(d) => Err(crate::Error::Invalid(format!(
                    "--train-tokens ({d}) must be a finite number of at least 1, for example 2e10"
                ))),
                None => Err(crate::Error::Invalid(
                    "--quality scaling-law needs --train-tokens D, the number of training tokens (for example 2e10)".into(),
                )),
            },
            other => Err(crate::Error::Invalid(format!(
                "unknown --quality `{other}`; use `proxy` or `scaling-law`"
            ))),
        }
    }

    /// Name of the metric this estimate emits.
    pub fn metric_name(&self) -> &'static str {
        match self {
            Quality::DecoderParams => DECODER_PARAMS,
            Quality::ScalingLaw { .. } => LOSS,
        }
    }

    /// The objective that optimises this estimate (`max:decoder_params` or `min:loss`).
    pub fn objective(&self) -> String {
        match self {
            Quality::DecoderParams => format!("max:{DECODER_PARAMS}"),
            Quality::ScalingLaw { .. } => format!("min:{LOSS}"),
        }
    }

    /// Returns the estimate's name and training-token count, as an evaluator's settings.
    pub fn settings(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match self {
            Quality::DecoderParams => {
                out.insert("quality".into(), "proxy".into());
            }
            Quality::ScalingLaw { train_tokens } => {
                out.insert("quality".into(), "scaling-law".into());
                out.insert("train_tokens".into(), format!("{train_tokens:e}"));
            }
        }
        out
    }

    /// Value of the estimate for `arch`.
    pub fn value(&self, arch: &Architecture) -> f64 {
        match self {
            Quality::DecoderParams => arch.non_embedding_params() as f64,
            Quality::ScalingLaw { train_tokens } => LossFit::CHINCHILLA.loss(arch.params() as f64, *train_tokens),
        }
    }
}

/// Settings of the analytic metrics that accompany the quality estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnalyticSettings {
    /// Element type for the byte metrics.
    pub dtype: Dtype,
    /// Sequence length for prefill FLOPs, and KV-cache context for decode figures.
    pub seq_len: u64,
    /// Batch for the peak-memory estimate.
    pub batch: u64,
}

impl Default for AnalyticSettings {
    fn default() -> Self {
        AnalyticSettings { dtype: Dtype::F32, seq_len: 128, batch: 1 }
    }
}

/// The quality estimate plus the analytic metrics of an architecture.
pub fn proxy_metrics(arch: &Architecture, quality: Quality, settings: AnalyticSettings) -> BTreeMap<String, f64> {
    let mut metrics = arch.metric_map(settings.dtype, settings.seq_len, settings.batch);
    metrics.insert(DECODER_PARAMS.into(), arch.non_embedding_params() as f64);
    metrics.insert(quality.metric_name().into(), quality.value(arch));
    metrics
}

/// Names of the metrics [`proxy_metrics`] returns.
pub fn proxy_metric_names(quality: Quality) -> Vec<String> {
    let mut names: Vec<String> = crate::arch::presets::llama_tiny()
        .metric_map(Dtype::F32, 1, 1)
        .into_keys()
        .collect();
    names.push(DECODER_PARAMS.into());
    if quality.metric_name() != DECODER_PARAMS {
        names.push(quality.metric_name().into());
    }
    names
}

/// Returns how [`proxy_metrics`] computes `metric`, with the analytic settings `settings` gives for
/// each architecture, or `None` when it does not emit `metric`.
pub(crate) fn exact_proxy_metric(
    metric: &str,
    quality: Quality,
    settings: impl Fn(&Architecture) -> AnalyticSettings + Send + Sync + 'static,
) -> Option<ExactMetric> {
    if metric == quality.metric_name() {
        return Some(ExactMetric::new(move |arch| quality.value(arch)));
    }
    if metric == DECODER_PARAMS {
        return Some(ExactMetric::new(|arch| arch.non_embedding_params() as f64));
    }
    let &(_, f) = ANALYTIC_METRICS.iter().find(|(name, _)| *name == metric)?;
    Some(ExactMetric::new(move |arch| {
        let s = settings(arch);
        f(arch, s.dtype, s.seq_len, s.batch) as f64
    }))
}

/// The architecture a candidate denotes, or a failed outcome for a table row.
pub(crate) fn candidate_arch<'a>(candidate: &'a Candidate, evaluator: &str) -> Result<&'a Architecture, EvalOutcome> {
    match candidate {
        Candidate::Arch(arch) => Ok(arch),
        Candidate::Row { index, .. } => Err(EvalOutcome::failed(
            Status::Failed,
            format!(
                "the {evaluator} evaluator needs an architecture, but table row {index} has none; use --evaluator table or command with a table space"
            ),
            0.0,
        )),
    }
}

/// Evaluator that emits the training-free quality estimate and the analytic metrics.
#[derive(Debug, Clone)]
pub struct ProxyEvaluator {
    quality: Quality,
    settings: AnalyticSettings,
}

impl ProxyEvaluator {
    pub fn new(quality: Quality, settings: AnalyticSettings) -> Self {
        ProxyEvaluator { quality, settings }
    }

    pub fn quality(&self) -> Quality {
        self.quality
    }
}

impl Evaluator for ProxyEvaluator {
    fn name(&self) -> &str {
        "proxy"
    }

    fn metric_names(&self) -> Vec<String> {
        proxy_metric_names(self.quality)
    }

    fn evaluate(&self, _trial: u64, candidate: &Candidate) -> EvalOutcome {
        let start = Instant::now();
        let arch = match candidate_arch(candidate, "proxy") {
            Ok(arch) => arch,
            Err(outcome) => return outcome,
        };
        let metrics = proxy_metrics(arch, self.quality, self.settings);
        EvalOutcome::ok(metrics, start.elapsed().as_secs_f64())
    }

    fn exact_metric(&self, metric: &str) -> Option<ExactMetric> {
        let settings = self.settings;
        exact_proxy_metric(metric, self.quality, move |_| settings)
    }

    fn settings(&self) -> BTreeMap<String, String> {
        let mut out = self.quality.settings();
        out.insert("analytic_seq".into(), self.settings.seq_len.to_string());
        out.insert("analytic_batch".into(), self.settings.batch.to_string());
        out.insert("analytic_dtype".into(), self.settings.dtype.name().to_string());
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::arch::presets;

    #[test]
    fn decoder_params_is_non_embedding_count() {
        let arch = presets::gpt2_small();
        let eval = ProxyEvaluator::new(Quality::DecoderParams, AnalyticSettings::default());
        let outcome = eval.evaluate(0, &Candidate::Arch(arch.clone()));
        assert_eq!(outcome.status, Status::Ok);
        // GPT-2 small: 12 layers × (4·768² + 4·768 attention, 2·768·3072 + 3072 + 768 FFN,
        // 4·768 norms) plus the final LayerNorm (2·768) = 85,056,000.
        assert_eq!(outcome.metrics[DECODER_PARAMS], 85_056_000.0);
        assert_eq!(outcome.metrics["params"], arch.params() as f64);
        assert!(outcome.metrics.contains_key("kv_cache_bytes_per_token"));
    }

    /// Asserts that every metric `eval` computes exactly has the value its evaluation reports
    /// for `arch`, and returns the names of those metrics.
    pub(crate) fn check_exact_metrics(eval: &dyn Evaluator, arch: &Architecture) -> Vec<String> {
        let outcome = eval.evaluate(0, &Candidate::Arch(arch.clone()));
        assert_eq!(outcome.status, Status::Ok, "{:?}", outcome.error);
        let mut known = Vec::new();
        for name in eval.metric_names() {
            if let Some(exact) = eval.exact_metric(&name) {
                assert_eq!(exact.value(arch), outcome.metrics[&name], "{name} of {}", arch.summary());
                known.push(name);
            }
        }
        known
    }

    #[test]
    fn exact_metrics_equal_evaluated_ones() {
        let settings = AnalyticSettings { dtype: Dtype::F16, seq_len: 300, batch: 3 };
        for quality in [Quality::DecoderParams, Quality::ScalingLaw { train_tokens: 3e9 }] {
            let eval = ProxyEvaluator::new(quality, settings);
            for arch in [presets::gpt2_small(), presets::llama_tiny(), presets::llama_100m()] {
                let known = check_exact_metrics(&eval, &arch);
                // Every proxy metric follows from the architecture.
                assert_eq!(known.len(), eval.metric_names().len(), "{known:?}");
            }
            assert!(eval.exact_metric("latency_decode_ms").is_none());
        }
    }

    #[test]
    fn scaling_law_matches_chinchilla() {
        // Chinchilla itself: 70B parameters on 1.4T tokens. The fit gives
        // 1.69 + 406.4/(7e10)^0.34 + 410.7/(1.4e12)^0.28 ≈ 1.9365.
        let loss = LossFit::CHINCHILLA.loss(7.0e10, 1.4e12);
        assert!((loss - 1.9365).abs() < 1e-3, "loss {loss}");
    }

    #[test]
    fn scaling_law_uses_total_params() {
        let arch = presets::llama_tiny();
        let quality = Quality::ScalingLaw { train_tokens: 2.0e9 };
        let metrics = proxy_metrics(&arch, quality, AnalyticSettings::default());
        let expected = 1.69 + 406.4 / (arch.params() as f64).powf(0.34) + 410.7 / 2.0e9_f64.powf(0.28);
        assert!((metrics[LOSS] - expected).abs() < 1e-12);
        assert!(metrics.contains_key(DECODER_PARAMS));
    }

    #[test]
    fn scaling_law_prefers_larger_model() {
        let quality = Quality::ScalingLaw { train_tokens: 1.0e10 };
        let small = quality.value(&presets::llama_tiny());
        let large = quality.value(&presets::llama_100m());
        assert!(large < small, "large {large} small {small}");
    }

    #[test]
    fn quality_options_rejected() {
        assert!(Quality::from_options("scaling-law", None).is_err());
        assert!(Quality::from_options("scaling-law", Some(0.0)).is_err());
        assert!(Quality::from_options("scaling-law", Some(f64::NAN)).is_err());
        assert!(Quality::from_options("perplexity", None).is_err());
        assert_eq!(Quality::from_options("proxy", None).unwrap(), Quality::DecoderParams);
    }

    #[test]
    fn table_row_fails_cleanly() {
        let eval = ProxyEvaluator::new(Quality::DecoderParams, AnalyticSettings::default());
        let row = Candidate::Row { index: 3, source_row: 3, values: vec![("a".into(), "1".into())] };
        let outcome = eval.evaluate(0, &row);
        assert_eq!(outcome.status, Status::Failed);
        assert!(outcome.error.unwrap().contains("row 3"));
    }

    #[test]
    fn metric_names_match_outcome() {
        for quality in [Quality::DecoderParams, Quality::ScalingLaw { train_tokens: 1e9 }] {
            let mut names = proxy_metric_names(quality);
            names.sort();
            let metrics = proxy_metrics(&presets::llama_tiny(), quality, AnalyticSettings::default());
            let keys: Vec<String> = metrics.into_keys().collect();
            assert_eq!(names, keys);
        }
    }
}
