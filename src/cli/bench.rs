//! `alphanas bench`: `op` times one kernel, `model` a whole forward pass.
//!
//! `bench op` builds random inputs (seeded), times the kernel with the runtime's timing
//! helpers (GPU: pass timestamps where usable; CPU: the fast multi-threaded path), then
//! compares one more result with the CPU reference. The reported `max_rel_err` is the largest
//! absolute difference divided by the largest reference magnitude, so values near zero do not
//! inflate it.

use super::Global;
use crate::device::{time_cpu, time_gpu_with_source, Backend, DType, GpuContext, GpuTensor, TimingSource};
use crate::kernels::{activation, attention, embedding, matmul, norm, rope, softmax};
use crate::stats::TimingStats;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Time one kernel and check it against the CPU reference.
    #[command(allow_negative_numbers = true)]
    Op(OpArgs),
    /// Time a whole forward pass (prefill or decode) of an architecture.
    #[command(allow_negative_numbers = true)]
    Model(super::bench_model::ModelArgs),
}

/// Kernels `bench op` can time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OpName {
    Matmul,
    Softmax,
    Layernorm,
    Rmsnorm,
    Gelu,
    Swiglu,
    Rope,
    Embedding,
    ResidualAdd,
    Attention,
}

/// Element types `bench op` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FloatType {
    F32,
    F16,
}

