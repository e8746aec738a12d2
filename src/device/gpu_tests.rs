//! Runtime tests on a real device (lavapipe in CI): transfers, the pool, recording, timing.
//! Each test skips with a message when no GPU can be opened (see `gpu_for_tests`).

use super::*;
use crate::kernels::embedding::gpu::record_residual_add;

#[test]
fn tensor_round_trip_f32_f16_u32() {
    let Some(ctx) = gpu_for_tests("tensor_round_trip_f32_f16_u32") else { return };
    let data: Vec<f32> = (0..37).map(|i| i as f32 * 0.37 - 5.0).collect();

    let t32 = GpuTensor::from_f32(&ctx, &data, &[37], DType::F32).unwrap();
    assert_eq!(t32.to_f32(&ctx).unwrap(), data);

    if ctx.has_f16() {
        // An odd element count exercises the 4-byte padding of f16 uploads.
        let t16 = GpuTensor::from_f32(&ctx, &data, &[37], DType::F16).unwrap();
        let back = t16.to_f32(&ctx).unwrap();
        let expected: Vec<f32> = data.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
        assert_eq!(back, expected);
    }

    let ids: Vec<u32> = (0..5).map(|i| i * 1000 + 7).collect();
    let tu = GpuTensor::from_u32(&ctx, &ids, &[5]).unwrap();
    assert_eq!(tu.to_u32(&ctx).unwrap(), ids);
}

#[test]
fn tensor_rejects_wrong_length() {
    let Some(ctx) = gpu_for_tests("tensor_rejects_wrong_length") else { return };
    let err = GpuTensor::from_f32(&ctx, &[1.0, 2.0], &[3], DType::F32).unwrap_err();
    assert!(err.to_string().contains("needs 3"), "{err}");
    assert!(GpuTensor::from_f32(&ctx, &[1.0], &[1], DType::U32).is_err());
}

#[test]
fn pool_reuses_buffers() {
    let Some(ctx) = gpu_for_tests("pool_reuses_buffers") else { return };
    // A size no other test uses, so parallel tests do not take these buffers.
    let shape = [12_345];
    drop(GpuTensor::empty(&ctx, &shape, DType::F32).unwrap());
    let before = ctx.pool().stats();
    for _ in 0..5 {
        drop(GpuTensor::empty(&ctx, &shape, DType::F32).unwrap());
    }
    let after = ctx.pool().stats();
    assert!(after.reuses >= before.reuses + 5, "{before:?} -> {after:?}");
}

#[test]
fn recorder_chains_dispatches() {
    let Some(ctx) = gpu_for_tests("recorder_chains_dispatches") else { return };
    let n = 1000;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| 0.5 * i as f32).collect();
    let ta = GpuTensor::from_f32(&ctx, &a, &[n], DType::F32).unwrap();
    let tb = GpuTensor::from_f32(&ctx, &b, &[n], DType::F32).unwrap();
    let sum = GpuTensor::empty(&ctx, &[n], DType::F32).unwrap();
    let out = GpuTensor::empty(&ctx, &[n], DType::F32).unwrap();

    // out = (a + b) + b, two dependent dispatches in one pass and one submission.
    let mut rec = Recorder::new(&ctx);
    record_residual_add(&mut rec, &ta, &tb, &sum).unwrap();
    record_residual_add(&mut rec, &sum, &tb, &out).unwrap();
    assert_eq!(rec.pass_count(), 1);
    assert_eq!(rec.dispatch_count(), 2);
    rec.submit().unwrap();

    let got = out.to_f32(&ctx).unwrap();
    for i in 0..n {
        assert_eq!(got[i], a[i] + 2.0 * b[i], "element {i}");
    }
}

#[test]
fn recorder_rejects_bad_params() {
    let Some(ctx) = gpu_for_tests("recorder_rejects_bad_params") else { return };
    let spec = KernelSpec::new("residual", crate::kernels::embedding::gpu::RESIDUAL_SHADER, "residual_add", DType::F32, &[Access::Read, Access::Read, Access::ReadWrite]);
    let kernel = ctx.kernel(&spec).unwrap();
    let t = GpuTensor::empty(&ctx, &[4], DType::F32).unwrap();
    let mut rec = Recorder::new(&ctx);

    let unpadded = [4u32, 0, 0];
    let err = rec.dispatch(&kernel, &unpadded, &[(&t).into(), (&t).into(), (&t).into()], 1).unwrap_err();
    assert!(err.to_string().contains("multiple of 16"), "{err}");

    let params = [4u32, 0, 0, 0];
    let err = rec.dispatch(&kernel, &params, &[(&t).into(), (&t).into()], 1).unwrap_err();
    assert!(err.to_string().contains("2 storage bindings"), "{err}");
}

#[test]
fn pipeline_built_once() {
    let Some(ctx) = gpu_for_tests("pipeline_built_once") else { return };
    let spec = KernelSpec::new("residual", crate::kernels::embedding::gpu::RESIDUAL_SHADER, "residual_add", DType::F32, &[Access::Read, Access::Read, Access::ReadWrite]);
    let first = ctx.kernel(&spec).unwrap();
    let second = ctx.kernel(&spec).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &second));
}

#[test]
fn invalid_shader_becomes_error() {
    let Some(ctx) = gpu_for_tests("invalid_shader_becomes_error") else { return };
    let spec = KernelSpec::new("broken", "alias T = f32;\n@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }", "main", DType::F32, &[]);
    let err = ctx.kernel(&spec).unwrap_err();
    assert!(err.to_string().contains("broken::main[f32]"), "{err}");
}

#[test]
fn time_gpu_returns_positive_stats() {
    let Some(ctx) = gpu_for_tests("time_gpu_returns_positive_stats") else { return };
    let n = 1 << 16;
    let a = GpuTensor::from_f32(&ctx, &vec![1.0; n], &[n], DType::F32).unwrap();
    let out = GpuTensor::empty(&ctx, &[n], DType::F32).unwrap();
    let (stats, source) = time_gpu_with_source(&ctx, 3, 10, |rec| record_residual_add(rec, &a, &a, &out)).unwrap();
    assert_eq!(stats.runs, 10);
    assert!(stats.median_ns > 0.0, "{stats:?} from {source:?}");
    assert!(stats.p10_ns <= stats.median_ns && stats.median_ns <= stats.p90_ns, "{stats:?}");
    eprintln!("residual add of {n} elements: {stats:?} ({source:?})");
}
