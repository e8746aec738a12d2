//! GPU-vs-CPU parity of surrogate scoring. Skips with a message when there is no GPU adapter,
//! unless `ALPHANAS_REQUIRE_GPU=1`. On a machine without a GPU, run it on lavapipe with
//! `WGPU_BACKEND=vulkan`.

use alphanas::device::{gpu_for_tests, GpuContext};
use alphanas::surrogate::{Activation, Ensemble, EnsembleConfig, Scorer, WeightPrecision};
use std::sync::Arc;

fn context_or_skip(test: &str) -> Option<Arc<GpuContext>> {
    gpu_for_tests(test)
}

/// Rows of `d` features with a wide spread of magnitudes (up to about 1e5), so the
/// standardisation is exercised, and targets that depend on them.
fn data(n: usize, d: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut x = Vec::new();
    let mut y = Vec::new();
    for _ in 0..n {
        let row: Vec<f64> = (0..d).map(|j| next() * 10f64.powi((j % 6) as i32)).collect();
        let signal: f64 = row.iter().enumerate().map(|(j, v)| v / 10f64.powi((j % 6) as i32) * (j as f64 + 1.0).sqrt()).sum();
        y.push(vec![signal, (0.3 * signal).exp() * 100.0]);
        x.push(row);
    }
    (x, y)
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Relative tolerance of GPU against CPU results. Both run the same f32 operations but the
/// GPU may fuse multiply-adds and use its own `exp` and `tanh`, which differ by a few ulp; over
/// three layers of up to 48 terms and an `exp` of a value near 10 this stays well below 1e-4.
const RELATIVE_TOLERANCE: f32 = 1e-4;

fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], scale: &[f32]) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    for (i, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        // The std is compared against the mean's magnitude, because a small std is a difference
        // of nearly equal member outputs and carries their absolute rounding error.
        let allowed = RELATIVE_TOLERANCE * scale[i].abs().max(c.abs()) + 1e-6;
        assert!((g - c).abs() <= allowed, "{what}[{i}]: GPU {g} vs CPU {c} (allowed {allowed})");
    }
}

#[test]
fn gpu_matches_cpu_on_ragged_batches() {
    let Some(context) = context_or_skip("gpu_matches_cpu_on_ragged_batches") else { return };
    for (activation, hidden) in [(Activation::Silu, vec![48, 33]), (Activation::Gelu, vec![17]), (Activation::Relu, vec![64, 64]), (Activation::Tanh, vec![5, 9, 7])] {
        let d = 13;
        let (x, y) = data(300, d, 1);
        // Half the cases scale the spread, which the GPU scorer applies after read-back.
        let calibrate_spread = matches!(activation, Activation::Gelu | Activation::Tanh);
        let cfg = EnsembleConfig { members: 5, hidden: hidden.clone(), activation, epochs: 5, log_targets: vec![false, true], calibrate_spread, ..Default::default() };
        let model = Ensemble::fit(&x, &y, names("x", d), names("y", 2), &cfg).unwrap();
        assert_eq!(model.spread_scale().iter().any(|&s| s != 1.0), calibrate_spread, "{activation:?}");
        let mut gpu = model.gpu_scorer(&context).unwrap();
        let mut cpu = model.cpu_scorer();

        for n in [1usize, 2, 15, 16, 17, 63, 255, 1000] {
            let (bx, _) = data(n, d, 7 + n as u64);
            let flat: Vec<f32> = bx.iter().flatten().map(|&v| v as f32).collect();
            let g = gpu.score(&flat, n).unwrap();
            let c = cpu.score(&flat, n).unwrap();
            let what = format!("{activation:?} {hidden:?} n={n}");
            assert_close(&format!("{what} mean"), &g.mean, &c.mean, &c.mean);
            assert_close(&format!("{what} std"), &g.std, &c.std, &c.mean);
        }
        assert_eq!(gpu.dispatches(), 8, "one dispatch per score call");
    }
}

#[test]
fn gpu_folds_grids_beyond_65535_workgroups() {
    let Some(context) = context_or_skip("gpu_folds_grids_beyond_65535_workgroups") else { return };
    let d = 3;
    let (x, y) = data(100, d, 2);
    let cfg = EnsembleConfig { members: 2, hidden: vec![4], epochs: 2, ..Default::default() };
    let model = Ensemble::fit(&x, &y, names("x", d), names("y", 2), &cfg).unwrap();
    let mut gpu = model.gpu_scorer(&context).unwrap();

    // 16 rows per workgroup at most, so this many rows need more than 65,535 workgroups.
    let n = 65_535 * 16 + 37;
    let flat: Vec<f32> = (0..n * d).map(|i| ((i * 2_654_435_761) % 1000) as f32 / 100.0).collect();
    let g = gpu.score(&flat, n).unwrap();
    assert_eq!(gpu.dispatches(), 1);
    let c = model.predict(&flat, n);
    for row in [0, 1, 65_535 * 16 - 1, 65_535 * 16, n - 1] {
        for t in 0..2 {
            let (gv, cv) = (g.mean_at(row, t), c.mean_at(row, t));
            assert!((gv - cv).abs() <= RELATIVE_TOLERANCE * cv.abs() + 1e-6, "row {row} target {t}: GPU {gv} vs CPU {cv}");
        }
    }
}

