//! Tests of fitting, prediction, refits and model files, on small synthetic data.

use super::*;

/// `n` rows of two features in [-1, 1] and two targets: a smooth function and a positive one.
fn synthetic(n: usize, offset: usize) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in offset..offset + n {
        let a = ((i * 7919) % 1000) as f64 / 500.0 - 1.0;
        let b = ((i * 104_729) % 1000) as f64 / 500.0 - 1.0;
        x.push(vec![a, b]);
        y.push(vec![a * a + 0.5 * b, (1.0 + a + 0.5 * b).exp()]);
    }
    (x, y)
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn small_config() -> EnsembleConfig {
    EnsembleConfig { members: 3, hidden: vec![16, 16], epochs: 150, patience: 30, batch_size: 32, lr: 3e-3, log_targets: vec![false, true], ..Default::default() }
}

fn flatten(x: &[Vec<f64>]) -> Vec<f32> {
    x.iter().flatten().map(|&v| v as f32).collect()
}

#[test]
fn fit_learns_synthetic_targets() {
    let (x, y) = synthetic(400, 0);
    let model = Ensemble::fit(&x, &y, names("x", 2), names("y", 2), &small_config()).unwrap();
    let (tx, ty) = synthetic(100, 5000);
    let prediction = model.predict(&flatten(&tx), tx.len());

    let mut abs_err = 0.0;
    let mut rel_err = 0.0;
    for (r, truth) in ty.iter().enumerate() {
        abs_err += (prediction.mean_at(r, 0) as f64 - truth[0]).abs();
        rel_err += ((prediction.mean_at(r, 1) as f64 - truth[1]) / truth[1]).abs();
    }
    let mae = abs_err / ty.len() as f64;
    let mape = rel_err / ty.len() as f64;
    assert!(mae < 0.08, "mean absolute error of target 0 is {mae}");
    assert!(mape < 0.08, "mean relative error of the log target is {mape}");
    assert!(prediction.std.iter().all(|s| s.is_finite() && *s >= 0.0));
    assert!(prediction.std.iter().any(|s| *s > 0.0), "members agree exactly, so they are not independent");
}

#[test]
fn seed_fixes_bits_across_threads() {
    let (x, y) = synthetic(120, 0);
    let cfg = EnsembleConfig { epochs: 20, ..small_config() };
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let three_threads = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    let a = one_thread.install(|| Ensemble::fit(&x, &y, names("x", 2), names("y", 2), &cfg).unwrap());
    let b = three_threads.install(|| Ensemble::fit(&x, &y, names("x", 2), names("y", 2), &cfg).unwrap());
    assert_eq!(a, b);

    let other_seed = Ensemble::fit(&x, &y, names("x", 2), names("y", 2), &EnsembleConfig { seed: 1, ..cfg }).unwrap();
    assert_ne!(a.members(), other_seed.members());
}

#[test]
fn predict_same_on_any_thread_count() {
    let (x, y) = synthetic(300, 0);
    let cfg = EnsembleConfig { epochs: 5, ..small_config() };
    let model = Ensemble::fit(&x, &y, names("x", 2), names("y", 2), &cfg).unwrap();
    let rows = flatten(&x);
    let whole = |threads: usize| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| model.predict(&rows, x.len()));
    let (one, three) = (whole(1), whole(3));
    assert_eq!(one.mean, three.mean);
    assert_eq!(one.std, three.std);
    // Row by row agrees with the batch to rounding (a one-row product sums in another order).
    for r in [0, 31, 32, 100, 299] {
        let single = model.predict(&rows[r * 2..(r + 1) * 2], 1);
        for (a, b) in single.mean.iter().chain(&single.std).zip(three.mean[r * 2..(r + 1) * 2].iter().chain(&three.std[r * 2..(r + 1) * 2])) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "row {r}: {a} vs {b}");
        }
    }
}

