//! Cost-table failure cases: each gives one clear line (or, for shapes far outside the table,
//! a flagged extrapolation), both through the library and through `alphanas predict`.

use alphanas::arch::{presets, Architecture, Dtype};
use alphanas::cost::{model_ops, CostTable, DeviceInfo, Mode, ProfileSettings};
use alphanas::stats::TimingStats;
use std::path::Path;
use std::process::Command;

/// Builds a table holding every op of `arch` in both modes at batch 1, seq 16, with times from a
/// simple analytic device model.
fn table_for(arch: &Architecture) -> CostTable {
    let device = DeviceInfo {
        name: "test cpu".into(),
        backend: "cpu".into(),
        driver: String::new(),
        device_type: "cpu".into(),
        features: vec![],
        threads: Some(1),
        pinned_threads: None,
    };
    let settings = ProfileSettings {
        space: "test".into(),
        modes: vec![Mode::Prefill, Mode::Decode],
        batch: 1,
        seq: 16,
        architectures_sampled: 1,
        max_shapes_per_op: 400,
        warmup: 1,
        runs: 3,
        quick: false,
        seed: 0,
        rounds: 1,
    };
    let mut table = CostTable::new(device, Dtype::F32, settings, 200.0, true);
    for mode in Mode::ALL {
        for o in model_ops(arch, mode, 1, 16) {
            let t = 1500.0 + o.op.flops() / 20.0 + o.op.bytes(Dtype::F32) / 10.0;
            table.insert(&o.op, &TimingStats { median_ns: t, p10_ns: t * 0.95, p90_ns: t * 1.05, runs: 3 });
        }
    }
    table
}

fn write_arch(dir: &Path, arch: &Architecture) -> std::path::PathBuf {
    let path = dir.join("arch.json");
    std::fs::write(&path, arch.to_json()).unwrap();
    path
}

