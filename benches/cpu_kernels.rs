//! Criterion benchmarks of the CPU kernels and of whole CPU forward passes.
//!
//! Run with `cargo bench --bench cpu_kernels` (add a filter such as `matmul` to run one
//! group). Every group uses 10 samples so the whole file finishes in a few minutes on two
//! cores. Matmul throughput is reported in elements per second where one element is one
//! floating-point operation (2·m·n·k per product).

use std::hint::black_box;
use std::time::Duration;

use alphanas::arch::presets;
use alphanas::kernels::attention::cpu::{attention_decode_into, attention_prefill_into, AttentionShape};
use alphanas::kernels::matmul::cpu::matmul_into;
use alphanas::kernels::test_util::random_vec;
use alphanas::model::{random_tokens, CpuModel, Weights};
use alphanas::Architecture;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn configure<'a>(c: &'a mut Criterion, name: &str) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group
}

fn bench_matmul(c: &mut Criterion) {
    let mut group = configure(c, "matmul");
    for size in [128usize, 256, 512, 1024, 2048] {
        let a = random_vec(size * size, 1.0, 1);
        let b = random_vec(size * size, 1.0, 2);
        let mut out = vec![0.0f32; size * size];
        group.throughput(Throughput::Elements(2 * (size as u64).pow(3)));
        group.bench_with_input(BenchmarkId::new("square", size), &size, |bench, &n| {
            bench.iter(|| matmul_into(&mut out, black_box(&a), black_box(&b), None, n, n, n, false));
        });
    }
    // Decode-shaped products: one row against a [out, in] weight matrix.
    for (n, k) in [(2048usize, 768usize), (32000, 768)] {
        let a = random_vec(k, 1.0, 3);
        let b = random_vec(n * k, 1.0, 4);
        let mut out = vec![0.0f32; n];
        group.throughput(Throughput::Bytes((n * k * 4) as u64));
        group.bench_with_input(BenchmarkId::new("gemv_transposed", format!("{n}x{k}")), &(n, k), |bench, &(n, k)| {
            bench.iter(|| matmul_into(&mut out, black_box(&a), black_box(&b), None, 1, n, k, true));
        });
    }
    group.finish();
}

fn bench_attention(c: &mut Criterion) {
    let mut group = configure(c, "attention");
    let shape = AttentionShape { batch: 1, n_heads: 12, n_kv_heads: 4, head_dim: 64 };
    let kv_row = shape.n_kv_heads * shape.head_dim;
    let q_row = shape.n_heads * shape.head_dim;

    for seq in [128usize, 512] {
        let q = random_vec(seq * q_row, 1.0, 5);
        let k = random_vec(seq * kv_row, 1.0, 6);
        let v = random_vec(seq * kv_row, 1.0, 7);
        let mut out = vec![0.0f32; q.len()];
        group.bench_with_input(BenchmarkId::new("prefill_h12_kv4_d64", seq), &seq, |bench, &seq| {
            bench.iter(|| attention_prefill_into(&mut out, black_box(&q), &k, &v, shape, seq, seq));
        });
    }
    for cache_len in [128usize, 1024] {
        let q = random_vec(q_row, 1.0, 8);
        let k = random_vec(cache_len * kv_row, 1.0, 9);
        let v = random_vec(cache_len * kv_row, 1.0, 10);
        let mut out = vec![0.0f32; q.len()];
        group.bench_with_input(BenchmarkId::new("decode_h12_kv4_d64", cache_len), &cache_len, |bench, &len| {
            bench.iter(|| attention_decode_into(&mut out, black_box(&q), &k, &v, shape, len, len));
        });
    }
    group.finish();
}

fn bench_model(c: &mut Criterion) {
    let mut group = configure(c, "model");
    let models: [(&str, Architecture); 3] = [
        ("llama_tiny", presets::llama_tiny()),
        ("llama_100m", presets::llama_100m()),
        ("gpt2_small", presets::gpt2_small()),
    ];
    for (name, arch) in models {
        let weights = Weights::random(&arch, 0).expect("preset weights fit in memory");
        let vocab = weights.vocab_size;
        let mut model = CpuModel::new(weights);

        let seq = 128;
        let mut cache = model.new_cache(1, seq).unwrap();
        cache.fill_random(seq - 1, 1).unwrap();
        let token = random_tokens(1, vocab, 2);
        let mut logits = vec![0.0f32; vocab];
        group.bench_function(BenchmarkId::new("decode_b1_seq128", name), |bench| {
            bench.iter(|| {
                cache.truncate(seq - 1);
                model.decode_into(black_box(&token), &mut cache, &mut logits).unwrap();
            });
        });

        let prompt_len = 64;
        let prompt = random_tokens(prompt_len, vocab, 3);
        let mut prefill_cache = model.new_cache(1, prompt_len).unwrap();
        group.bench_function(BenchmarkId::new("prefill_b1_seq64", name), |bench| {
            bench.iter(|| {
                prefill_cache.clear();
                black_box(model.prefill(black_box(&prompt), 1, prompt_len, &mut prefill_cache).unwrap());
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_matmul, bench_attention, bench_model);
criterion_main!(benches);