#[test]
fn log_target_std_is_member_spread() {
    let (x, y) = synthetic(100, 0);
    let cfg = EnsembleConfig { epochs: 10, ..small_config() };
    let model = Ensemble::fit(&x, &y, names("x", 2), names("y", 2), &cfg).unwrap();
    let row = flatten(&x[..1]);
    let prediction = model.predict(&row, 1);

    // Recompute member by member: standardise, forward, unstandardise, exponentiate.
    let plan = model.inference_plan();
    let standardised: Vec<f32> = (0..2).map(|j| (row[j] - plan.feature_mean[j]) * plan.feature_inv_std[j]).collect();
    let mut values = Vec::new();
    for member in model.members() {
        let mut out = vec![0.0; 2];
        member.forward_into(cfg.activation, &standardised, 1, &mut out, &mut [Vec::new(), Vec::new()]);
        values.push(plan.to_target_units(1, out[1]));
    }
    let mean = values.iter().sum::<f32>() / values.len() as f32;
    let std = (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / values.len() as f32).sqrt();
    assert!((prediction.mean_at(0, 1) - mean).abs() <= 1e-5 * mean.abs());
    assert!((prediction.std_at(0, 1) - std).abs() <= 1e-5 * mean.abs());
}

#[test]
fn large_batches_match_row_by_row() {
    let (x, y) = synthetic(100, 0);
    let cfg = EnsembleConfig { epochs: 5, ..small_config() };
    let model = Ensemble::fit(&x, &y, names("x", 2), names("y", 2), &cfg).unwrap();
    let (bx, _) = synthetic(700, 100);
    let batch = model.predict(&flatten(&bx), bx.len());
    // The GEMM kernels pick other blockings for other row counts, which changes the summation
    // order, so rows agree to rounding, not bit for bit.
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * a.abs().max(b.abs()) + 1e-6;
    for r in [0, 255, 256, 513, 699] {
        let single = model.predict(&flatten(&bx[r..r + 1]), 1);
        for k in 0..2 {
            assert!(close(single.mean[k], batch.mean_at(r, k)), "row {r} target {k} mean: {} vs {}", single.mean[k], batch.mean_at(r, k));
            assert!(close(single.std[k], batch.std_at(r, k)), "row {r} target {k} std: {} vs {}", single.std[k], batch.std_at(r, k));
        }
    }
}

#[test]
fn refit_warm_starts_and_learns_new_rows() {
    let (x, y) = synthetic(200, 0);
    let cfg = EnsembleConfig { epochs: 60, ..small_config() };
    let mut model = Ensemble::fit(&x, &y, names("x", 2), names("y", 2), &cfg).unwrap();

    // New observations from a shifted function, so the old fit is wrong on them.
    let (new_x, mut new_y) = synthetic(200, 1000);
    for row in &mut new_y {
        row[0] += 1.0;
    }
    let error_on_new = |model: &Ensemble| {
        let p = model.predict(&flatten(&new_x), new_x.len());
        new_y.iter().enumerate().map(|(r, t)| (p.mean_at(r, 0) as f64 - t[0]).abs()).sum::<f64>() / new_y.len() as f64
    };
    let before = error_on_new(&model);
    let untouched = model.clone();
    model.refit(&new_x, &new_y).unwrap();
    let after = error_on_new(&model);
    assert!(after < 0.3 * before, "refit error on the new rows went from {before} to {after}");
    assert_eq!(model.target_names(), untouched.target_names());
    assert_ne!(model.members(), untouched.members());

    let mut cold = model.clone();
    cold.refit(&x[..1], &y[..1]).unwrap_err();
}

