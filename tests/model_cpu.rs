//! Whole-model tests of the CPU forward pass: fast kernels against the `_ref` kernels for
//! every block type, KV-cache consistency between prefill and decode, per-layer shapes,
//! and the errors a caller can trigger.

use alphanas::arch::{Ffn, LayerOverride, Norm, Pos};
use alphanas::kernels::test_util::assert_close;
use alphanas::model::{random_tokens, CpuModel, KernelMode, Weights};
use alphanas::Architecture;

/// Logits are O(1). Fast kernels accumulate in f32 and references in f64; over two layers
/// the difference stays near 1e-5, so these bounds leave a 10× margin.
const RTOL: f32 = 1e-3;
const ATOL: f32 = 2e-4;

fn tiny(ffn: Ffn, norm: Norm, pos: Pos, tie_embeddings: bool, bias: bool) -> Architecture {
    let arch = Architecture {
        vocab_size: 97,
        max_seq_len: 40,
        d_model: 48,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: Some(2),
        head_dim: None,
        d_ff: 80,
        ffn,
        norm,
        pos,
        bias,
        tie_embeddings,
        layers: None,
    };
    arch.validate().expect("tiny test architecture is valid");
    arch
}

fn label(arch: &Architecture) -> String {
    format!(
        "{} {} {} tied={} bias={}",
        arch.ffn.name(),
        arch.norm.name(),
        arch.pos.name(),
        arch.tie_embeddings,
        arch.bias
    )
}

/// Prefill logits of the fast and reference models for `tokens` (`[batch, seq]`).
fn prefill_both(arch: &Architecture, tokens: &[u32], batch: usize, seq: usize) -> (Vec<f32>, Vec<f32>) {
    let weights = Weights::random(arch, 11).unwrap();
    let mut fast = CpuModel::with_kernels(weights.clone(), KernelMode::Fast);
    let mut reference = CpuModel::with_kernels(weights, KernelMode::Reference);
    let mut cache_fast = fast.new_cache(batch, seq).unwrap();
    let mut cache_ref = reference.new_cache(batch, seq).unwrap();
    let got = fast.prefill(tokens, batch, seq, &mut cache_fast).unwrap();
    let want = reference.prefill(tokens, batch, seq, &mut cache_ref).unwrap();
    (got, want)
}

#[test]
fn fast_matches_reference_every_block_type() {
    let (batch, seq) = (2, 9);
    let mut count = 0;
    for ffn in [Ffn::Swiglu, Ffn::Gelu, Ffn::Relu] {
        for norm in [Norm::Rmsnorm, Norm::Layernorm] {
            for pos in [Pos::Rope, Pos::Learned, Pos::None] {
                for tie in [false, true] {
                    for bias in [false, true] {
                        let arch = tiny(ffn, norm, pos, tie, bias);
                        let tokens = random_tokens(batch * seq, 97, count);
                        let (got, want) = prefill_both(&arch, &tokens, batch, seq);
                        assert_eq!(got.len(), batch * 97);
                        assert!(got.iter().all(|v| v.is_finite()), "{}: non-finite logits", label(&arch));
                        assert_close(&got, &want, RTOL, ATOL, &label(&arch));
                        count += 1;
                    }
                }
            }
        }
    }
    assert_eq!(count, 72);
}

#[test]
fn logits_depend_on_tokens() {
    // A forward pass that ignored its input would pass the parity test above.
    let arch = tiny(Ffn::Swiglu, Norm::Rmsnorm, Pos::Rope, false, false);
    let weights = Weights::random(&arch, 1).unwrap();
    let mut model = CpuModel::new(weights);
    let mut cache = model.new_cache(1, 5).unwrap();
    let a = model.prefill(&[1, 2, 3, 4, 5], 1, 5, &mut cache).unwrap();
    cache.clear();
    let b = model.prefill(&[1, 2, 3, 4, 6], 1, 5, &mut cache).unwrap();
    let max_diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(max_diff > 1e-3, "changing the last token moved the logits by only {max_diff}");
}

