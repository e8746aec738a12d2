use super::*;

fn parse(text: &str) -> Result<Architecture, String> {
    Architecture::from_json(text).map_err(|e| e.to_string())
}

fn expect_error(text: &str, needle: &str) {
    match parse(text) {
        Ok(arch) => panic!("expected an error containing {needle:?}, parsed {arch:?}"),
        Err(msg) => {
            assert!(msg.contains(needle), "error {msg:?} does not contain {needle:?}");
            assert!(!msg.contains('\n'), "error spans several lines: {msg:?}");
        }
    }
}

fn llama(vocab: u64, d: u64, layers: u64, heads: u64, kv: u64, d_ff: u64, tied: bool) -> Architecture {
    Architecture {
        vocab_size: vocab,
        max_seq_len: 4096,
        d_model: d,
        n_layers: layers,
        n_heads: heads,
        n_kv_heads: Some(kv),
        head_dim: None,
        d_ff,
        ffn: Ffn::Swiglu,
        norm: Norm::Rmsnorm,
        pos: Pos::Rope,
        bias: false,
        tie_embeddings: tied,
        layers: None,
    }
}

// Published parameter counts. Each is the value that Hugging Face transformers' `num_parameters()`
// returns for the named checkpoint, whose config gives the shape used here.

#[test]
fn params_gpt2_small() {
    // openai-community/gpt2: 124,439,808 (tied head, learned positions, LayerNorm, biases).
    let arch = presets::gpt2_small();
    assert_eq!(arch.params(), 124_439_808);
}

#[test]
fn params_gpt2_medium() {
    // openai-community/gpt2-medium: 354,823,168.
    let arch = Architecture {
        d_model: 1024,
        n_layers: 24,
        n_heads: 16,
        d_ff: 4096,
        ..presets::gpt2_small()
    };
    assert_eq!(arch.params(), 354_823_168);
}

#[test]
fn params_llama2_7b() {
    // meta-llama/Llama-2-7b-hf: 6,738,415,616 (untied, MHA).
    assert_eq!(presets::llama2_7b().params(), 6_738_415_616);
}

#[test]
fn params_llama3_8b_gqa() {
    // meta-llama/Meta-Llama-3-8B: 8,030,261,248 (untied, 8 KV heads).
    let arch = llama(128_256, 4096, 32, 32, 8, 14336, false);
    assert_eq!(arch.params(), 8_030_261_248);
}

#[test]
fn params_llama32_1b_tied_gqa() {
    // meta-llama/Llama-3.2-1B: 1,235,814,400 (tied, 8 KV heads, head_dim 64).
    let arch = llama(128_256, 2048, 16, 32, 8, 8192, true);
    assert_eq!(arch.params(), 1_235_814_400);
}

#[test]
fn params_mistral_7b() {
    // mistralai/Mistral-7B-v0.1: 7,241,732,096.
    let arch = llama(32_000, 4096, 32, 32, 8, 14336, false);
    assert_eq!(arch.params(), 7_241_732_096);
}

#[test]
fn params_tinyllama() {
    // TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T: 1,100,048,384.
    let arch = llama(32_000, 2048, 22, 32, 4, 5632, false);
    assert_eq!(arch.params(), 1_100_048_384);
}

#[test]
fn params_hwgpt_formula() {
    // HW-GPT-Bench small space: 2·V·d + Σ(256·h·d + 3·r·d²) + (2L+1)·2d, plus biases
    // Σ(192·h + 2d + 2·r·d) when bias is on.
    let (d, heads, ratios) = (384u64, [4u64, 8, 12, 4, 8, 12, 4, 8, 12, 4], [2u64, 3, 4, 2, 3, 4, 2, 3, 4, 2]);
    for bias in [false, true] {
        let arch = Architecture {
            vocab_size: 50254,
            max_seq_len: 1024,
            d_model: d,
            n_layers: 10,
            n_heads: 4,
            n_kv_heads: None,
            head_dim: Some(64),
            d_ff: 2 * d,
            ffn: Ffn::Swiglu,
            norm: Norm::Layernorm,
            pos: Pos::Rope,
            bias,
            tie_embeddings: false,
            layers: Some(
                heads
                    .iter()
                    .zip(ratios)
                    .map(|(&h, r)| LayerOverride { n_heads: Some(h), n_kv_heads: None, d_ff: Some(r * d) })
                    .collect(),
            ),
        };
        let mut expected = 2 * 50254 * d + 21 * 2 * d;
        for (&h, r) in heads.iter().zip(ratios) {
            expected += 256 * h * d + 3 * r * d * d;
            if bias {
                expected += 192 * h + 2 * d + 2 * r * d;
            }
        }
        assert_eq!(arch.params(), expected, "bias = {bias}");
    }
}