impl FloatType {
    fn dtype(self) -> DType {
        match self {
            FloatType::F32 => DType::F32,
            FloatType::F16 => DType::F16,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct OpArgs {
    /// The kernel to time.
    #[arg(value_enum)]
    pub name: OpName,

    /// matmul: rows of A and C.
    #[arg(long, default_value_t = 512)]
    pub m: usize,
    /// matmul: columns of B and C.
    #[arg(long, default_value_t = 512)]
    pub n: usize,
    /// matmul: columns of A, rows of B.
    #[arg(long, default_value_t = 512)]
    pub k: usize,
    /// matmul: add a bias of n elements to every row.
    #[arg(long)]
    pub bias: bool,
    /// matmul: B is stored as [n, k] (a weight matrix in PyTorch's layout).
    #[arg(long)]
    pub transpose_b: bool,

    /// Row-wise ops: number of rows (tokens for rope and embedding).
    #[arg(long, default_value_t = 512)]
    pub rows: usize,
    /// Row-wise ops: elements per row (n_heads * head_dim for rope, d for embedding).
    #[arg(long, default_value_t = 1024)]
    pub cols: usize,
    /// rope: elements per head (even; must divide --cols).
    #[arg(long, default_value_t = 64)]
    pub rope_head_dim: usize,
    /// embedding: vocabulary size.
    #[arg(long, default_value_t = 32000)]
    pub vocab: usize,

    /// attention: sequences in the batch.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// attention: tokens per sequence (prefill).
    #[arg(long, default_value_t = 512)]
    pub seq: usize,
    /// attention: query heads.
    #[arg(long, default_value_t = 8)]
    pub heads: usize,
    /// attention: key/value heads (defaults to --heads).
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// attention: elements per head.
    #[arg(long, default_value_t = 64)]
    pub head_dim: usize,
    /// attention: prefill (causal, over --seq) or decode (one query over --cache keys).
    #[arg(long, value_enum, default_value_t = AttentionMode::Prefill)]
    pub mode: AttentionMode,
    /// attention decode: KV cache length, including the new token.
    #[arg(long, default_value_t = 1024)]
    pub cache: usize,

    /// Element type (f16 needs a GPU with SHADER_F16).
    #[arg(long, value_enum, default_value_t = FloatType::F32)]
    pub dtype: FloatType,
    /// Timed runs (at least 10).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Untimed warm-up runs (at least 3).
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttentionMode {
    Prefill,
    Decode,
}

/// The result `bench op` prints; `--json` prints it as one object.
#[derive(Debug, Clone, Serialize)]
pub struct OpReport {
    pub op: String,
    /// The shape flags, for example `{"m": 512, "n": 512, "k": 512}`.
    pub shape: serde_json::Map<String, serde_json::Value>,
    pub backend: String,
    pub device: String,
    pub dtype: String,
    pub median_ns: f64,
    pub p10_ns: f64,
    pub p90_ns: f64,
    pub runs: usize,
    /// `timestamps`, `wall_clock` (GPU) or `cpu`.
    pub timing: String,
    /// Arithmetic throughput at the median time (matmul).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gflops: Option<f64>,
    /// Memory throughput at the median time: bytes read and written once each (other ops).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gbps: Option<f64>,
    pub max_abs_err: f64,
    pub max_rel_err: f64,
    /// Rows of the output compared with the reference (all rows unless the reference would
    /// take too long); for attention, whole sequences of the batch.
    pub checked_rows: usize,
}

pub fn run(args: &Args, global: &Global) -> crate::Result<()> {
    match &args.command {
        BenchCommand::Op(op) => run_op(op, global),
        BenchCommand::Model(model) => super::bench_model::run(model, global),
    }
}

fn run_op(args: &OpArgs, global: &Global) -> crate::Result<()> {
    crate::device::timing::check_run_counts(args.warmup, args.runs)?;
    let backend = Backend::resolve_for_measurement(global.backend)?;
    let report = measure_op(args, &backend)?;

    if global.json {
        return super::print_json(&report);
    }
    print_report(&report);
    Ok(())
}

/// Times the op of `args` on `backend` and compares its result with the CPU reference.
pub fn measure_op(args: &OpArgs, backend: &Backend) -> crate::Result<OpReport> {
    let problem = Problem::new(args)?;
    log::info!("timing {} on {}", problem.label(), backend.device_name());

    let report = match backend {
        Backend::Gpu(ctx) => problem.run_gpu(ctx, args)?,
        Backend::Cpu => {
            if args.dtype == FloatType::F16 {
                return Err(crate::Error::Invalid("the CPU backend computes in f32 only; use --dtype f32 or --backend gpu".into()));
            }
            problem.run_cpu(args)?
        }
    };
    Ok(OpReport { device: backend.device_name(), ..report })
}

/// Rejects sizes whose host buffers (inputs, output and the CPU reference's output, as f32)
/// exceed the available memory, before anything is allocated.
fn check_problem_memory(args: &OpArgs) -> crate::Result<()> {
    // f64, because products of several sizes overflow any integer type.
    let n = |value: usize| value as f64;
    let (rows, cols) = (n(args.rows), n(args.cols));
    let elements = match args.op_name() {
        OpName::Matmul => n(args.m) * n(args.k) + n(args.k) * n(args.n) + 2.0 * n(args.m) * n(args.n) + n(args.n),
        OpName::Softmax | OpName::Gelu => 3.0 * rows * cols,
        OpName::Swiglu | OpName::ResidualAdd => 4.0 * rows * cols,
        OpName::Layernorm | OpName::Rmsnorm => 3.0 * rows * cols + 2.0 * cols,
        OpName::Rope => 3.0 * rows * cols + rows,
        OpName::Embedding => n(args.vocab) * cols + 3.0 * rows * cols,
        OpName::Attention => {
            let kv_heads = n(args.kv_heads.unwrap_or(args.heads));
            let (queries, keys) = match args.mode {
                AttentionMode::Prefill => (n(args.seq), n(args.seq)),
                AttentionMode::Decode => (1.0, n(args.cache)),
            };
            let per_head = n(args.batch) * n(args.head_dim);
            3.0 * per_head * queries * n(args.heads) + 2.0 * per_head * keys * kv_heads
        }
    };
    // The cast saturates at u64::MAX.
    let bytes = (elements * 4.0) as u64;
    crate::model::weights::check_memory(
        "the op's inputs, output and reference",
        bytes,
        "use smaller sizes (--m, --n, --k, --rows, --cols, --vocab, --seq, --cache, --batch or --heads)",
    )
}

fn print_report(report: &OpReport) {
    let shape: Vec<String> = report.shape.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("op          {} {} ({})", report.op, shape.join(" "), report.dtype);
    println!("device      {} ({}, timing: {})", report.device, report.backend, report.timing);
    println!(
        "time        median {}  p10 {}  p90 {}  ({} runs)",
        format_ns(report.median_ns),
        format_ns(report.p10_ns),
        format_ns(report.p90_ns),
        report.runs
    );
    if let Some(gflops) = report.gflops {
        println!("throughput  {gflops:.2} GFLOP/s");
    }
    if let Some(gbps) = report.gbps {
        println!("throughput  {gbps:.2} GB/s");
    }
    // Attention is checked whole sequence by whole sequence, the other ops row by row.
    let checked = if report.op == "attention" {
        super::plural(report.checked_rows, "sequence", "sequences")
    } else {
        super::plural(report.checked_rows, "row", "rows")
    };
    println!(
        "error       max abs {:.3e}  max rel {:.3e}  (vs the CPU reference, {checked})",
        report.max_abs_err, report.max_rel_err
    );
}

fn format_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn random(len: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Returns the inputs as the kernel stores them: rounded to f16 for `F16`.
fn as_stored(values: Vec<f32>, dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F16 => values.into_iter().map(|v| half::f16::from_f32(v).to_f32()).collect(),
        _ => values,
    }
}

/// Largest absolute difference and that difference over the largest reference magnitude.
fn errors(got: &[f32], expected: &[f32]) -> (f64, f64) {
    let max_abs = got.iter().zip(expected).map(|(g, e)| (g - e).abs() as f64).fold(0.0, f64::max);
    let scale = expected.iter().map(|e| e.abs() as f64).fold(0.0, f64::max);
    let rel = if scale > 0.0 { max_abs / scale } else { max_abs };
    (max_abs, rel)
}

/// Matmul references beyond this many multiply-adds check only the first rows of C.
const FULL_CHECK_MACS: usize = 1 << 28;

/// One op with its inputs, ready to run on either backend.
struct Problem {
    op: OpName,
    dtype: DType,
    shape: serde_json::Map<String, serde_json::Value>,
    /// Inputs as stored (f16-rounded for f16).
    inputs: Vec<Vec<f32>>,
    ids: Vec<u32>,
    /// Rows of the output the reference covers.
    checked_rows: usize,
    /// Work per run: flops for matmul, bytes for the others.
    work: f64,
}

impl Problem {
    fn new(args: &OpArgs) -> crate::Result<Problem> {
        let dtype = args.dtype.dtype();
        let es = dtype.size() as f64;
        let mut rng = StdRng::seed_from_u64(args.seed);
        let mut shape = serde_json::Map::new();
        let mut put = |key: &str, value: usize| {
            shape.insert(key.to_string(), value.into());
        };
        let positive = |name: &str, value: usize| -> crate::Result<()> {
            if value == 0 {
                return Err(crate::Error::Invalid(format!("--{name} must be at least 1")));
            }
            Ok(())
        };
        let (rows, cols) = (args.rows, args.cols);
        check_problem_memory(args)?;

        let (inputs, ids, checked_rows, work) = match args.op_name() {
            OpName::Matmul => {
                let (m, n, k) = (args.m, args.n, args.k);
                positive("m", m)?;
                positive("n", n)?;
                positive("k", k)?;
                put("m", m);
                put("n", n);
                put("k", k);
                let mut inputs = vec![as_stored(random(m * k, &mut rng), dtype), as_stored(random(k * n, &mut rng), dtype)];
                if args.bias {
                    inputs.push(as_stored(random(n, &mut rng), dtype));
                }
                let checked = if m * n * k <= FULL_CHECK_MACS { m } else { (FULL_CHECK_MACS / (n * k)).clamp(1, m) };
                (inputs, Vec::new(), checked, 2.0 * (m * n * k) as f64)
            }
            OpName::Softmax | OpName::Gelu => {
                positive("rows", rows)?;
                positive("cols", cols)?;
                put("rows", rows);
                put("cols", cols);
                (vec![as_stored(random(rows * cols, &mut rng), dtype)], Vec::new(), rows, 2.0 * (rows * cols) as f64 * es)
            }
            OpName::Swiglu | OpName::ResidualAdd => {
                positive("rows", rows)?;
                positive("cols", cols)?;
                put("rows", rows);
                put("cols", cols);
                let inputs = vec![as_stored(random(rows * cols, &mut rng), dtype), as_stored(random(rows * cols, &mut rng), dtype)];
                (inputs, Vec::new(), rows, 3.0 * (rows * cols) as f64 * es)
            }
            OpName::Layernorm | OpName::Rmsnorm => {
                positive("rows", rows)?;
                positive("cols", cols)?;
                put("rows", rows);
                put("cols", cols);
                let x = as_stored(random(rows * cols, &mut rng), dtype);
                let weight = as_stored(random(cols, &mut rng), dtype);
                let bias = as_stored(random(cols, &mut rng), dtype);
                (vec![x, weight, bias], Vec::new(), rows, (2 * rows * cols + 2 * cols) as f64 * es)
            }
            OpName::Rope => {
                positive("rows", rows)?;
                positive("cols", cols)?;
                let head_dim = args.rope_head_dim;
                if head_dim == 0 || !head_dim.is_multiple_of(2) || cols % head_dim != 0 {
                    return Err(crate::Error::Invalid(format!(
                        "--rope-head-dim ({head_dim}) must be even and divide --cols ({cols})"
                    )));
                }
                put("rows", rows);
                put("cols", cols);
                put("head_dim", head_dim);
                let positions: Vec<u32> = (0..rows as u32).collect();
                (vec![as_stored(random(rows * cols, &mut rng), dtype)], positions, rows, 2.0 * (rows * cols) as f64 * es + 4.0 * rows as f64)
            }
            OpName::Embedding => {
                positive("rows", rows)?;
                positive("cols", cols)?;
                positive("vocab", args.vocab)?;
                put("rows", rows);
                put("cols", cols);
                put("vocab", args.vocab);
                let ids: Vec<u32> = (0..rows).map(|_| rng.random_range(0..args.vocab as u32)).collect();
                (vec![as_stored(random(args.vocab * cols, &mut rng), dtype)], ids, rows, 2.0 * (rows * cols) as f64 * es + 4.0 * rows as f64)
            }
            OpName::Attention => {
                let (batch, heads, head_dim) = (args.batch, args.heads, args.head_dim);
                let kv_heads = args.kv_heads.unwrap_or(heads);
                positive("batch", batch)?;
                positive("heads", heads)?;
                positive("kv-heads", kv_heads)?;
                positive("head-dim", head_dim)?;
                if heads % kv_heads != 0 {
                    return Err(crate::Error::Invalid(format!(
                        "--kv-heads ({kv_heads}) must divide --heads ({heads}); each key/value head serves a whole group of query heads"
                    )));
                }
                // Keys and values span the sequence in prefill and the cache in decode.
                let (queries, keys) = match args.mode {
                    AttentionMode::Prefill => {
                        positive("seq", args.seq)?;
                        (args.seq, args.seq)
                    }
                    AttentionMode::Decode => {
                        positive("cache", args.cache)?;
                        (1, args.cache)
                    }
                };
                put("batch", batch);
                put(if args.mode == AttentionMode::Prefill { "seq" } else { "cache" }, keys);
                put("heads", heads);
                put("kv_heads", kv_heads);
                put("head_dim", head_dim);
                let q = as_stored(random(batch * queries * heads * head_dim, &mut rng), dtype);
                let k = as_stored(random(batch * keys * kv_heads * head_dim, &mut rng), dtype);
                let v = as_stored(random(batch * keys * kv_heads * head_dim, &mut rng), dtype);
                // Two flops per multiply-add of q·k and of p·v, over the keys each query attends to.
                let seen = if args.mode == AttentionMode::Prefill { queries * (queries + 1) / 2 } else { keys };
                let macs = batch * heads * seen * head_dim * 2;
                // The f64 reference checks whole sequences, as many as fit the budget.
                let checked = if macs <= FULL_CHECK_MACS { batch } else { (FULL_CHECK_MACS / (macs / batch)).clamp(1, batch) };
                (vec![q, k, v], Vec::new(), checked, 2.0 * macs as f64)
            }
        };
        if args.name == OpName::Attention {
            let mode = if args.mode == AttentionMode::Prefill { "prefill" } else { "decode" };
            shape.insert("mode".into(), mode.into());
        }
        Ok(Problem { op: args.name, dtype, shape, inputs, ids, checked_rows, work })
    }

    fn label(&self) -> String {
        let shape: Vec<String> = self.shape.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{} {} ({})", op_label(self.op), shape.join(" "), self.dtype.name())
    }

    fn usize_of(&self, key: &str) -> usize {
        self.shape[key].as_u64().expect("shape values are integers") as usize
    }

    /// Computes the CPU reference over the checked rows.
    fn reference(&self, args: &OpArgs) -> Vec<f32> {
        let inputs = &self.inputs;
        match self.op {
            OpName::Matmul => {
                let (n, k) = (args.n, args.k);
                let rows = self.checked_rows;
                matmul::cpu::matmul_ref(&inputs[0][..rows * k], &inputs[1], inputs.get(2).map(Vec::as_slice), rows, n, k, args.transpose_b)
            }
            OpName::Softmax => softmax::cpu::softmax_rows_ref(&inputs[0], args.rows, args.cols),
            OpName::Layernorm => norm::cpu::layernorm_ref(&inputs[0], &inputs[1], &inputs[2], args.rows, args.cols, norm::cpu::NORM_EPS),
            OpName::Rmsnorm => norm::cpu::rmsnorm_ref(&inputs[0], &inputs[1], args.rows, args.cols, norm::cpu::NORM_EPS),
            OpName::Gelu => activation::cpu::gelu_tanh_ref(&inputs[0]),
            OpName::Swiglu => activation::cpu::swiglu_ref(&inputs[0], &inputs[1]),
            OpName::ResidualAdd => embedding::cpu::residual_add_ref(&inputs[0], &inputs[1]),
            OpName::Rope => {
                let head_dim = self.usize_of("head_dim");
                rope::cpu::rope_ref(&inputs[0], &self.ids, args.rows, args.cols / head_dim, head_dim, rope::cpu::ROPE_THETA)
            }
            OpName::Embedding => embedding::cpu::embedding_ref(&inputs[0], &self.ids, args.cols).expect("the ids are drawn below vocab"),
            OpName::Attention => {
                // The first `checked_rows` sequences: every tensor is laid out sequence-major.
                let (b, heads, kv_heads, head_dim) = (self.checked_rows, self.usize_of("heads"), self.usize_of("kv_heads"), self.usize_of("head_dim"));
                let per_seq = |len: usize| len / args.batch * b;
                let (q, k, v) = (&inputs[0][..per_seq(inputs[0].len())], &inputs[1][..per_seq(inputs[1].len())], &inputs[2][..per_seq(inputs[2].len())]);
                match args.mode {
                    AttentionMode::Prefill => attention::cpu::attention_prefill_ref(q, k, v, b, args.seq, heads, kv_heads, head_dim),
                    AttentionMode::Decode => attention::cpu::attention_decode_ref(q, k, v, b, args.cache, heads, kv_heads, head_dim),
                }
            }
        }
    }

    fn report(&self, args: &OpArgs, backend: &str, stats: TimingStats, timing: &str, got: &[f32]) -> OpReport {
        let expected = self.reference(args);
        let (max_abs_err, max_rel_err) = errors(&got[..expected.len()], &expected);
        let per_second = self.work / stats.median_ns;
        let compute_bound = matches!(self.op, OpName::Matmul | OpName::Attention);
        let (gflops, gbps) = if compute_bound { (Some(per_second), None) } else { (None, Some(per_second)) };
        OpReport {
            op: op_label(self.op).to_string(),
            shape: self.shape.clone(),
            backend: backend.to_string(),
            device: String::new(),
            dtype: self.dtype.name().to_string(),
            median_ns: stats.median_ns,
            p10_ns: stats.p10_ns,
            p90_ns: stats.p90_ns,
            runs: stats.runs,
            timing: timing.to_string(),
            gflops,
            gbps,
            max_abs_err,
            max_rel_err,
            checked_rows: self.checked_rows,
        }
    }

    fn run_gpu(&self, ctx: &GpuContext, args: &OpArgs) -> crate::Result<OpReport> {
        let dtype = self.dtype;
        let upload = |data: &[f32], shape: &[usize]| GpuTensor::from_f32(ctx, data, shape, dtype);
        let inputs = &self.inputs;
        let (rows, cols) = (args.rows, args.cols);

        let (stats, source, out) = match self.op {
            OpName::Matmul => {
                let (m, n, k) = (args.m, args.n, args.k);
                let a = upload(&inputs[0], &[m, k])?;
                let b = upload(&inputs[1], &[inputs[1].len()])?;
                let bias = inputs.get(2).map(|bias| upload(bias, &[n])).transpose()?;
                let out = GpuTensor::empty(ctx, &[m, n], dtype)?;
                let (stats, source) = time_gpu_with_source(ctx, args.warmup, args.runs, |rec| {
                    matmul::gpu::record(rec, &a, &b, bias.as_ref(), &out, m, n, k, args.transpose_b)
                })?;
                (stats, source, out)
            }
            OpName::Softmax => {
                let x = upload(&inputs[0], &[rows, cols])?;
                let out = GpuTensor::empty(ctx, &[rows, cols], dtype)?;
                let (stats, source) = time_gpu_with_source(ctx, args.warmup, args.runs, |rec| softmax::gpu::record(rec, &x, &out, rows, cols))?;
                (stats, source, out)
            }
            OpName::Layernorm | OpName::Rmsnorm => {
                let x = upload(&inputs[0], &[rows, cols])?;
                let weight = upload(&inputs[1], &[cols])?;
                let bias = upload(&inputs[2], &[cols])?;
                let out = GpuTensor::empty(ctx, &[rows, cols], dtype)?;
                let eps = norm::cpu::NORM_EPS;
                let layer = self.op == OpName::Layernorm;
                let (stats, source) = time_gpu_with_source(ctx, args.warmup, args.runs, |rec| {
                    if layer {
                        norm::gpu::record_layernorm(rec, &x, &weight, &bias, &out, rows, cols, eps)
                    } else {
                        norm::gpu::record_rmsnorm(rec, &x, &weight, &out, rows, cols, eps)
                    }
                })?;
                (stats, source, out)
            }
            OpName::Gelu => {
                let x = upload(&inputs[0], &[rows, cols])?;
                let out = GpuTensor::empty(ctx, &[rows, cols], dtype)?;
                let (stats, source) = time_gpu_with_source(ctx, args.warmup, args.runs, |rec| activation::gpu::record_gelu(rec, &x, &out))?;
                (stats, source, out)
            }
            OpName::Swiglu | OpName::ResidualAdd => {
                let a = upload(&inputs[0], &[rows, cols])?;
                let b = upload(&inputs[1], &[rows, cols])?;
                let out = GpuTensor::empty(ctx, &[rows, cols], dtype)?;
                let swiglu = self.op == OpName::Swiglu;
                let (stats, source) = time_gpu_with_source(ctx, args.warmup, args.runs, |rec| {
                    if swiglu {
                        activation::gpu::record_swiglu(rec, &a, &b, &out)
                    } else {
                        embedding::gpu::record_residual_add(rec, &a, &b, &out)
                    }
                })?;
                (stats, source, out)
            }
            OpName::Rope => {
                let head_dim = self.usize_of("head_dim");
                let x = upload(&inputs[0], &[rows, cols])?;
                let positions = GpuTensor::from_u32(ctx, &self.ids, &[rows])?;
                let out = GpuTensor::empty(ctx, &[rows, cols], dtype)?;
                let shape = rope::gpu::RopeShape { n_tokens: rows, n_heads: cols / head_dim, head_dim, theta: rope::cpu::ROPE_THETA };
                let (stats, source) = time_gpu_with_source(ctx, args.warmup, args.runs, |rec| {
                    rope::gpu::record(rec, &x, rope::gpu::Positions::Buffer(&positions), Some(&out), shape)
                })?;
                (stats, source, out)
            }
            OpName::Embedding => {
                let table = upload(&inputs[0], &[args.vocab, cols])?;
                let ids = GpuTensor::from_u32(ctx, &self.ids, &[rows])?;
                let out = GpuTensor::empty(ctx, &[rows, cols], dtype)?;
                let (stats, source) = time_gpu_with_source(ctx, args.warmup, args.runs, |rec| {
                    embedding::gpu::record_gather(rec, &table, &ids, &out, args.vocab, cols)
                })?;
                (stats, source, out)
            }
            OpName::Attention => {
                let (batch, heads, kv_heads, head_dim) = (args.batch, self.usize_of("heads"), self.usize_of("kv_heads"), self.usize_of("head_dim"));
                let q = upload(&inputs[0], &[inputs[0].len()])?;
                let k = upload(&inputs[1], &[inputs[1].len()])?;
                let v = upload(&inputs[2], &[inputs[2].len()])?;
                let out = GpuTensor::empty(ctx, &[inputs[0].len()], dtype)?;
                let (stats, source) = match args.mode {
                    AttentionMode::Prefill => {
                        let shape = attention::gpu::PrefillShape::causal(batch, args.seq, heads, kv_heads, head_dim);
                        let scratch = attention::gpu::PrefillScratch::new(ctx, &shape, dtype)?;
                        time_gpu_with_source(ctx, args.warmup, args.runs, |rec| {
                            attention::gpu::record_prefill(rec, &shape, &q, &k, &v, &out, &scratch)
                        })?
                    }
                    AttentionMode::Decode => {
                        let shape = attention::gpu::DecodeShape {
                            batch,
                            cache_len: args.cache,
                            cache_capacity: args.cache,
                            n_heads: heads,
                            n_kv_heads: kv_heads,
                            head_dim,
                        };
                        let scratch = attention::gpu::DecodeScratch::new(ctx, &shape)?;
                        time_gpu_with_source(ctx, args.warmup, args.runs, |rec| {
                            attention::gpu::record_decode(rec, &shape, &q, &k, &v, &out, &scratch)
                        })?
                    }
                };
                (stats, source, out)
            }
        };
        let timing = match source {
            TimingSource::Timestamps => "timestamps",
            TimingSource::WallClock => "wall_clock",
        };
        let got = out.to_f32(ctx)?;
        Ok(self.report(args, "gpu", stats, timing, &got))
    }

    fn run_cpu(&self, args: &OpArgs) -> crate::Result<OpReport> {
        let inputs = &self.inputs;
        let (rows, cols) = (args.rows, args.cols);
        let (warmup, runs) = (args.warmup, args.runs);

        let (stats, got) = match self.op {
            OpName::Matmul => {
                let bias = inputs.get(2).map(Vec::as_slice);
                let run = || matmul::cpu::matmul(&inputs[0], &inputs[1], bias, args.m, args.n, args.k, args.transpose_b);
                (time_cpu(warmup, runs, run), run())
            }
            OpName::Softmax => {
                let mut x = inputs[0].clone();
                let stats = time_cpu(warmup, runs, || {
                    x.copy_from_slice(&inputs[0]);
                    softmax::cpu::softmax_rows(&mut x, rows, cols);
                });
                (stats, x)
            }
            OpName::Layernorm | OpName::Rmsnorm => {
                let mut out = vec![0.0; rows * cols];
                let eps = norm::cpu::NORM_EPS;
                let stats = time_cpu(warmup, runs, || {
                    if self.op == OpName::Layernorm {
                        norm::cpu::layernorm(&mut out, &inputs[0], &inputs[1], &inputs[2], rows, cols, eps);
                    } else {
                        norm::cpu::rmsnorm(&mut out, &inputs[0], &inputs[1], rows, cols, eps);
                    }
                });
                (stats, out)
            }
            OpName::Gelu => {
                let mut x = inputs[0].clone();
                let stats = time_cpu(warmup, runs, || {
                    x.copy_from_slice(&inputs[0]);
                    activation::cpu::gelu_tanh(&mut x);
                });
                (stats, x)
            }
            OpName::Swiglu => {
                let mut out = vec![0.0; rows * cols];
                let stats = time_cpu(warmup, runs, || activation::cpu::swiglu(&mut out, &inputs[0], &inputs[1]));
                (stats, out)
            }
            OpName::ResidualAdd => {
                let mut a = inputs[0].clone();
                let stats = time_cpu(warmup, runs, || {
                    a.copy_from_slice(&inputs[0]);
                    embedding::cpu::residual_add(&mut a, &inputs[1]);
                });
                (stats, a)
            }
            OpName::Rope => {
                let head_dim = self.usize_of("head_dim");
                let mut x = inputs[0].clone();
                let stats = time_cpu(warmup, runs, || {
                    x.copy_from_slice(&inputs[0]);
                    rope::cpu::rope(&mut x, &self.ids, rows, cols / head_dim, head_dim, rope::cpu::ROPE_THETA);
                });
                (stats, x)
            }
            OpName::Embedding => {
                let mut out = vec![0.0; rows * cols];
                embedding::cpu::embedding(&mut out, &inputs[0], &self.ids, cols)?;
                let stats = time_cpu(warmup, runs, || embedding::cpu::embedding(&mut out, &inputs[0], &self.ids, cols));
                (stats, out)
            }
            OpName::Attention => {
                let (batch, heads, kv_heads, head_dim) = (args.batch, self.usize_of("heads"), self.usize_of("kv_heads"), self.usize_of("head_dim"));
                let run = || match args.mode {
                    AttentionMode::Prefill => attention::cpu::attention_prefill(&inputs[0], &inputs[1], &inputs[2], batch, args.seq, heads, kv_heads, head_dim),
                    AttentionMode::Decode => attention::cpu::attention_decode(&inputs[0], &inputs[1], &inputs[2], batch, args.cache, heads, kv_heads, head_dim),
                };
                (time_cpu(warmup, runs, run), run())
            }
        };
        Ok(self.report(args, "cpu", stats, "cpu", &got))
    }
}

impl OpArgs {
    fn op_name(&self) -> OpName {
        self.name
    }
}

fn op_label(op: OpName) -> &'static str {
    match op {
        OpName::Matmul => "matmul",
        OpName::Softmax => "softmax",
        OpName::Layernorm => "layernorm",
        OpName::Rmsnorm => "rmsnorm",
        OpName::Gelu => "gelu",
        OpName::Swiglu => "swiglu",
        OpName::Rope => "rope",
        OpName::Embedding => "embedding",
        OpName::ResidualAdd => "residual-add",
        OpName::Attention => "attention",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn op_args(line: &str) -> OpArgs {
        let cli = crate::cli::Cli::try_parse_from(line.split_whitespace()).unwrap();
        match cli.command {
            crate::cli::Command::Bench(Args { command: BenchCommand::Op(op) }) => op,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn parses_matmul_flags() {
        let args = op_args("alphanas bench op matmul --m 3 --n 4 --k 5 --bias --transpose-b --dtype f16 --runs 12");
        assert_eq!(args.name, OpName::Matmul);
        assert_eq!((args.m, args.n, args.k), (3, 4, 5));
        assert!(args.bias);
        assert!(args.transpose_b);
        assert_eq!(args.dtype, FloatType::F16);
        assert_eq!(args.runs, 12);
    }

    #[test]
    fn cpu_matmul_report_is_accurate() {
        let args = op_args("alphanas bench op matmul --m 33 --n 17 --k 9 --bias");
        let report = measure_op(&args, &Backend::Cpu).unwrap();
        assert_eq!(report.runs, 10);
        assert_eq!(report.checked_rows, 33);
        assert!(report.gflops.unwrap() > 0.0);
        assert!(report.max_rel_err < 1e-5, "{report:?}");
    }

    #[test]
    fn gpu_row_ops_report_is_accurate() {
        let Some(ctx) = crate::device::gpu_for_tests("gpu_row_ops_report_is_accurate") else { return };
        for op in ["softmax", "layernorm", "rmsnorm", "gelu", "swiglu", "rope", "embedding", "residual-add"] {
            let args = op_args(&format!("alphanas bench op {op} --rows 7 --cols 128 --vocab 50"));
            let report = measure_op(&args, &Backend::Gpu(ctx.clone())).unwrap();
            assert!(report.gbps.unwrap() > 0.0, "{op}: {report:?}");
            assert!(report.max_rel_err < 1e-4, "{op}: {report:?}");
        }
    }

    #[test]
    fn attention_reports_are_accurate() {
        let gpu = crate::device::gpu_for_tests("attention_reports_are_accurate");
        // Ragged lengths, grouped-query heads, and a batch whose reference check covers every sequence.
        let cases = [
            ("--mode prefill --batch 2 --seq 37 --heads 6 --kv-heads 2 --head-dim 64", 2),
            ("--mode decode --batch 3 --cache 301 --heads 4 --kv-heads 1 --head-dim 32", 3),
        ];
        for (flags, sequences) in cases {
            let args = op_args(&format!("alphanas bench op attention {flags}"));
            let mut backends = vec![Backend::Cpu];
            backends.extend(gpu.clone().map(Backend::Gpu));
            for backend in &backends {
                let report = measure_op(&args, backend).unwrap();
                assert_eq!(report.checked_rows, sequences, "{flags}: {report:?}");
                assert!(report.gflops.unwrap() > 0.0, "{flags}: {report:?}");
                assert!(report.max_rel_err < 1e-4, "{flags}: {report:?}");
            }
        }
    }

    #[test]
    fn attention_rejects_uneven_head_groups() {
        let args = op_args("alphanas bench op attention --heads 8 --kv-heads 3");
        let err = measure_op(&args, &Backend::Cpu).unwrap_err().to_string();
        assert!(err.contains("--kv-heads (3) must divide --heads (8)"), "{err}");
    }

    #[test]
    fn rejects_too_few_runs() {
        let args = op_args("alphanas bench op gelu --runs 3");
        let global = crate::cli::Cli::try_parse_from(["alphanas", "devices"]).unwrap().global;
        let err = run_op(&args, &global).unwrap_err();
        assert!(err.to_string().contains("--runs (3) must be at least 10"), "{err}");
    }
}
