//! The ops of a decoder forward pass, with the shape of each, as the CPU and GPU models run
//! them: a pre-norm decoder (`x += attn(norm1(x)); x += ffn(norm2(x))`), then the final norm and
//! the output head on the last position of each sequence.
//!
//! Each op kind has named dimensions ([`OpKind::dim_names`]) and analytic cost terms (FLOPs and
//! bytes moved) that the interpolation in [`super::predict`] scales by.

use crate::arch::{Architecture, Dtype, Ffn, Norm, Pos};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Forward-pass mode. It mirrors [`crate::model::Mode`] and adds the ordering that table keys
/// need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// All `batch × seq` prompt tokens in one pass, causal attention.
    Prefill,
    /// One new token per sequence whose attention covers `seq` positions: `seq − 1` cached
    /// tokens and the new one, as `alphanas bench model --mode decode --seq S` measures.
    Decode,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Prefill, Mode::Decode];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Prefill => "prefill",
            Mode::Decode => "decode",
        }
    }

    pub fn parse(text: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == text)
    }
}

impl From<Mode> for crate::model::Mode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Prefill => crate::model::Mode::Prefill,
            Mode::Decode => crate::model::Mode::Decode,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Kind of op, one per kernel entry point that a forward pass calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// `C[m×n] = A[m×k] · B[k×n]` (weights stored as B).
    Matmul,
    /// Causal attention of `seq` queries per sequence.
    AttentionPrefill,
    /// Attention of one query per sequence over a KV cache of `cache_len` tokens.
    AttentionDecode,
    Rmsnorm,
    Layernorm,
    Gelu,
    Relu,
    /// `silu(gate) · up` over `rows × cols` (cols is d_ff).
    Swiglu,
    /// Rotary embedding applied in place to `tokens × heads × head_dim`.
    Rope,
    /// Token-embedding gather of `rows` ids into `rows × cols`.
    Embedding,
    /// Elementwise `a += b` over `rows × cols`.
    ResidualAdd,
}

impl OpKind {
    pub const ALL: [OpKind; 11] = [
        OpKind::Matmul,
        OpKind::AttentionPrefill,
        OpKind::AttentionDecode,
        OpKind::Rmsnorm,
        OpKind::Layernorm,
        OpKind::Gelu,
        OpKind::Relu,
        OpKind::Swiglu,
        OpKind::Rope,
        OpKind::Embedding,
        OpKind::ResidualAdd,
    ];

    /// Name as written in table files and outputs.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Matmul => "matmul",
            OpKind::AttentionPrefill => "attention_prefill",
            OpKind::AttentionDecode => "attention_decode",
            OpKind::Rmsnorm => "rmsnorm",
            OpKind::Layernorm => "layernorm",
            OpKind::Gelu => "gelu",
            OpKind::Relu => "relu",
            OpKind::Swiglu => "swiglu",
            OpKind::Rope => "rope",
            OpKind::Embedding => "embedding",
            OpKind::ResidualAdd => "residual_add",
        }
    }

    /// Names of the shape dimensions, in the order of [`Op::dims`].
    pub fn dim_names(self) -> &'static [&'static str] {
        match self {
            OpKind::Matmul => &["m", "n", "k"],
            OpKind::AttentionPrefill => &["batch", "seq", "n_heads", "n_kv_heads", "head_dim"],
            OpKind::AttentionDecode => &["batch", "cache_len", "n_heads", "n_kv_heads", "head_dim"],
            OpKind::Rope => &["tokens", "heads", "head_dim"],
            OpKind::Rmsnorm
            | OpKind::Layernorm
            | OpKind::Gelu
            | OpKind::Relu
            | OpKind::Swiglu
            | OpKind::Embedding
            | OpKind::ResidualAdd => &["rows", "cols"],
        }
    }

    pub fn parse(text: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.name() == text)
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One op with its shape. `dims` follows [`OpKind::dim_names`], and every dimension is at least 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Op {
    pub kind: OpKind,
    pub dims: Vec<u64>,
}

impl Op {
    pub fn matmul(m: u64, n: u64, k: u64) -> Op {
        Op { kind: OpKind::Matmul, dims: vec![m, n, k] }
    }