#[test]
fn save_and_load_round_trip() {
    let (x, y) = synthetic(80, 0);
    let cfg = EnsembleConfig { epochs: 5, ..small_config() };
    let model = Ensemble::fit(&x, &y, names("x", 2), names("y", 2), &cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.json");
    model.save(&path).unwrap();
    let loaded = Ensemble::load(&path).unwrap();
    // Weights are f32 and round-trip exactly. The f64 scalings may move by one unit in the
    // last place (serde_json parses without its float_roundtrip feature here), which the f32
    // inference path does not see.
    assert_eq!(model.members(), loaded.members());
    assert_eq!(model.config(), loaded.config());
    assert_eq!(model.feature_names(), loaded.feature_names());
    let input = flatten(&x[..10]);
    assert_eq!(model.predict(&input, 10), loaded.predict(&input, 10));

    let text = std::fs::read_to_string(&path).unwrap();
    let future = text.replacen(&format!("\"format_version\": {FORMAT_VERSION}"), "\"format_version\": 99", 1);
    let message = Ensemble::from_json(&future).unwrap_err();
    assert!(message.contains("format_version 99"), "{message}");
}

#[test]
fn corrupt_model_shapes_are_rejected() {
    let (x, y) = synthetic(50, 0);
    let cfg = EnsembleConfig { epochs: 2, ..small_config() };
    let model = Ensemble::fit(&x, &y, names("x", 2), names("y", 2), &cfg).unwrap();
    let mut value: serde_json::Value = serde_json::to_value(&model).unwrap();
    value["members"][1]["layers"][0]["bias"] = serde_json::json!([0.0]);
    let message = Ensemble::from_json(&value.to_string()).unwrap_err();
    assert!(message.contains("member 1 layer 0"), "{message}");
}

#[test]
fn feature_mismatch_names_missing_and_extra() {
    let (x, y) = synthetic(50, 0);
    let cfg = EnsembleConfig { epochs: 2, ..small_config() };
    let model = Ensemble::fit(&x, &y, vec!["a".into(), "b".into()], names("y", 2), &cfg).unwrap();
    assert!(model.check_feature_names(&["a".into(), "b".into()]).is_ok());
    let message = model.check_feature_names(&["a".into(), "c".into()]).unwrap_err().to_string();
    assert!(message.contains("missing: [b]"), "{message}");
    assert!(message.contains("extra: [c]"), "{message}");
    let message = model.check_feature_names(&["b".into(), "a".into()]).unwrap_err().to_string();
    assert!(message.contains("order"), "{message}");
}

#[test]
fn invalid_training_data_is_rejected() {
    let (x, mut y) = synthetic(20, 0);
    let cfg = small_config();
    let fit = |x: &[Vec<f64>], y: &[Vec<f64>], cfg: &EnsembleConfig| Ensemble::fit(x, y, names("x", 2), names("y", 2), cfg).map(|_| ()).unwrap_err().to_string();

    assert!(fit(&x, &y[..10], &cfg).contains("20 feature rows but 10 target rows"));
    y[3][1] = -1.0;
    assert!(fit(&x, &y, &cfg).contains("must be positive"));
    y[3][1] = 1.0;
    let mut bad_x = x.clone();
    bad_x[5][0] = f64::NAN;
    assert!(fit(&bad_x, &y, &cfg).contains("row 5"));
    assert!(fit(&x, &y, &EnsembleConfig { members: 0, ..cfg.clone() }).contains("members"));
    assert!(fit(&x, &y, &EnsembleConfig { log_targets: vec![true], ..cfg.clone() }).contains("log_targets"));
    assert!(fit(&x, &y, &EnsembleConfig { val_fraction: 1.0, ..cfg.clone() }).contains("val_fraction"));
}

/// Noisy targets: a smooth function of two features plus uniform noise.
fn noisy(n: usize, offset: usize) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let (x, mut y) = synthetic(n, offset);
    for (i, row) in y.iter_mut().enumerate() {
        let noise = (((offset + i) * 2_654_435_761) % 1000) as f64 / 1000.0 - 0.5;
        row[0] += 0.4 * noise;
    }
    (x, y)
}

#[test]
fn calibrated_spread_covers_held_out_rows() {
    let (x, y) = noisy(400, 0);
    let (test_x, test_y) = noisy(200, 5000);
    let raw_cfg = EnsembleConfig { log_targets: vec![false, false], ..small_config() };
    let raw = Ensemble::fit(&x, &y, names("x", 2), names("y", 2), &raw_cfg).unwrap();
    let calibrated = Ensemble::fit(&x, &y, names("x", 2), names("y", 2), &EnsembleConfig { calibrate_spread: true, ..raw_cfg.clone() }).unwrap();
    assert_eq!(raw.spread_scale(), vec![1.0, 1.0]);

    let coverage = |model: &Ensemble| {
        let prediction = model.predict(&flatten(&test_x), test_x.len());
        let inside = (0..test_x.len()).filter(|&i| (f64::from(prediction.mean_at(i, 0)) - test_y[i][0]).abs() <= 2.0 * f64::from(prediction.std_at(i, 0))).count();
        inside as f64 / test_x.len() as f64
    };
    let (before, after) = (coverage(&raw), coverage(&calibrated));
    // The noise is a fifth of the target's range; members that agree with each other cannot
    // cover it, and the out-of-bag factor leans wide.
    assert!(before < 0.8, "raw spread covers {before}");
    assert!(after >= 0.85, "calibrated spread covers {after} (raw {before})");
    let first_rows = &flatten(&test_x)[..6];
    assert_eq!(raw.predict(first_rows, 3).mean, calibrated.predict(first_rows, 3).mean, "the means do not change");
}