#[test]
fn gpu_reuses_buffers_and_rejects_bad_batches() {
    let Some(context) = context_or_skip("gpu_reuses_buffers_and_rejects_bad_batches") else { return };
    let d = 4;
    let (x, y) = data(60, d, 3);
    let cfg = EnsembleConfig { members: 3, hidden: vec![8], epochs: 2, ..Default::default() };
    let model = Ensemble::fit(&x, &y, names("x", d), names("y", 2), &cfg).unwrap();
    let mut gpu = model.gpu_scorer(&context).unwrap();
    let flat: Vec<f32> = x.iter().flatten().map(|&v| v as f32).collect();
    assert!(gpu.last_dispatch().is_none());

    let started = std::time::Instant::now();
    let big = gpu.score(&flat, 60).unwrap();
    let wall = started.elapsed();
    let times = gpu.last_dispatch().expect("the times of the dispatch");
    assert!(times.prepare + times.wait + times.read_back <= wall, "{times:?} exceed the call's {wall:?}");
    assert!(times.wait > std::time::Duration::ZERO, "{times:?}");
    let small = gpu.score(&flat[..2 * d], 2).unwrap();
    assert_eq!(small.mean[..], big.mean[..4], "a smaller batch after a larger one reads stale rows");
    assert!(gpu.score(&flat[..5], 1).is_err());
    assert_eq!(gpu.dispatches(), 2);
    let empty = gpu.score(&[], 0).unwrap();
    assert_eq!(empty.n, 0);
}

/// With f16 weights the GPU must match the CPU running the same f16-rounded weights as tightly
/// as with f32, and stay within 1% of the f32 model's prediction scale.
#[test]
fn gpu_f16_weights_match_rounded_cpu() {
    let Some(context) = context_or_skip("gpu_f16_weights_match_rounded_cpu") else { return };
    let d = 13;
    let (x, y) = data(300, d, 4);
    let cfg = EnsembleConfig { members: 5, hidden: vec![48, 33], epochs: 5, log_targets: vec![false, true], ..Default::default() };
    let model = Ensemble::fit(&x, &y, names("x", d), names("y", 2), &cfg).unwrap();
    let mut gpu = model.gpu_scorer_with(&context, WeightPrecision::F16).unwrap();
    let mut rounded = model.with_f16_weights().cpu_scorer();
    let mut full = model.cpu_scorer();

    let n = 257;
    let (bx, _) = data(n, d, 11);
    let flat: Vec<f32> = bx.iter().flatten().map(|&v| v as f32).collect();
    let g = gpu.score(&flat, n).unwrap();
    let c = rounded.score(&flat, n).unwrap();
    assert_close("f16 mean", &g.mean, &c.mean, &c.mean);
    assert_close("f16 std", &g.std, &c.std, &c.mean);

    let f = full.score(&flat, n).unwrap();
    let scale = f.mean.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = g.mean.iter().zip(&f.mean).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 0.01 * scale, "f16 weights moved a prediction by {worst}, more than 1% of the scale {scale}");
}

#[test]
fn gpu_splits_batches_beyond_one_dispatch() {
    let Some(context) = context_or_skip("gpu_splits_batches_beyond_one_dispatch") else { return };
    let d = 5;
    let (x, y) = data(80, d, 5);
    let cfg = EnsembleConfig { members: 3, hidden: vec![8], epochs: 2, calibrate_spread: true, ..Default::default() };
    let model = Ensemble::fit(&x, &y, names("x", d), names("y", 2), &cfg).unwrap();
    let mut gpu = model.gpu_scorer(&context).unwrap();
    gpu.set_max_rows_per_dispatch(100);
    assert_eq!(gpu.max_rows_per_dispatch(), 100);

    let n = 1037;
    let (bx, _) = data(n, d, 9);
    let flat: Vec<f32> = bx.iter().flatten().map(|&v| v as f32).collect();
    let g = gpu.score(&flat, n).unwrap();
    assert_eq!(gpu.dispatches(), 11, "1037 rows in slices of 100");
    let c = model.cpu_scorer().score(&flat, n).unwrap();
    assert_close("split mean", &g.mean, &c.mean, &c.mean);
    assert_close("split std", &g.std, &c.std, &c.mean);
}

/// Wide members: exact on a GPU; on llvmpipe, whose loop budget they exceed, a clear error
/// when the scorer is built instead of wrong scores.
#[test]
fn gpu_wide_members_checked_or_rejected() {
    let Some(context) = context_or_skip("gpu_wide_members_checked_or_rejected") else { return };
    let d = 3;
    let (x, y) = data(40, d, 5);
    let cfg = EnsembleConfig { members: 5, hidden: vec![512, 512], epochs: 1, ..Default::default() };
    let model = Ensemble::fit(&x, &y, names("x", d), names("y", 2), &cfg).unwrap();
    let flat: Vec<f32> = x.iter().flatten().map(|&v| v as f32).collect();
    match model.gpu_scorer(&context) {
        Ok(mut gpu) => {
            assert!(!context.is_llvmpipe(), "llvmpipe cannot run 512-wide members correctly");
            let got = gpu.score(&flat, 40).unwrap();
            let cpu = model.predict(&flat, 40);
            assert_close("wide members", &got.mean, &cpu.mean, &cpu.mean);
        }
        Err(e) => {
            assert!(context.is_llvmpipe(), "{e}");
            assert!(e.to_string().contains("loop iterations"), "{e}");
        }
    }
}