    pub fn rows_cols(kind: OpKind, rows: u64, cols: u64) -> Op {
        Op { kind, dims: vec![rows, cols] }
    }

    /// Builds an op from named dimensions, as read from a table entry. Fails when a name is
    /// missing or unknown, or a value is zero.
    pub fn from_named(kind: OpKind, named: &std::collections::BTreeMap<String, u64>) -> Result<Op, String> {
        let names = kind.dim_names();
        if let Some(extra) = named.keys().find(|k| !names.contains(&k.as_str())) {
            return Err(format!("{kind} has no dimension `{extra}`; expected {}", names.join(", ")));
        }
        let mut dims = Vec::with_capacity(names.len());
        for name in names {
            match named.get(*name) {
                Some(0) => return Err(format!("{kind} dimension `{name}` (0) must be at least 1")),
                Some(&v) => dims.push(v),
                None => return Err(format!("{kind} is missing dimension `{name}`")),
            }
        }
        Ok(Op { kind, dims })
    }

    /// The dimensions keyed by name, as written to table entries.
    pub fn named_dims(&self) -> std::collections::BTreeMap<String, u64> {
        self.kind.dim_names().iter().map(|n| n.to_string()).zip(self.dims.iter().copied()).collect()
    }

    /// Floating-point operations, counting a multiply-add as two. Elementwise ops count a few
    /// operations per element; the exact constant does not matter because the interpolation
    /// fits a scale per op kind.
    pub fn flops(&self) -> f64 {
        let d: Vec<f64> = self.dims.iter().map(|&v| v as f64).collect();
        match self.kind {
            OpKind::Matmul => 2.0 * d[0] * d[1] * d[2],
            // QKᵀ and PV over the causal triangle: each query i attends to i keys.
            OpKind::AttentionPrefill => 4.0 * d[0] * d[2] * d[4] * d[1] * (d[1] + 1.0) / 2.0,
            OpKind::AttentionDecode => 4.0 * d[0] * d[2] * d[4] * d[1],
            OpKind::Rmsnorm | OpKind::Layernorm => 5.0 * d[0] * d[1],
            OpKind::Gelu | OpKind::Swiglu => 10.0 * d[0] * d[1],
            OpKind::Relu | OpKind::ResidualAdd => d[0] * d[1],
            OpKind::Rope => 4.0 * d[0] * d[1] * d[2],
            OpKind::Embedding => 0.0,
        }
    }

    /// Bytes read and written once each, at `dtype`.
    pub fn bytes(&self, dtype: Dtype) -> f64 {
        let b = dtype.bytes() as f64;
        let d: Vec<f64> = self.dims.iter().map(|&v| v as f64).collect();
        let elements = match self.kind {
            OpKind::Matmul => d[0] * d[2] + d[2] * d[1] + d[0] * d[1],
            // q and the output ([B,S,H,D]), k and v ([B,S,G,D]).
            OpKind::AttentionPrefill => d[0] * d[1] * d[4] * (2.0 * d[2] + 2.0 * d[3]),
            OpKind::AttentionDecode => d[0] * d[4] * (2.0 * d[2] + 2.0 * d[1] * d[3]),
            OpKind::Rmsnorm | OpKind::Layernorm | OpKind::Gelu | OpKind::Relu | OpKind::Embedding => 2.0 * d[0] * d[1],
            OpKind::Swiglu | OpKind::ResidualAdd => 3.0 * d[0] * d[1],
            OpKind::Rope => 2.0 * d[0] * d[1] * d[2],
        };
        elements * b
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.kind)?;
        for (i, (name, value)) in self.kind.dim_names().iter().zip(&self.dims).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}={value}")?;
        }
        f.write_str(")")
    }
}

/// One op of a forward pass, repeated `count` times, in layer `layer` (`None` for the
/// embedding, the final norm and the output head).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOp {
    pub op: Op,
    pub layer: Option<usize>,
    pub count: u32,
    /// Role of the op in the model, such as `q_proj` or `ffn_down`.
    pub role: &'static str,
}