#[test]
fn batch_rows_are_independent() {
    // Sequence 1 of a batch must give the same logits as that sequence alone.
    let arch = tiny(Ffn::Gelu, Norm::Layernorm, Pos::Learned, true, true);
    let weights = Weights::random(&arch, 2).unwrap();
    let mut model = CpuModel::new(weights);
    let tokens = random_tokens(3 * 7, 97, 5);
    let mut cache = model.new_cache(3, 7).unwrap();
    let batched = model.prefill(&tokens, 3, 7, &mut cache).unwrap();
    let mut single_cache = model.new_cache(1, 7).unwrap();
    let single = model.prefill(&tokens[7..14], 1, 7, &mut single_cache).unwrap();
    assert_close(&batched[97..194], &single, 1e-5, 1e-6, "batch row 1 vs alone");
}

/// Prefill of `seq` tokens then decode of `steps` more must equal a prefill of all of them.
fn check_decode_matches_longer_prefill(arch: &Architecture, kernels: KernelMode, batch: usize, seq: usize, steps: usize) {
    let total = seq + steps;
    let weights = Weights::random(arch, 3).unwrap();
    let mut model = CpuModel::with_kernels(weights, kernels);
    let tokens = random_tokens(batch * total, 97, 9);
    let prompt: Vec<u32> = (0..batch).flat_map(|b| tokens[b * total..b * total + seq].to_vec()).collect();

    let mut cache = model.new_cache(batch, total).unwrap();
    let mut logits = model.prefill(&prompt, batch, seq, &mut cache).unwrap();
    for step in 0..steps {
        let next: Vec<u32> = (0..batch).map(|b| tokens[b * total + seq + step]).collect();
        logits = model.decode(&next, &mut cache).unwrap();
    }
    assert_eq!(cache.len(), total);

    let mut full_cache = model.new_cache(batch, total).unwrap();
    let want = model.prefill(&tokens, batch, total, &mut full_cache).unwrap();
    // Same kernels and weights; only the attention blocking and the summation order differ.
    assert_close(&logits, &want, 1e-4, 1e-5, &format!("{} {kernels:?} decode vs prefill", label(arch)));

    // The cached keys and values must be the ones a full prefill writes.
    for layer in 0..arch.n_layers as usize {
        assert_close(&cache.layer(layer).k, &full_cache.layer(layer).k, 1e-4, 1e-5, &format!("layer {layer} keys"));
        assert_close(&cache.layer(layer).v, &full_cache.layer(layer).v, 1e-4, 1e-5, &format!("layer {layer} values"));
    }
}

#[test]
fn decode_after_prefill_equals_longer_prefill() {
    for pos in [Pos::Rope, Pos::Learned, Pos::None] {
        let arch = tiny(Ffn::Swiglu, Norm::Rmsnorm, pos, false, true);
        check_decode_matches_longer_prefill(&arch, KernelMode::Fast, 2, 6, 4);
    }
    let arch = tiny(Ffn::Gelu, Norm::Layernorm, Pos::Rope, true, false);
    check_decode_matches_longer_prefill(&arch, KernelMode::Reference, 2, 5, 2);
    // More than one key block of the online softmax.
    let long = Architecture { max_seq_len: 200, ..tiny(Ffn::Relu, Norm::Rmsnorm, Pos::Rope, false, false) };
    check_decode_matches_longer_prefill(&long, KernelMode::Fast, 1, 130, 3);
}

#[test]
fn decode_fast_matches_reference() {
    let arch = tiny(Ffn::Swiglu, Norm::Rmsnorm, Pos::Rope, false, false);
    let weights = Weights::random(&arch, 4).unwrap();
    let mut fast = CpuModel::with_kernels(weights.clone(), KernelMode::Fast);
    let mut reference = CpuModel::with_kernels(weights, KernelMode::Reference);
    let tokens = random_tokens(2 * 8, 97, 1);
    let mut cache_fast = fast.new_cache(2, 10).unwrap();
    let mut cache_ref = reference.new_cache(2, 10).unwrap();
    fast.prefill(&tokens, 2, 8, &mut cache_fast).unwrap();
    reference.prefill(&tokens, 2, 8, &mut cache_ref).unwrap();
    for step in 0..2u32 {
        let got = fast.decode(&[step, 50 + step], &mut cache_fast).unwrap();
        let want = reference.decode(&[step, 50 + step], &mut cache_ref).unwrap();
        assert_close(&got, &want, RTOL, ATOL, &format!("decode step {step}"));
    }
}

