//! The `measure` evaluator: times the candidate's decoder forward pass with random weights.
//!
//! Each candidate runs twice on the selected [`ForwardBackend`]: a prefill of `batch ×
//! prefill_seq` tokens and one decode step of `batch` tokens against a KV cache of
//! `decode_cache` tokens. The outcome has `latency_prefill_ms`, `latency_decode_ms` and
//! `peak_memory_bytes` (the larger of the two passes), plus the proxy quality and the
//! analytic metrics at the decode context.
//!
//! Measurements are serialised with a lock even when the search runs several workers,
//! because two forward passes that share the cores or the GPU would each time slower than
//! alone.

use super::proxy::{exact_proxy_metric, proxy_metric_names, proxy_metrics, AnalyticSettings, Quality};
use super::{EvalOutcome, Evaluator, ExactMetric, Status};
use crate::arch::{Architecture, Dtype};
use crate::space::Candidate;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::Instant;

/// Forward pass to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// All `seq` tokens of each sequence at once, filling the KV cache.
    Prefill,
    /// One new token per sequence against a KV cache of `seq` tokens.
    Decode,
}

/// Timing and memory of one forward pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForwardTiming {
    /// Median latency of the timed runs, in milliseconds.
    pub latency_ms: f64,
    /// Peak memory the pass allocated, in bytes.
    pub peak_memory_bytes: u64,
}

/// Shape and repetition settings of one timed pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassSettings {
    pub batch: u64,
    /// Prefill length, or KV-cache length for decode.
    pub seq: u64,
    /// Untimed runs before the timed ones.
    pub warmup: u32,
    /// Timed runs; the median is reported.
    pub runs: u32,
    /// Seed of the random weights and inputs.
    pub seed: u64,
}

/// Something that runs and times a whole decoder forward pass (the CPU model, a GPU model).
pub trait ForwardBackend: Send + Sync {
    /// Name written to logs and summaries (`cpu`, `gpu`).
    fn name(&self) -> &str;

    /// Runs `arch` in `mode` with random weights and returns the timing, or a one-line error.
    fn run(&self, arch: &Architecture, mode: Mode, settings: PassSettings) -> Result<ForwardTiming, String>;

    /// Frees what the backend keeps between the passes of one candidate (such as its weights).
    /// The evaluator calls it after the last pass of each candidate.
    fn release(&self) {}
}

/// Settings of the `measure` evaluator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasureSettings {
    pub batch: u64,
    /// Tokens per sequence in the prefill pass.
    pub prefill_seq: u64,
    /// KV-cache length of the decode step.
    pub decode_cache: u64,
    pub warmup: u32,
    pub runs: u32,
    pub seed: u64,
}

impl Default for MeasureSettings {
    /// Batch 1, prefill of 64 tokens, decode against a cache of 64, one warm-up and two timed
    /// runs, to keep a default search on a CPU short.
    fn default() -> Self {
        MeasureSettings { batch: 1, prefill_seq: 64, decode_cache: 64, warmup: 1, runs: 2, seed: 0 }
    }
}

impl MeasureSettings {
    /// Returns the prefill length and decode cache length used for `arch`. A model with a short
    /// context cannot take the configured lengths, so it is measured at the longest it
    /// supports (decode needs one position beyond the cache).
    pub fn lengths(&self, arch: &Architecture) -> (u64, u64) {
        let prefill_seq = self.prefill_seq.min(arch.max_seq_len);
        let decode_cache = self.decode_cache.min(arch.max_seq_len.saturating_sub(1)).max(1);
        (prefill_seq, decode_cache)
    }

    /// Returns the settings of the analytic metrics reported with a measurement of `arch`: f32, the
    /// decode cache length, the measure batch.
    pub fn analytic(&self, arch: &Architecture) -> AnalyticSettings {
        AnalyticSettings { dtype: Dtype::F32, seq_len: self.lengths(arch).1, batch: self.batch }
    }

