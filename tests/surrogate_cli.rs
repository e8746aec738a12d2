//! `alphanas surrogate fit|predict|eval|cv` end to end on a small generated table.

use std::path::Path;
use std::process::{Command, Output};

fn alphanas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_alphanas")).args(args).env("ALPHANAS_BACKEND", "cpu").output().expect("the alphanas binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// 120 rows: two numeric features, one categorical, and a positive target.
fn write_table(path: &Path) {
    let mut text = String::from("width,depth,kind,latency\n");
    for i in 0..120 {
        let width = 64 + (i * 37) % 512;
        let depth = 1 + (i * 7) % 12;
        let kind = ["a", "b", "c"][i % 3];
        let factor = match kind {
            "a" => 1.0,
            "b" => 1.5,
            _ => 2.0,
        };
        let latency = factor * (width as f64 * depth as f64 / 100.0 + 1.0);
        text.push_str(&format!("{width},{depth},{kind},{latency}\n"));
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn fit_predict_eval_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.csv");
    let model = dir.path().join("model.json");
    let predictions = dir.path().join("predictions.csv");
    write_table(&data);
    let data_arg = data.to_str().unwrap();
    let model_arg = model.to_str().unwrap();

    let fit = alphanas(&["surrogate", "fit", "--data", data_arg, "--target", "latency", "--features", "width,depth,kind", "--log-target", "--members", "3", "--hidden", "16,16", "--epochs", "200", "--rows", "0..100", "--out", model_arg]);
    assert!(fit.status.success(), "fit failed: {}", stderr(&fit));
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    assert_eq!(saved["format_version"], 1);
    assert_eq!(saved["feature_names"], serde_json::json!(["width", "depth", "kind=a", "kind=b", "kind=c"]));
    assert_eq!(saved["target_transforms"], serde_json::json!(["log"]));

    let predict = alphanas(&["surrogate", "predict", "--model", model_arg, "--data", data_arg, "--rows", "100..", "--out", predictions.to_str().unwrap()]);
    assert!(predict.status.success(), "predict failed: {}", stderr(&predict));
    let text = std::fs::read_to_string(&predictions).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "row,latency_mean,latency_std");
    assert_eq!(lines.len(), 21);
    assert!(lines[1].starts_with("100,"), "rows keep their index in the data file: {}", lines[1]);

    let eval = alphanas(&["--json", "surrogate", "eval", "--model", model_arg, "--data", data_arg, "--rows", "100..", "--ols-fit-rows", "0..100"]);
    assert!(eval.status.success(), "eval failed: {}", stderr(&eval));
    let report: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(report[0]["model"], "ensemble");
    assert_eq!(report[0]["n"], 20);
    assert!(report[0]["mape"].as_f64().unwrap() < 0.25, "held-out MAPE {}", report[0]["mape"]);
    assert_eq!(report[1]["model"], "ols");
    assert!(report[1]["calibration_2sigma"].is_null());
}

#[test]
fn cross_validation_reports_ensemble_ols_and_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.csv");
    write_table(&data);
    let cv = alphanas(&["--json", "surrogate", "cv", "--data", data.to_str().unwrap(), "--target", "latency", "--features", "width,depth", "--members", "2", "--hidden", "8", "--epochs", "30", "--folds", "3", "--proxy", "width"]);
    assert!(cv.status.success(), "cv failed: {}", stderr(&cv));
    let report: serde_json::Value = serde_json::from_slice(&cv.stdout).unwrap();
    let models: Vec<&str> = report.as_array().unwrap().iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(models, vec!["ensemble", "ols", "proxy:width"]);
    assert_eq!(report[0]["n"], 120);
}

#[test]
fn predict_names_missing_feature_column() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.csv");
    let model = dir.path().join("model.json");
    write_table(&data);
    let fit = alphanas(&["surrogate", "fit", "--data", data.to_str().unwrap(), "--target", "latency", "--features", "width,depth", "--members", "1", "--epochs", "2", "--out", model.to_str().unwrap()]);
    assert!(fit.status.success(), "fit failed: {}", stderr(&fit));

    let other = dir.path().join("other.csv");
    std::fs::write(&other, "width,layers\n64,2\n").unwrap();
    let predict = alphanas(&["surrogate", "predict", "--model", model.to_str().unwrap(), "--data", other.to_str().unwrap(), "--out", dir.path().join("p.csv").to_str().unwrap()]);
    assert!(!predict.status.success());
    let message = stderr(&predict);
    assert!(message.starts_with("error:") && message.contains("[depth]"), "{message}");
}

#[test]
fn fit_rejects_unknown_target() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.csv");
    write_table(&data);
    let fit = alphanas(&["surrogate", "fit", "--data", data.to_str().unwrap(), "--target", "speed", "--features", "width", "--out", dir.path().join("m.json").to_str().unwrap()]);
    assert!(!fit.status.success());
    let message = stderr(&fit);
    assert!(message.contains("`speed` not found") && message.contains("latency"), "{message}");
}