/// Runs `alphanas predict` and returns (success, stdout, stderr).
fn predict(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_alphanas")).arg("predict").args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn truncated_table_is_a_parse_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json");
    let mut table = table_for(&presets::llama_tiny());
    table.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();

    let err = CostTable::load(&path).unwrap_err().to_string();
    assert!(err.starts_with("cannot parse cost table"), "{err}");
    assert!(err.contains("truncated, corrupted or wrongly edited"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn corrupted_entry_names_its_path() {
    let table = table_for(&presets::llama_tiny());
    let mut value = serde_json::to_value(&table).unwrap();
    value["entries"][3]["median_ns"] = serde_json::json!("fast");
    let err = CostTable::from_json(&value.to_string(), "t.json").unwrap_err().to_string();
    assert!(err.contains("entries[3].median_ns"), "{err}");

    let mut value = serde_json::to_value(&table).unwrap();
    value["entries"][0]["median_ns"] = serde_json::json!(-5.0);
    let err = CostTable::from_json(&value.to_string(), "t.json").unwrap_err().to_string();
    assert!(err.contains("entries[0]"), "{err}");
    assert!(err.contains("not a positive finite number"), "{err}");

    let mut value = serde_json::to_value(&table).unwrap();
    // entries[0] is the token embedding, whose dimensions are rows and cols.
    value["entries"][0]["shape"] = serde_json::json!({"rows": 1});
    let err = CostTable::from_json(&value.to_string(), "t.json").unwrap_err().to_string();
    assert!(err.contains("missing dimension `cols`"), "{err}");

    value["entries"][0]["shape"] = serde_json::json!({"rows": 1, "cols": 8, "m": 1});
    let err = CostTable::from_json(&value.to_string(), "t.json").unwrap_err().to_string();
    assert!(err.contains("has no dimension `m`"), "{err}");
}

#[test]
fn mode_not_profiled_is_rejected() {
    let mut table = table_for(&presets::llama_tiny());
    table.settings.modes = vec![Mode::Decode];
    let err = table.predict(&presets::llama_tiny(), Mode::Prefill, 1, 16).unwrap_err().to_string();
    assert!(err.contains("profiled for decode only, not prefill"), "{err}");
    assert!(err.contains("--mode decode"), "{err}");
    assert!(table.predict(&presets::llama_tiny(), Mode::Decode, 1, 16).is_ok());
}

#[test]
fn bad_round_median_is_rejected() {
    let table = table_for(&presets::llama_tiny());
    let mut value = serde_json::to_value(&table).unwrap();
    value["entries"][2]["round_medians_ns"] = serde_json::json!([1000.0, 0.0]);
    let err = CostTable::from_json(&value.to_string(), "t.json").unwrap_err().to_string();
    assert!(err.contains("entries[2]"), "{err}");
    assert!(err.contains("not a positive finite number"), "{err}");
}

#[test]
fn implausible_entry_values_are_rejected() {
    let table = table_for(&presets::llama_tiny());
    let cases = [
        ("median_ns", serde_json::json!(1.7e308), "at most 1e15 ns"),
        ("runs", serde_json::json!(0), "has runs 0"),
        ("p10_ns", serde_json::json!(1e12), "p10_ns ≤ median_ns ≤ p90_ns"),
    ];
    for (field, bad, expected) in cases {
        let mut value = serde_json::to_value(&table).unwrap();
        value["entries"][1][field] = bad;
        let err = CostTable::from_json(&value.to_string(), "t.json").unwrap_err().to_string();
        assert!(err.contains("entries[1]"), "{field}: {err}");
        assert!(err.contains(expected), "{field}: {err}");
    }

    let mut value = serde_json::to_value(&table).unwrap();
    value["entries"][1]["round_medians_ns"] = serde_json::json!([1.0, 2.0, 3.0]);
    let err = CostTable::from_json(&value.to_string(), "t.json").unwrap_err().to_string();
    assert!(err.contains("median of its round_medians_ns is 2"), "{err}");

    let mut value = serde_json::to_value(&table).unwrap();
    value["dtype"] = serde_json::json!("bf16");
    let err = CostTable::from_json(&value.to_string(), "t.json").unwrap_err().to_string();
    assert!(err.contains("dtype (bf16) must be f32 or f16"), "{err}");
}

#[test]
fn cli_rejects_a_table_without_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut table = table_for(&presets::llama_tiny());
    table.entries.clear();
    let path = dir.path().join("empty.json");
    table.save(&path).unwrap();
    let arch = write_arch(dir.path(), &presets::llama_tiny());
    let (ok, _, stderr) = predict(&["--table", path.to_str().unwrap(), "--arch", arch.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("has no entries, so it predicts nothing"), "{stderr}");
}

#[test]
fn table_without_rounds_loads_as_one_round() {
    let table = table_for(&presets::llama_tiny());
    let mut value = serde_json::to_value(&table).unwrap();
    value["settings"].as_object_mut().unwrap().remove("rounds");
    let loaded = CostTable::from_json(&value.to_string(), "t.json").unwrap();
    assert_eq!(loaded.settings.rounds, 1);
    assert!(loaded.entries.iter().all(|e| e.rounds() == 1));
}

#[test]
fn wrong_format_version_is_rejected() {
    let table = table_for(&presets::llama_tiny());
    let mut value = serde_json::to_value(&table).unwrap();
    value["format_version"] = serde_json::json!(99);
    let err = CostTable::from_json(&value.to_string(), "t.json").unwrap_err().to_string();
    assert!(err.contains("format_version 99"), "{err}");
    assert!(err.contains("reads version 1"), "{err}");

    value.as_object_mut().unwrap().remove("format_version");
    let err = CostTable::from_json(&value.to_string(), "t.json").unwrap_err().to_string();
    assert!(err.contains("format_version (missing)"), "{err}");
}

#[test]
fn dtype_mismatch_is_rejected() {
    let table = table_for(&presets::llama_tiny());
    assert!(table.require_dtype(Dtype::F32).is_ok());
    let err = table.require_dtype(Dtype::F16).unwrap_err().to_string();
    assert!(err.contains("profiled for f32 but f16 was requested"), "{err}");
}

#[test]
fn far_outside_shapes_are_flagged() {
    let table = table_for(&presets::llama_tiny());
    let prediction = table.predict(&presets::llama2_7b(), Mode::Decode, 1, 16).unwrap();
    assert!(prediction.extrapolated_ops > 0);
    assert!(prediction.extrapolated.iter().any(|s| s.contains("n=32000, k=4096")), "{:?}", prediction.extrapolated);

    let inside = table.predict(&presets::llama_tiny(), Mode::Decode, 1, 16).unwrap();
    assert_eq!(inside.extrapolated_ops, 0);
    assert_eq!(inside.interpolated_ops, 0);
}

#[test]
fn cli_reports_errors_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let arch_path = write_arch(dir.path(), &presets::llama_tiny());
    let table_path = dir.path().join("t.json");
    let mut table = table_for(&presets::llama_tiny());
    table.save(&table_path).unwrap();
    let (table_arg, arch_arg) = (table_path.to_str().unwrap(), arch_path.to_str().unwrap());

    let (ok, stdout, _) = predict(&["--table", table_arg, "--arch", arch_arg, "--json"]);
    assert!(ok);
    let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value["predictions"].as_array().unwrap().len(), 2);
    assert!(value["predictions"][0]["raw_ms"].as_f64().unwrap() > 0.0);

    let (ok, _, stderr) = predict(&["--table", table_arg, "--arch", arch_arg, "--dtype", "f16"]);
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: cost table"), "{stderr}");
    assert!(stderr.contains("f16 was requested"), "{stderr}");

    let text = std::fs::read_to_string(&table_path).unwrap();
    std::fs::write(&table_path, &text[..100]).unwrap();
    let (ok, _, stderr) = predict(&["--table", table_arg, "--arch", arch_arg]);
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: cannot parse cost table"), "{stderr}");

    let (ok, _, stderr) = predict(&["--table", dir.path().join("none.json").to_str().unwrap(), "--arch", arch_arg]);
    assert!(!ok);
    assert!(stderr.starts_with("error: cannot read cost table"), "{stderr}");
}

#[test]
fn cli_flags_extrapolation() {
    let dir = tempfile::tempdir().unwrap();
    let arch_path = write_arch(dir.path(), &presets::llama2_7b());
    let table_path = dir.path().join("t.json");
    table_for(&presets::llama_tiny()).save(&table_path).unwrap();

    let (ok, stdout, stderr) = predict(&["--table", table_path.to_str().unwrap(), "--arch", arch_path.to_str().unwrap(), "--mode", "decode"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("extrapolated (far outside the table"), "{stdout}");
    assert!(stderr.contains("extrapolated"), "the warning goes to the log: {stderr}");
}
