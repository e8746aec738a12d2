//! Attention prefill and decode on the GPU and on the CPU at modest sizes.
//!
//! GPU samples are the wall-clock time of one recorded dispatch (prefill) or split + reduce
//! pair (decode), submitted and waited for, so they include submission overhead. Inputs are
//! uploaded once, outside the timed loop. Without a GPU the GPU groups are skipped with a
//! message. Run with `WGPU_BACKEND=vulkan cargo bench --bench attention`.

use std::time::{Duration, Instant};

use alphanas::device::{gpu_for_tests, DType, GpuContext, GpuTensor, Recorder};
use alphanas::kernels::attention::cpu;
use alphanas::kernels::attention::gpu::{record_decode, record_prefill, DecodeScratch, DecodeShape, PrefillScratch, PrefillShape};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// (batch, seq, n_heads, n_kv_heads, head_dim)
const PREFILL: &[(usize, usize, usize, usize, usize)] = &[(1, 256, 8, 8, 64), (1, 512, 8, 2, 64), (2, 256, 12, 12, 64)];
/// (batch, cache_len, n_heads, n_kv_heads, head_dim)
const DECODE: &[(usize, usize, usize, usize, usize)] = &[(1, 1024, 12, 12, 64), (4, 1024, 8, 2, 64), (1, 4096, 12, 12, 64)];

fn gpu_dtypes(ctx: &GpuContext) -> Vec<DType> {
    if ctx.has_f16() {
        vec![DType::F32, DType::F16]
    } else {
        vec![DType::F32]
    }
}

fn time_recorded(ctx: &GpuContext, iterations: u64, mut record: impl FnMut(&mut Recorder<'_>)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iterations {
        let mut rec = Recorder::new(ctx);
        record(&mut rec);
        let start = Instant::now();
        rec.submit().expect("submit");
        ctx.wait().expect("wait");
        total += start.elapsed();
    }
    total
}

fn prefill(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention_prefill");
    group.sample_size(10);
    let ctx = gpu_for_tests("attention_prefill bench");
    for &(batch, seq, n_heads, n_kv_heads, head_dim) in PREFILL {
        let shape = PrefillShape::causal(batch, seq, n_heads, n_kv_heads, head_dim);
        let label = format!("b{batch}_s{seq}_h{n_heads}_g{n_kv_heads}_d{head_dim}");
        let q = random(batch * seq * n_heads * head_dim, 1);
        let k = random(batch * seq * n_kv_heads * head_dim, 2);
        let v = random(batch * seq * n_kv_heads * head_dim, 3);
        group.throughput(Throughput::Elements(shape.flops() as u64));

        group.bench_function(BenchmarkId::new("cpu_f32", &label), |bench| {
            bench.iter(|| cpu::attention_prefill(&q, &k, &v, batch, seq, n_heads, n_kv_heads, head_dim))
        });

        let Some(ctx) = &ctx else { continue };
        for dtype in gpu_dtypes(ctx) {
            let q_gpu = GpuTensor::from_f32(ctx, &q, &[q.len()], dtype).unwrap();
            let k_gpu = GpuTensor::from_f32(ctx, &k, &[k.len()], dtype).unwrap();
            let v_gpu = GpuTensor::from_f32(ctx, &v, &[v.len()], dtype).unwrap();
            let out = GpuTensor::empty(ctx, &[q.len()], dtype).unwrap();
            let scratch = PrefillScratch::new(ctx, &shape, dtype).unwrap();
            group.bench_function(BenchmarkId::new(format!("gpu_{}", dtype.name()), &label), |bench| {
                bench.iter_custom(|iterations| {
                    time_recorded(ctx, iterations, |rec| record_prefill(rec, &shape, &q_gpu, &k_gpu, &v_gpu, &out, &scratch).unwrap())
                })
            });
        }
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention_decode");
    group.sample_size(10);
    let ctx = gpu_for_tests("attention_decode bench");
    for &(batch, cache_len, n_heads, n_kv_heads, head_dim) in DECODE {
        let shape = DecodeShape { batch, cache_len, cache_capacity: cache_len, n_heads, n_kv_heads, head_dim };
        let label = format!("b{batch}_l{cache_len}_h{n_heads}_g{n_kv_heads}_d{head_dim}");
        let q = random(batch * n_heads * head_dim, 4);
        let k = random(batch * cache_len * n_kv_heads * head_dim, 5);
        let v = random(batch * cache_len * n_kv_heads * head_dim, 6);
        group.throughput(Throughput::Elements(shape.flops() as u64));

        group.bench_function(BenchmarkId::new("cpu_f32", &label), |bench| {
            bench.iter(|| cpu::attention_decode(&q, &k, &v, batch, cache_len, n_heads, n_kv_heads, head_dim))
        });

        let Some(ctx) = &ctx else { continue };
        for dtype in gpu_dtypes(ctx) {
            let q_gpu = GpuTensor::from_f32(ctx, &q, &[q.len()], dtype).unwrap();
            let k_gpu = GpuTensor::from_f32(ctx, &k, &[k.len()], dtype).unwrap();
            let v_gpu = GpuTensor::from_f32(ctx, &v, &[v.len()], dtype).unwrap();
            let out = GpuTensor::empty(ctx, &[q.len()], dtype).unwrap();
            let scratch = DecodeScratch::new(ctx, &shape).unwrap();
            group.bench_function(BenchmarkId::new(format!("gpu_{}", dtype.name()), &label), |bench| {
                bench.iter_custom(|iterations| {
                    time_recorded(ctx, iterations, |rec| record_decode(rec, &shape, &q_gpu, &k_gpu, &v_gpu, &out, &scratch).unwrap())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, prefill, decode);
criterion_main!(benches);