/// Lists the ops of one forward pass of `arch` at `batch` sequences of `seq` positions, in
/// execution order.
///
/// Prefill runs `batch × seq` tokens. Decode runs `batch` new tokens whose attention covers `seq`
/// positions, the new token included. The final norm and the output head run on the last
/// position of each sequence only, because the models return the logits of the last position.
/// Learned position rows are added one token at a time, as the CPU model does.
///
/// NOTE: copying the new keys and values into the KV cache is not a kernel, so it has no entry.
/// Calibration absorbs it with the other costs between kernels.
pub fn model_ops(arch: &Architecture, mode: Mode, batch: u64, seq: u64) -> Vec<ModelOp> {
    let tokens = match mode {
        Mode::Prefill => batch * seq,
        Mode::Decode => batch,
    };
    let d_model = arch.d_model;
    let norm_kind = match arch.norm {
        Norm::Rmsnorm => OpKind::Rmsnorm,
        Norm::Layernorm => OpKind::Layernorm,
    };
    let mut ops = Vec::new();
    ops.push(ModelOp { op: Op::rows_cols(OpKind::Embedding, tokens, d_model), layer: None, count: 1, role: "token_embedding" });
    if arch.pos == Pos::Learned {
        ops.push(ModelOp {
            op: Op::rows_cols(OpKind::ResidualAdd, 1, d_model),
            layer: None,
            count: tokens as u32,
            role: "position_embedding",
        });
    }

    let mut push = |op: Op, layer: Option<usize>, role: &'static str| ops.push(ModelOp { op, layer, count: 1, role });
    for (i, layer) in arch.layer_shapes().into_iter().enumerate() {
        let l = Some(i);
        push(Op::rows_cols(norm_kind, tokens, d_model), l, "attn_norm");
        push(Op::matmul(tokens, layer.q_dim(), d_model), l, "q_proj");
        push(Op::matmul(tokens, layer.kv_dim(), d_model), l, "k_proj");
        push(Op::matmul(tokens, layer.kv_dim(), d_model), l, "v_proj");
        if arch.pos == Pos::Rope {
            push(Op { kind: OpKind::Rope, dims: vec![tokens, layer.n_heads, layer.head_dim] }, l, "rope_q");
            push(Op { kind: OpKind::Rope, dims: vec![tokens, layer.n_kv_heads, layer.head_dim] }, l, "rope_k");
        }
        let attention = match mode {
            Mode::Prefill => Op {
                kind: OpKind::AttentionPrefill,
                dims: vec![batch, seq, layer.n_heads, layer.n_kv_heads, layer.head_dim],
            },
            Mode::Decode => Op {
                kind: OpKind::AttentionDecode,
                dims: vec![batch, seq, layer.n_heads, layer.n_kv_heads, layer.head_dim],
            },
        };
        push(attention, l, "attention");
        push(Op::matmul(tokens, d_model, layer.q_dim()), l, "o_proj");
        push(Op::rows_cols(OpKind::ResidualAdd, tokens, d_model), l, "attn_residual");

        push(Op::rows_cols(norm_kind, tokens, d_model), l, "ffn_norm");
        match arch.ffn {
            Ffn::Swiglu => {
                push(Op::matmul(tokens, layer.d_ff, d_model), l, "ffn_gate");
                push(Op::matmul(tokens, layer.d_ff, d_model), l, "ffn_up");
                push(Op::rows_cols(OpKind::Swiglu, tokens, layer.d_ff), l, "ffn_act");
            }
            Ffn::Gelu => {
                push(Op::matmul(tokens, layer.d_ff, d_model), l, "ffn_up");
                push(Op::rows_cols(OpKind::Gelu, tokens, layer.d_ff), l, "ffn_act");
            }
            Ffn::Relu => {
                push(Op::matmul(tokens, layer.d_ff, d_model), l, "ffn_up");
                push(Op::rows_cols(OpKind::Relu, tokens, layer.d_ff), l, "ffn_act");
            }
        }
        push(Op::matmul(tokens, d_model, layer.d_ff), l, "ffn_down");
        push(Op::rows_cols(OpKind::ResidualAdd, tokens, d_model), l, "ffn_residual");
    }

    push(Op::rows_cols(norm_kind, batch, d_model), None, "final_norm");
    push(Op::matmul(batch, arch.vocab_size, d_model), None, "output_head");
    ops
}