    /// Rejects zero sizes and run counts with a message that names the option.
    pub fn validate(&self) -> crate::Result<()> {
        for (name, value) in [
            ("measure batch", self.batch),
            ("measure prefill sequence length", self.prefill_seq),
            ("measure decode cache length", self.decode_cache),
            ("measure runs", self.runs as u64),
        ] {
            if value == 0 {
                return Err(crate::Error::Invalid(format!("{name} (0) must be at least 1")));
            }
        }
        Ok(())
    }
}

/// Evaluator that times forward passes on a backend (see the module documentation).
pub struct MeasureEvaluator {
    backend: Box<dyn ForwardBackend>,
    settings: MeasureSettings,
    quality: Quality,
    /// Held while a candidate is measured, so that measurements never overlap.
    exclusive: Mutex<()>,
    /// Set once a candidate was measured at lengths shorter than the settings, which is
    /// reported as a warning the first time only.
    shortened: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for MeasureEvaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeasureEvaluator")
            .field("backend", &self.backend.name())
            .field("settings", &self.settings)
            .field("quality", &self.quality)
            .finish()
    }
}

impl MeasureEvaluator {
    pub fn new(backend: Box<dyn ForwardBackend>, settings: MeasureSettings, quality: Quality) -> crate::Result<Self> {
        settings.validate()?;
        Ok(MeasureEvaluator { backend, settings, quality, exclusive: Mutex::new(()), shortened: Default::default() })
    }

    pub fn backend_name(&self) -> &str {
        self.backend.name()
    }

    pub fn settings(&self) -> MeasureSettings {
        self.settings
    }

    /// Times one pass, turning a panic in the backend into an error so the search goes on.
    fn run_pass(&self, arch: &Architecture, mode: Mode, seq: u64) -> Result<ForwardTiming, String> {
        let pass = PassSettings {
            batch: self.settings.batch,
            seq,
            warmup: self.settings.warmup,
            runs: self.settings.runs,
            seed: self.settings.seed,
        };
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.backend.run(arch, mode, pass)));
        let timing = match result {
            Ok(timing) => timing?,
            Err(_) => return Err(format!("the {} backend panicked during {mode:?}; this is a bug, please report it", self.backend.name())),
        };
        if !timing.latency_ms.is_finite() || timing.latency_ms < 0.0 {
            return Err(format!("the {} backend returned an invalid {mode:?} latency ({} ms)", self.backend.name(), timing.latency_ms));
        }
        Ok(timing)
    }
}

impl Evaluator for MeasureEvaluator {
    fn name(&self) -> &str {
        "measure"
    }

    fn metric_names(&self) -> Vec<String> {
        let mut names = proxy_metric_names(self.quality);
        for name in ["latency_prefill_ms", "latency_decode_ms"] {
            names.push(name.into());
        }
        // `peak_memory_bytes` is already among the analytic metrics; the measured value replaces it.
        names
    }

    fn evaluate(&self, _trial: u64, candidate: &Candidate) -> EvalOutcome {
        let start = Instant::now();
        let arch = match super::proxy::candidate_arch(candidate, "measure") {
            Ok(arch) => arch,
            Err(outcome) => return outcome,
        };

        let (prefill_seq, decode_cache) = self.settings.lengths(arch);
        if prefill_seq != self.settings.prefill_seq || decode_cache != self.settings.decode_cache {
            let first = !self.shortened.swap(true, std::sync::atomic::Ordering::Relaxed);
            let level = if first { log::Level::Warn } else { log::Level::Debug };
            log::log!(
                level,
                "{}: max_seq_len {} is shorter than the measure lengths (prefill {}, decode cache {}), so it is measured at prefill {prefill_seq}, decode cache {decode_cache}{}",
                arch.summary(),
                arch.max_seq_len,
                self.settings.prefill_seq,
                self.settings.decode_cache,
                if first { "; lower --measure-seq to measure every candidate at the same lengths (further cases are logged with -vv)" } else { "" }
            );
        }

        let guard = self.exclusive.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let prefill = self.run_pass(arch, Mode::Prefill, prefill_seq);
        let decode = match &prefill {
            Ok(_) => self.run_pass(arch, Mode::Decode, decode_cache),
            Err(_) => Err(String::new()),
        };
        self.backend.release();
        drop(guard);

        let elapsed = start.elapsed().as_secs_f64();
        let (prefill, decode) = match (prefill, decode) {
            (Ok(p), Ok(d)) => (p, d),
            (Err(e), _) | (Ok(_), Err(e)) => {
                return EvalOutcome::failed(Status::Failed, format!("measuring {} failed: {e}", arch.summary()), elapsed)
            }
        };

        let mut metrics = proxy_metrics(arch, self.quality, self.settings.analytic(arch));
        metrics.insert("latency_prefill_ms".into(), prefill.latency_ms);
        metrics.insert("latency_decode_ms".into(), decode.latency_ms);
        metrics.insert(
            "peak_memory_bytes".into(),
            prefill.peak_memory_bytes.max(decode.peak_memory_bytes) as f64,
        );
        EvalOutcome::ok(metrics, elapsed)
    }

