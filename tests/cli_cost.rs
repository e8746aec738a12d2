//! `profile`, `predict`, `validate-cost` and `search --table` end to end on a space of tiny
//! models, on the CPU and, where an adapter exists, on the GPU.

use std::path::Path;
use std::process::{Command, Output};

/// Tiny Llama-style models: 1 or 2 layers, width 32 or 64.
const TINY_SPACE: &str = r#"
name = "tiny"
[fixed]
vocab_size = 256
max_seq_len = 64
ffn = "swiglu"
norm = "rmsnorm"
pos = "rope"
bias = false
tie_embeddings = false
[decisions]
n_layers = [1, 2]
d_model = [32, 64]
n_heads = [2, 4]
n_kv_heads = [1, 2]
mlp_ratio = [2, 3]
"#;

fn alphanas(backend: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_alphanas"));
    command.env("ALPHANAS_BACKEND", backend).env_remove("RUST_LOG").env_remove("ALPHANAS_NO_PIN");
    command
}

fn check(output: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{what} failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    stdout
}

fn write_space(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tiny.toml");
    std::fs::write(&path, TINY_SPACE).unwrap();
    path
}

/// Profiles the tiny space at batch 1, seq 8 with few runs and returns the table's path.
fn profile(dir: &Path, backend: &str, space: &Path, name: &str) -> (std::path::PathBuf, String) {
    let table = dir.join(name);
    let output = alphanas(backend)
        .args(["profile", "--samples", "40", "--max-shapes", "32", "--warmup", "1", "--runs", "3", "--seq", "8", "--space"])
        .arg(space)
        .arg("--out")
        .arg(&table)
        .output()
        .unwrap();
    let stdout = check(&output, "profile");
    (table, stdout)
}

#[test]
fn cpu_profile_continues_predicts_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let space = write_space(dir.path());
    let (table, first) = profile(dir.path(), "cpu", &space, "cpu.json");
    assert!(first.contains("0 shapes already complete"), "{first}");
    let (_, second) = profile(dir.path(), "cpu", &space, "cpu.json");
    assert!(second.contains("(0 timings taken now"), "a second run must continue the table: {second}");

    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&table).unwrap()).unwrap();
    assert_eq!(value["device"]["backend"], "cpu");
    let arch = dir.path().join("arch.json");
    std::fs::write(&arch, r#"{"vocab_size": 256, "max_seq_len": 64, "d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "d_ff": 128}"#).unwrap();
    let output = alphanas("cpu").args(["predict", "--json", "--table"]).arg(&table).arg("--arch").arg(&arch).output().unwrap();
    let predicted: serde_json::Value = serde_json::from_str(&check(&output, "predict")).unwrap();
    assert!(predicted["predictions"][0]["raw_ms"].as_f64().unwrap() > 0.0);
    // A context the model cannot take is rejected, as `bench model` rejects it.
    let output = alphanas("cpu").args(["predict", "--seq", "65", "--table"]).arg(&table).arg("--arch").arg(&arch).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "--seq 65 was accepted");
    assert!(stderr.contains("--seq (65) exceeds max_seq_len (64)"), "{stderr}");

    let output = alphanas("cpu")
        .args(["validate-cost", "--json", "--n", "3", "--calibrate", "2", "--save", "--table"])
        .arg(&table)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&check(&output, "validate-cost")).unwrap();
    assert_eq!(report["n"], 3);
    assert!(report["after"]["mape"].as_f64().unwrap().is_finite());
    // Three rounds by default: each model is measured three times and scored by the median.
    assert_eq!(report["rounds"], 3);
    for model in report["models"].as_array().unwrap() {
        let mut rounds: Vec<f64> = model["round_ms"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(rounds.len(), 3, "{model}");
        rounds.sort_by(f64::total_cmp);
        assert_eq!(model["measured_ms"].as_f64().unwrap(), rounds[1], "the median of the rounds: {model}");
    }
    for mode in ["prefill", "decode"] {
        let repeat = &report["modes"][mode]["repeatability"];
        let within = repeat["within_10pct"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&within), "{mode}: {repeat}");
        assert!(repeat["kendall_tau"].as_f64().unwrap().abs() <= 1.0, "{mode}: {repeat}");
    }
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&table).unwrap()).unwrap();
    assert!(saved["calibration"]["modes"]["decode"]["a"].as_f64().is_some(), "--save must store the fit");

    // The table records the CLI's default pinning, and measuring without it is flagged.
    let multi_cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if cfg!(target_os = "linux") && multi_cpu {
        assert_eq!(saved["device"]["pinned_threads"], true);
        let output = alphanas("cpu").args(["validate-cost", "--no-pin", "--n", "2", "--calibrate", "0", "--rounds", "1", "--table"]).arg(&table).output().unwrap();
        check(&output, "validate-cost --no-pin");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("profiled with pinned worker threads, but this run's are unpinned"), "{stderr}");
    }

    for (args, expected) in [
        (&["--rounds", "0"][..], "--rounds (0) must be between 1 and 100"),
        (&["--rounds", "4294967296"][..], "--rounds (4294967296) must be between 1 and 100"),
        (&["--calibrate", "0", "--save"][..], "--save stores a calibration, which needs --calibrate 1"),
    ] {
        let output = alphanas("cpu").args(["validate-cost", "--n", "2"]).args(args).arg("--table").arg(&table).output().unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn gpu_profile_and_validate() {
    let Some(ctx) = alphanas::device::gpu_for_tests("gpu_profile_and_validate") else { return };
    let dir = tempfile::tempdir().unwrap();
    let space = write_space(dir.path());
    let (table, _) = profile(dir.path(), "gpu", &space, "gpu.json");
    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&table).unwrap()).unwrap();
    assert_eq!(value["device"]["name"], ctx.info.name.as_str());
    assert_ne!(value["device"]["backend"], "cpu");
    assert!(value["entries"].as_array().unwrap().len() > 10);

    let output = alphanas("gpu")
        .args(["validate-cost", "--json", "--n", "2", "--calibrate", "2", "--runs", "10", "--rounds", "1", "--table"])
        .arg(&table)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&check(&output, "validate-cost on the GPU")).unwrap();
    assert_eq!(report["n"], 2);
    assert!(report["modes"]["decode"]["repeatability"].is_null(), "one round has nothing to repeat: {report}");

    // A GPU table cannot be validated with the CPU model.
    let output = alphanas("cpu").args(["validate-cost", "--n", "2", "--table"]).arg(&table).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--backend cpu was given"), "{stderr}");
}