/// One small shape of every op kind, in [`OpKind::ALL`] order, for tests that time each kind.
#[cfg(test)]
pub(crate) fn one_small_op_of_each_kind() -> Vec<Op> {
    vec![
        Op::matmul(3, 17, 33),
        Op { kind: OpKind::AttentionPrefill, dims: vec![1, 7, 4, 2, 16] },
        Op { kind: OpKind::AttentionDecode, dims: vec![2, 9, 4, 1, 16] },
        Op::rows_cols(OpKind::Rmsnorm, 3, 64),
        Op::rows_cols(OpKind::Layernorm, 3, 64),
        Op::rows_cols(OpKind::Gelu, 3, 64),
        Op::rows_cols(OpKind::Relu, 3, 64),
        Op::rows_cols(OpKind::Swiglu, 3, 64),
        Op { kind: OpKind::Rope, dims: vec![5, 4, 16] },
        Op::rows_cols(OpKind::Embedding, 5, 64),
        Op::rows_cols(OpKind::ResidualAdd, 5, 64),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::presets;

    #[test]
    fn llama_prefill_op_count() {
        let arch = presets::llama_tiny();
        let ops = model_ops(&arch, Mode::Prefill, 2, 16);
        // Per layer: 2 norms, 4 attention projections, 2 rope, attention, 2 residuals,
        // gate, up, swiglu, down = 15; plus embedding, final norm and head.
        assert_eq!(ops.len(), 4 * 15 + 3);
        assert_eq!(ops[0].op, Op::rows_cols(OpKind::Embedding, 32, 256));
        let head = ops.last().unwrap();
        assert_eq!(head.op, Op::matmul(2, 32000, 256));
        assert_eq!(head.layer, None);
    }

    #[test]
    fn decode_attention_covers_new_token() {
        let arch = presets::llama_tiny();
        let ops = model_ops(&arch, Mode::Decode, 3, 100);
        let attention = ops.iter().find(|o| o.op.kind == OpKind::AttentionDecode).unwrap();
        assert_eq!(attention.op.dims, vec![3, 100, 4, 2, 64]);
        let q = ops.iter().find(|o| o.role == "q_proj").unwrap();
        assert_eq!(q.op, Op::matmul(3, 256, 256));
        let k = ops.iter().find(|o| o.role == "k_proj").unwrap();
        assert_eq!(k.op, Op::matmul(3, 128, 256));
    }

    #[test]
    fn gpt2_ops_have_learned_positions_and_no_rope() {
        let arch = presets::gpt2_small();
        let ops = model_ops(&arch, Mode::Prefill, 1, 8);
        let positions = ops.iter().find(|o| o.role == "position_embedding").unwrap();
        assert_eq!((positions.op.dims.clone(), positions.count), (vec![1, 768], 8));
        assert!(!ops.iter().any(|o| o.op.kind == OpKind::Rope));
        assert!(ops.iter().any(|o| o.op.kind == OpKind::Layernorm));
        assert!(ops.iter().any(|o| o.op.kind == OpKind::Gelu));
    }

    #[test]
    fn matmul_flops_match_arch_metrics() {
        // Projection and FFN FLOPs of a decode step must equal the analytic count minus the
        // attention-score term, which the metrics add separately.
        let arch = presets::llama_tiny();
        // Decode at seq 64 attends 64 positions: 63 cached tokens and the new one.
        let context = 63;
        let ops = model_ops(&arch, Mode::Decode, 1, context + 1);
        let matmul: f64 = ops.iter().filter(|o| o.op.kind == OpKind::Matmul).map(|o| o.op.flops()).sum();
        let attention: f64 = ops.iter().filter(|o| o.op.kind == OpKind::AttentionDecode).map(|o| o.op.flops()).sum();
        let expected = arch.flops_per_token_decode(context) as f64;
        assert_eq!(matmul + attention, expected);
    }

    #[test]
    fn named_dims_round_trip() {
        let op = Op { kind: OpKind::AttentionPrefill, dims: vec![1, 32, 8, 2, 64] };
        let back = Op::from_named(op.kind, &op.named_dims()).unwrap();
        assert_eq!(back, op);
        let mut named = op.named_dims();
        named.remove("seq");
        assert!(Op::from_named(op.kind, &named).unwrap_err().contains("missing dimension `seq`"));
        named.insert("seq".into(), 0);
        assert!(Op::from_named(op.kind, &named).unwrap_err().contains("must be at least 1"));
    }
}