#[test]
fn breakdown_sums_to_total() {
    let arch = presets::gpt2_small();
    let b = arch.param_breakdown();
    assert_eq!(b.total(), arch.params());
    assert_eq!(b.token_embedding, 50257 * 768);
    assert_eq!(b.position_embedding, 1024 * 768);
    assert_eq!(b.output_head, 0);
    assert_eq!(arch.non_embedding_params(), 124_439_808 - 50257 * 768 - 1024 * 768);
}

#[test]
fn kv_cache_bytes_formula() {
    let arch = llama(128_256, 4096, 32, 32, 8, 14336, false);
    for dtype in Dtype::ALL {
        assert_eq!(arch.kv_cache_bytes_per_token(dtype), 2 * 32 * 8 * 128 * dtype.bytes());
    }
}

#[test]
fn flops_follow_2n_plus_attention() {
    // Kaplan et al. 2020: forward FLOPs per token ≈ 2N + 2·n_layer·n_ctx·d_attn, where N
    // excludes embeddings; with the output head counted as a matmul and causal averaging,
    // the exact count here is 2·(N_nonemb_matmul + V·d) + 2·L·d·(S+1).
    let arch = presets::llama2_7b();
    let s = 2048;
    let matmul_params = arch.non_embedding_params() - arch.param_breakdown().norms + arch.vocab_size * arch.d_model;
    let expected = 2 * matmul_params + 2 * 32 * 4096 * (s + 1);
    assert_eq!(arch.flops_per_token_prefill(s), expected);
    assert_eq!(arch.flops_per_token_decode(s), 2 * matmul_params + 4 * 32 * 4096 * (s + 1));
}

#[test]
fn weight_bytes_per_dtype() {
    let arch = presets::gpt2_small();
    assert_eq!(arch.weight_bytes(Dtype::F32), 4 * 124_439_808);
    assert_eq!(arch.weight_bytes(Dtype::Bf16), 2 * 124_439_808);
    assert_eq!(arch.weight_bytes(Dtype::Int8), 124_439_808);
}

#[test]
fn peak_memory_grows_with_batch() {
    let arch = presets::llama_100m();
    let small = arch.peak_memory(Dtype::F32, 1, 1024);
    let large = arch.peak_memory(Dtype::F32, 8, 1024);
    assert!(small.prefill > arch.weight_bytes(Dtype::F32));
    assert!(large.prefill > small.prefill);
    assert!(large.decode > small.decode);
    assert!(small.prefill > small.decode);
}

#[test]
fn json_roundtrip_and_defaults() {
    let arch = parse(r#"{"d_model": 512, "n_layers": 8, "n_heads": 8, "d_ff": 1408}"#).unwrap();
    assert_eq!(arch.vocab_size, 32000);
    assert_eq!(arch.max_seq_len, 2048);
    assert_eq!(arch.ffn, Ffn::Swiglu);
    assert_eq!(arch.head_dim(), 64);
    assert_eq!(arch.layer(3).n_kv_heads, 8);
    let back = parse(&arch.to_json()).unwrap();
    assert_eq!(back, arch);
}

#[test]
fn layer_overrides_resolve() {
    let arch = parse(
        r#"{"d_model": 256, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "d_ff": 512,
            "layers": [{"n_heads": 8, "d_ff": 1024}, {}]}"#,
    )
    .unwrap();
    assert_eq!(arch.layer(0).n_heads, 8);
    assert_eq!(arch.layer(0).n_kv_heads, 2);
    // Layer 0 splits d_model = 256 over its own 8 heads.
    assert_eq!(arch.layer(0).head_dim, 32);
    assert_eq!(arch.layer(1).head_dim, 64);
    assert_eq!(arch.layer(0).d_ff, 1024);
    assert_eq!(arch.layer(1).n_heads, 4);
}

