//! Criterion benchmarks of the GPU matmul at square sizes 128 to 2048, f32 and f16.
//!
//! Each sample records one matmul, submits it and waits for the queue, so the time includes
//! submission and synchronisation (about tens of microseconds), which dominates at 128 and
//! vanishes at 2048. `alphanas bench op matmul` reports the kernel alone from pass timestamps.
//! Skips with a message when no GPU can be opened. Sample sizes are small because lavapipe
//! (the CPU Vulkan driver used where there is no GPU) takes seconds per 2048 product.

use alphanas::device::{gpu_for_tests, DType, GpuTensor, Recorder};
use alphanas::kernels::matmul;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::{Duration, Instant};

fn bench_matmul(c: &mut Criterion) {
    let Some(ctx) = gpu_for_tests("gpu_kernels bench") else { return };
    let mut dtypes = vec![DType::F32];
    if ctx.has_f16() {
        dtypes.push(DType::F16);
    }

    for dtype in dtypes {
        let mut group = c.benchmark_group(format!("gpu_matmul_{}", dtype.name()));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(3));
        for size in [128usize, 256, 512, 1024, 2048] {
            let values: Vec<f32> = (0..size * size).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
            let a = GpuTensor::from_f32(&ctx, &values, &[size, size], dtype).unwrap();
            let b = GpuTensor::from_f32(&ctx, &values, &[size, size], dtype).unwrap();
            let out = GpuTensor::empty(&ctx, &[size, size], dtype).unwrap();
            group.throughput(Throughput::Elements(2 * (size * size * size) as u64));
            group.bench_with_input(BenchmarkId::from_parameter(size), &size, |bencher, &size| {
                bencher.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut rec = Recorder::new(&ctx);
                        matmul::gpu::record(&mut rec, &a, &b, None, &out, size, size, size, false).unwrap();
                        let start = Instant::now();
                        rec.submit().unwrap();
                        ctx.wait().unwrap();
                        total += start.elapsed();
                    }
                    total
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_matmul);
criterion_main!(benches);