#[test]
fn search_with_a_table_recalibrates_it() {
    let dir = tempfile::tempdir().unwrap();
    let space = write_space(dir.path());
    let (table, _) = profile(dir.path(), "cpu", &space, "cpu.json");
    let out = dir.path().join("run");
    let output = alphanas("cpu")
        .args(["search", "--evals", "8", "--seed", "2", "--measure-seq", "7", "--measure-runs", "1", "--space"])
        .arg(&space)
        .arg("--table")
        .arg(&table)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    check(&output, "search --table");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let feedback = &summary["cost_table"];
    assert_eq!(feedback["measurements"], 16, "two latencies per evaluation: {feedback}");
    let points = feedback["points"].as_array().unwrap();
    assert_eq!(points[0]["calibrated"], false);
    assert_eq!(points.last().unwrap()["calibrated"], true);
    assert!(feedback["mape_by_block"].as_array().unwrap().len() >= 2);
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("cost_table.json")).unwrap()).unwrap();
    assert_eq!(written["calibration"]["measurements"].as_array().unwrap().len(), 16);
    let original: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&table).unwrap()).unwrap();
    assert!(original["calibration"].is_null(), "the input table must not change");

    // The proxy evaluator measures nothing to recalibrate with.
    let output = alphanas("cpu")
        .args(["search", "--evals", "2", "--evaluator", "proxy", "--space"])
        .arg(&space)
        .arg("--table")
        .arg(&table)
        .arg("--out")
        .arg(dir.path().join("proxy"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("use --evaluator measure"), "{stderr}");

    // A GPU's table cannot be recalibrated with latencies measured on the CPU.
    let mut gpu_table = original.clone();
    gpu_table["device"]["name"] = "Some GPU".into();
    gpu_table["device"]["backend"] = "vulkan".into();
    let gpu_path = dir.path().join("gpu.json");
    std::fs::write(&gpu_path, serde_json::to_string(&gpu_table).unwrap()).unwrap();
    let output = alphanas("cpu")
        .args(["search", "--evals", "2", "--measure-seq", "7", "--space"])
        .arg(&space)
        .arg("--table")
        .arg(&gpu_path)
        .arg("--out")
        .arg(dir.path().join("mixed"))
        .output()
        .unwrap();
    assert!(!output.status.success(), "a GPU table was recalibrated with CPU measurements");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("was profiled on Some GPU (vulkan), but the measure evaluator measures on the CPU"), "{stderr}");
}