    fn exact_metric(&self, metric: &str) -> Option<ExactMetric> {
        // The measured value replaces the analytic estimate.
        if metric == "peak_memory_bytes" {
            return None;
        }
        let settings = self.settings;
        exact_proxy_metric(metric, self.quality, move |arch| settings.analytic(arch))
    }

    fn settings(&self) -> std::collections::BTreeMap<String, String> {
        // The warm-up and run counts change only how steady a latency is, so they may differ.
        let mut out = self.quality.settings();
        out.insert("backend".into(), self.backend.name().to_string());
        out.insert("measure_batch".into(), self.settings.batch.to_string());
        out.insert("prefill_seq".into(), self.settings.prefill_seq.to_string());
        out.insert("decode_cache".into(), self.settings.decode_cache.to_string());
        out
    }
}

/// The CPU forward pass of [`crate::model`], timed with the evaluator's own warm-up and run
/// counts. The weights of the last architecture are kept, so the prefill and decode passes of
/// one candidate share one random initialisation; [`ForwardBackend::release`] frees them.
#[derive(Default)]
pub struct CpuBackend {
    model: Mutex<Option<(Architecture, crate::model::CpuModel)>>,
}

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend::default()
    }
}

impl ForwardBackend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn run(&self, arch: &Architecture, mode: Mode, settings: PassSettings) -> Result<ForwardTiming, String> {
        use crate::model::{random_tokens, CpuModel, Weights};

        let mut slot = self.model.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.as_ref().is_none_or(|(cached, _)| cached != arch) {
            // Free the previous model before allocating the next one.
            *slot = None;
            let weights = Weights::random(arch, settings.seed).map_err(|e| e.to_string())?;
            *slot = Some((arch.clone(), CpuModel::new(weights)));
        }
        let (_, model) = slot.as_mut().expect("the model was just built");

        let batch = settings.batch as usize;
        let seq = settings.seq as usize;
        let vocab_size = arch.vocab_size as usize;
        let mut samples_ns = Vec::with_capacity(settings.runs as usize);
        let total = settings.warmup + settings.runs;
        let cache = match mode {
            Mode::Prefill => {
                let tokens = random_tokens(batch * seq, vocab_size, settings.seed);
                let mut kv = model.new_cache(batch, seq).map_err(|e| e.to_string())?;
                model.reserve_scratch(batch * seq).map_err(|e| e.to_string())?;
                for i in 0..total {
                    kv.clear();
                    let start = Instant::now();
                    let logits = model.prefill(&tokens, batch, seq, &mut kv).map_err(|e| e.to_string())?;
                    let elapsed = start.elapsed();
                    std::hint::black_box(&logits);
                    if i >= settings.warmup {
                        samples_ns.push(elapsed.as_nanos() as f64);
                    }
                }
                kv
            }
            Mode::Decode => {
                // The cache contains `seq` past positions, so the new token attends to seq + 1.
                let tokens = random_tokens(batch, vocab_size, settings.seed);
                let mut kv = model.new_cache(batch, seq + 1).map_err(|e| e.to_string())?;
                kv.fill_random(seq, settings.seed).map_err(|e| e.to_string())?;
                model.reserve_scratch(batch).map_err(|e| e.to_string())?;
                let mut logits = vec![0.0f32; batch * vocab_size];
                for i in 0..total {
                    kv.truncate(seq);
                    let start = Instant::now();
                    model.decode_into(&tokens, &mut kv, &mut logits).map_err(|e| e.to_string())?;
                    let elapsed = start.elapsed();
                    std::hint::black_box(&logits);
                    if i >= settings.warmup {
                        samples_ns.push(elapsed.as_nanos() as f64);
                    }
                }
                kv
            }
        };