#[test]
fn spread_scale_survives_save_and_load() {
    let (x, y) = noisy(120, 0);
    let cfg = EnsembleConfig { calibrate_spread: true, ..small_config() };
    let model = Ensemble::fit(&x, &y, names("x", 2), names("y", 2), &cfg).unwrap();
    let text = serde_json::to_string(&model).unwrap();
    let loaded = Ensemble::from_json(&text).unwrap();
    // serde_json may round the last bit of an f64 on the way back.
    for (a, b) in loaded.spread_scale().iter().zip(model.spread_scale()) {
        assert!((a - b).abs() <= 1e-12 * b, "{a} against {b}");
    }

    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["spread_scale"] = serde_json::json!([1.0]);
    let error = Ensemble::from_json(&value.to_string()).unwrap_err();
    assert!(error.contains("spread_scale"), "{error}");
    // Beyond f32's range the standard deviations would print as inf.
    value["spread_scale"] = serde_json::json!([1e39, 1.0]);
    let error = Ensemble::from_json(&value.to_string()).unwrap_err();
    assert!(error.contains("spread_scale"), "{error}");
}

#[test]
fn one_member_keeps_its_spread_unscaled() {
    let (x, y) = noisy(120, 0);
    let cfg = EnsembleConfig { members: 1, calibrate_spread: true, ..small_config() };
    let model = Ensemble::fit(&x, &y, names("x", 2), names("y", 2), &cfg).unwrap();
    assert_eq!(model.spread_scale(), vec![1.0, 1.0]);
}

#[test]
fn overflowing_scaling_is_rejected() {
    let (mut x, mut y) = synthetic(20, 0);
    let cfg = EnsembleConfig { log_targets: vec![false, false], ..small_config() };
    let fit = |x: &[Vec<f64>], y: &[Vec<f64>]| Ensemble::fit(x, y, names("x", 2), names("y", 2), &cfg).map(|_| ()).unwrap_err().to_string();

    // Finite values whose squared deviations overflow.
    y[4][1] = 1e308;
    let error = fit(&x, &y);
    assert!(error.contains("target `y1` spans too wide a range"), "{error}");
    y[4][1] = 1.0;
    x[2][0] = -1e308;
    x[3][0] = 1e308;
    let error = fit(&x, &y);
    assert!(error.contains("feature `x0` spans too wide a range"), "{error}");
}

#[test]
fn cpu_scorer_counts_calls_and_checks_batches() {
    let (x, y) = synthetic(50, 0);
    let cfg = EnsembleConfig { epochs: 2, ..small_config() };
    let model = Ensemble::fit(&x, &y, names("x", 2), names("y", 2), &cfg).unwrap();
    let mut scorer = model.cpu_scorer();
    let input = flatten(&x);
    let scored = scorer.score(&input, 50).unwrap();
    assert_eq!(scored, model.predict(&input, 50));
    scorer.score(&input[..2], 1).unwrap();
    assert_eq!(scorer.dispatches(), 2);

    let message = scorer.score(&input[..3], 1).unwrap_err().to_string();
    assert!(message.contains("3 values"), "{message}");
    let mut with_nan = input[..2].to_vec();
    with_nan[1] = f32::INFINITY;
    assert!(scorer.score(&with_nan, 1).is_err());
    assert_eq!(scorer.dispatches(), 2, "rejected batches must not count as dispatches");
}