#[test]
fn rejects_impossible_models() {
    let cases = [
        (r#"{"d_model": 0, "n_layers": 2, "n_heads": 4, "d_ff": 8}"#, "d_model (0) must be a positive integer"),
        (r#"{"d_model": -64, "n_layers": 2, "n_heads": 4, "d_ff": 8}"#, "d_model (-64) must be a positive integer"),
        (r#"{"d_model": 500, "n_layers": 2, "n_heads": 12, "d_ff": 8}"#, "n_heads (12) must divide d_model (500)"),
        (r#"{"d_model": 512, "n_layers": 2, "n_heads": 8, "n_kv_heads": 3, "d_ff": 8}"#, "n_kv_heads (3) must divide n_heads (8)"),
        (r#"{"d_model": 512, "n_layers": 2, "n_heads": 8, "n_kv_heads": 16, "d_ff": 8}"#, "n_kv_heads (16) must divide n_heads (8)"),
        (r#"{"d_model": 512, "n_layers": 2, "n_heads": 8, "head_dim": 63, "d_ff": 8}"#, "head_dim (63) must be even"),
        (r#"{"d_model": 512, "n_layers": 2, "n_heads": 8, "d_ff": 8, "layers": [{}]}"#, "layers has 1 entry but n_layers is 2"),
        (r#"{"d_model": 512, "n_layers": 2, "n_heads": 8, "d_ff": 8, "ffn": "swish"}"#, "unknown variant `swish`"),
        (r#"{"d_model": 512, "n_layers": 2, "n_heads": 8, "d_ff": 8, "norm": "batchnorm"}"#, "unknown variant `batchnorm`"),
        (r#"{"d_model": 512, "n_layers": 2, "n_heads": 8, "d_ff": 8, "pos": "alibi"}"#, "unknown variant `alibi`"),
        (r#"{"d_model": 512, "n_layers": 2, "n_heads": 8, "d_ff": 8, "dmodel": 5}"#, "unknown field `dmodel`"),
        (r#"{"d_model": 512, "n_layers": 2, "n_heads": 8}"#, "missing field `d_ff`"),
        (r#"{"d_model": "512", "n_layers": 2, "n_heads": 8, "d_ff": 8}"#, "d_model"),
        (r#"{"d_model": 512, "n_layers": 2, "n_heads": 8, "d_ff": 8, "layers": [{"n_kv_heads": 3}, {}]}"#, "layers[0].n_kv_heads (3) must divide"),
        (r#"{"d_model": 512, "n_layers": 2, "n_heads": 8, "d_ff": 8, "layers": [{"d_ff": 0}, {}]}"#, "layers[0].d_ff (0) must be a positive integer"),
        (r#"{"d_model": 512, "n_layers": 2, "n_heads": 8, "d_ff": 8, "layers": [{"heads": 4}, {}]}"#, "unknown field `heads`"),
        ("", "the input is empty"),
        ("{", "EOF"),
        ("[1, 2]", "expected a JSON object"),
    ];
    for (text, needle) in cases {
        expect_error(text, needle);
    }
}

#[test]
fn odd_head_dim_allowed_without_rope() {
    let arch = parse(r#"{"d_model": 504, "n_layers": 2, "n_heads": 8, "d_ff": 8, "pos": "learned"}"#).unwrap();
    assert_eq!(arch.head_dim(), 63);
}

#[test]
fn wrong_type_error_names_field() {
    let err = parse(r#"{"d_model": 512, "n_layers": 2, "n_heads": 8, "d_ff": 8, "bias": "yes"}"#).unwrap_err();
    assert!(err.contains("`bias`"), "{err}");
}

/// Every dimension within MAX_DIM can still give a model whose u64 metrics would overflow; it
/// is rejected by size, while a large real model passes.
#[test]
fn oversized_model_rejected() {
    let huge = r#"{"d_model": 16777216, "n_layers": 4096, "n_heads": 16, "d_ff": 16777216, "vocab_size": 16777216, "max_seq_len": 16777216}"#;
    expect_error(huge, "too large for its metrics to be computed exactly");
    let big = parse(r#"{"d_model": 16384, "n_layers": 126, "n_heads": 128, "n_kv_heads": 8, "d_ff": 53248, "vocab_size": 128256, "max_seq_len": 131072}"#).unwrap();
    assert!(big.metrics(131_072, 1).params > 400_000_000_000);
}

/// A peak-memory sum beyond u64 saturates instead of wrapping around.
#[test]
fn peak_memory_saturates() {
    let arch = llama(32000, 4096, 32, 32, 8, 11008, false);
    let peak = arch.peak_memory(crate::arch::metrics::Dtype::F32, u64::MAX / 2, 4096);
    assert_eq!(peak.prefill, u64::MAX);
    assert!(arch.peak_memory(crate::arch::metrics::Dtype::F32, 1, 4096).prefill < 1 << 40);
}