        let stats = crate::stats::TimingStats::from_samples(&samples_ns).ok_or("no timed runs were made")?;
        Ok(ForwardTiming { latency_ms: stats.median_ns / 1e6, peak_memory_bytes: model.peak_memory_bytes(&cache) })
    }

    fn release(&self) {
        *self.model.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }
}

/// Measures forward passes on the GPU with [`crate::model::gpu::bench_gpu`], in f32.
///
/// `bench_gpu` always makes at least 3 warm-ups and 10 timed runs, so a candidate costs more
/// passes here than the settings ask for on the CPU.
pub struct GpuBackend {
    ctx: std::sync::Arc<crate::device::GpuContext>,
}

impl GpuBackend {
    pub fn new(ctx: std::sync::Arc<crate::device::GpuContext>) -> Self {
        GpuBackend { ctx }
    }
}

impl ForwardBackend for GpuBackend {
    fn name(&self) -> &str {
        "gpu"
    }

    fn run(&self, arch: &Architecture, mode: Mode, settings: PassSettings) -> Result<ForwardTiming, String> {
        // `settings.seq` is the cache length for decode, and bench_gpu counts the new token too.
        let (seq, model_mode) = match mode {
            Mode::Prefill => (settings.seq, crate::model::Mode::Prefill),
            Mode::Decode => (settings.seq + 1, crate::model::Mode::Decode),
        };
        let result = crate::model::gpu::bench_gpu(
            &self.ctx,
            arch,
            model_mode,
            settings.batch as usize,
            seq as usize,
            crate::device::DType::F32,
            settings.warmup as usize,
            settings.runs as usize,
            settings.seed,
        )
        .map_err(|e| e.to_string())?;
        Ok(ForwardTiming { latency_ms: result.latency_ms, peak_memory_bytes: result.peak_memory_bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::presets;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A backend whose latency is a known function of the shape, and that counts overlap.
    struct FakeBackend {
        running: Arc<AtomicUsize>,
        max_running: Arc<AtomicUsize>,
        fail_decode: bool,
        panic: bool,
    }

    impl FakeBackend {
        fn new() -> Self {
            FakeBackend { running: Arc::default(), max_running: Arc::default(), fail_decode: false, panic: false }
        }
    }

    impl ForwardBackend for FakeBackend {
        fn name(&self) -> &str {
            "fake"
        }

        fn run(&self, arch: &Architecture, mode: Mode, settings: PassSettings) -> Result<ForwardTiming, String> {
            if self.panic {
                panic!("fake backend bug");
            }
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(5));
            self.running.fetch_sub(1, Ordering::SeqCst);
            match mode {
                Mode::Decode if self.fail_decode => Err("out of memory".into()),
                Mode::Prefill => Ok(ForwardTiming { latency_ms: settings.seq as f64, peak_memory_bytes: 1000 }),
                Mode::Decode => Ok(ForwardTiming { latency_ms: arch.n_layers as f64, peak_memory_bytes: 400 }),
            }
        }
    }

    #[test]
    fn exact_metrics_equal_measured_ones() {
        let settings = MeasureSettings { batch: 2, prefill_seq: 48, decode_cache: 200, ..MeasureSettings::default() };
        let eval = MeasureEvaluator::new(Box::new(FakeBackend::new()), settings, Quality::DecoderParams).unwrap();
        // The second model's context (128) is shorter than the decode cache, so its analytic
        // metrics use a shorter one.
        let short = Architecture { max_seq_len: 128, ..presets::llama_tiny() };
        for arch in [presets::gpt2_small(), short] {
            let known = crate::eval::proxy::tests::check_exact_metrics(&eval, &arch);
            for name in ["decoder_params", "params", "flops_per_token_decode", "weight_bytes"] {
                assert!(known.iter().any(|k| k == name), "{name} not known: {known:?}");
            }
            for name in ["latency_prefill_ms", "latency_decode_ms", "peak_memory_bytes"] {
                assert!(eval.exact_metric(name).is_none(), "{name} must be measured");
            }
        }
    }

    #[test]
    fn measure_reports_both_passes() {
        let eval = MeasureEvaluator::new(Box::new(FakeBackend::new()), MeasureSettings::default(), Quality::DecoderParams).unwrap();
        let arch = presets::llama_tiny();
        let outcome = eval.evaluate(0, &Candidate::Arch(arch.clone()));
        assert_eq!(outcome.status, Status::Ok, "{:?}", outcome.error);
        assert_eq!(outcome.metrics["latency_prefill_ms"], MeasureSettings::default().prefill_seq as f64);
        assert_eq!(outcome.metrics["latency_decode_ms"], arch.n_layers as f64);
        assert_eq!(outcome.metrics["peak_memory_bytes"], 1000.0);
        assert_eq!(outcome.metrics["decoder_params"], arch.non_embedding_params() as f64);
        for name in eval.metric_names() {
            assert!(outcome.metrics.contains_key(&name), "missing {name}");
        }
    }

    #[test]
    fn measure_clamps_to_context() {
        let eval = MeasureEvaluator::new(Box::new(FakeBackend::new()), MeasureSettings::default(), Quality::DecoderParams).unwrap();
        let arch = Architecture { max_seq_len: 32, ..presets::llama_tiny() };
        let outcome = eval.evaluate(0, &Candidate::Arch(arch));
        assert_eq!(outcome.metrics["latency_prefill_ms"], 32.0);
    }

    #[test]
    fn measure_backend_error_fails() {
        let backend = FakeBackend { fail_decode: true, ..FakeBackend::new() };
        let eval = MeasureEvaluator::new(Box::new(backend), MeasureSettings::default(), Quality::DecoderParams).unwrap();
        let outcome = eval.evaluate(0, &Candidate::Arch(presets::llama_tiny()));
        assert_eq!(outcome.status, Status::Failed);
        assert!(outcome.error.unwrap().contains("out of memory"));
    }

    #[test]
    fn measure_backend_panic_fails() {
        let backend = FakeBackend { panic: true, ..FakeBackend::new() };
        let eval = MeasureEvaluator::new(Box::new(backend), MeasureSettings::default(), Quality::DecoderParams).unwrap();
        let outcome = eval.evaluate(0, &Candidate::Arch(presets::llama_tiny()));
        assert_eq!(outcome.status, Status::Failed);
        assert!(outcome.error.unwrap().contains("panicked"));
        // The lock survives the panic, so the next candidate is measured.
        let again = eval.evaluate(1, &Candidate::Arch(presets::llama_tiny()));
        assert_eq!(again.status, Status::Failed);
    }

    #[test]
    fn measure_never_overlaps() {
        let backend = FakeBackend::new();
        let max_running = backend.max_running.clone();
        let eval = MeasureEvaluator::new(Box::new(backend), MeasureSettings::default(), Quality::DecoderParams).unwrap();
        std::thread::scope(|scope| {
            for trial in 0..4 {
                let eval = &eval;
                scope.spawn(move || eval.evaluate(trial, &Candidate::Arch(presets::llama_tiny())));
            }
        });
        assert_eq!(max_running.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn measure_settings_rejected() {
        let settings = MeasureSettings { runs: 0, ..MeasureSettings::default() };
        let err = MeasureEvaluator::new(Box::new(FakeBackend::new()), settings, Quality::DecoderParams).unwrap_err();
        assert!(err.to_string().contains("runs (0)"));
    }
}