#[test]
fn per_layer_shapes() {
    let mut arch = tiny(Ffn::Swiglu, Norm::Rmsnorm, Pos::Rope, false, true);
    arch.n_layers = 3;
    arch.head_dim = Some(16);
    arch.layers = Some(vec![
        LayerOverride { n_heads: Some(6), n_kv_heads: Some(1), d_ff: Some(40) },
        LayerOverride { n_heads: Some(2), n_kv_heads: None, d_ff: None },
        LayerOverride { n_heads: None, n_kv_heads: Some(4), d_ff: Some(130) },
    ]);
    arch.validate().unwrap();

    let weights = Weights::random(&arch, 5).unwrap();
    assert_eq!(weights.layers[0].wq.out_dim, 6 * 16);
    assert_eq!(weights.layers[0].wk.out_dim, 16);
    assert_eq!(weights.layers[1].wk.out_dim, 2 * 16);
    assert_eq!(weights.layers[2].ffn_up.out_dim, 130);
    assert_eq!(weights.bytes(), arch.params() * 4);

    let tokens = random_tokens(2 * 7, 97, 2);
    let (got, want) = prefill_both(&arch, &tokens, 2, 7);
    assert_close(&got, &want, RTOL, ATOL, "per-layer prefill");
    check_decode_matches_longer_prefill(&arch, KernelMode::Fast, 2, 7, 3);
}

#[test]
fn caller_errors_are_reported() {
    let arch = tiny(Ffn::Swiglu, Norm::Rmsnorm, Pos::Learned, false, false);
    let mut model = CpuModel::new(Weights::random(&arch, 6).unwrap());

    let err = model.new_cache(1, 41).unwrap_err().to_string();
    assert!(err.contains("exceeds max_seq_len (40)"), "{err}");

    let mut cache = model.new_cache(2, 4).unwrap();
    let err = model.prefill(&[1, 2, 3], 2, 2, &mut cache).unwrap_err().to_string();
    assert!(err.contains("expected batch·seq"), "{err}");

    let err = model.prefill(&[1, 2, 97, 3], 2, 2, &mut cache).unwrap_err().to_string();
    assert!(err.contains("token id 97"), "{err}");
    assert!(cache.is_empty(), "a failed prefill must not fill the cache");

    let err = model.prefill(&[1; 10], 2, 5, &mut cache).unwrap_err().to_string();
    assert!(err.contains("exceeds the KV cache capacity"), "{err}");

    model.prefill(&[1, 2, 3, 4], 2, 2, &mut cache).unwrap();
    let err = model.prefill(&[1, 2, 3, 4], 2, 2, &mut cache).unwrap_err().to_string();
    assert!(err.contains("needs an empty KV cache"), "{err}");

    let err = model.decode(&[1], &mut cache).unwrap_err().to_string();
    assert!(err.contains("one token per sequence"), "{err}");

    model.decode(&[1, 2], &mut cache).unwrap();
    model.decode(&[1, 2], &mut cache).unwrap();
    let err = model.decode(&[1, 2], &mut cache).unwrap_err().to_string();
    assert!(err.contains("KV cache is full"), "{err}");
}

#[test]
fn peak_memory_counts_every_buffer() {
    let arch = tiny(Ffn::Swiglu, Norm::Rmsnorm, Pos::Rope, false, false);
    let mut model = CpuModel::new(Weights::random(&arch, 7).unwrap());
    let mut cache = model.new_cache(2, 16).unwrap();
    model.prefill(&random_tokens(32, 97, 3), 2, 16, &mut cache).unwrap();
    let weights = model.weights().bytes();
    let kv = 2 * 16 * 2 * 2 * 24 * 4; // batch · capacity · layers · (k, v) · kv_dim · 4 bytes
    assert_eq!(cache.bytes(), kv as u64);
    let logits = 2 * 97 * 4;
    assert_eq!(model.peak_memory_bytes(&cache), weights + kv as u64 + model.scratch_bytes() + logits);
    assert!(model.scratch_bytes() > 0);
}
