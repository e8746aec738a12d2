//! `alphanas space` on the command line.

use std::process::Command;

fn alphanas(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_alphanas")).args(args).output().expect("alphanas runs")
}

#[test]
fn describe_hwgpt_json() {
    let out = alphanas(&["space", "--space", "hwgpt-s", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["size"], "1903784282946");
    assert_eq!(value["name"], "hwgpt-s");
    let names: Vec<&str> = value["decisions"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["n_layers", "d_model", "bias", "n_heads", "mlp_ratio"]);
    assert!(value["params_min"].as_u64().unwrap() < value["params_max"].as_u64().unwrap());
    let features: Vec<&str> = value["features"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(features.contains(&"log_params"), "{features:?}");
}

#[test]
fn describe_default_table() {
    let out = alphanas(&["space"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("llama"), "{text}");
    assert!(text.contains("architectures"), "{text}");
    assert!(text.contains("mlp_ratio"), "{text}");
    assert!(text.contains("40572"), "{text}");
    assert!(text.contains("53 surrogate inputs, for search --features"), "{text}");
    assert!(text.contains("log_flops_decode"), "{text}");
}

#[test]
fn sample_prints_json_lines() {
    let run = || alphanas(&["space", "sample", "--n", "5", "--seed", "9", "--space", "lts-gpt2"]);
    let out = run();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5);
    for line in &lines {
        let arch = alphanas::Architecture::from_json(line).expect("each line is an architecture");
        assert_eq!(arch.vocab_size, 50257);
    }
    assert_eq!(String::from_utf8(run().stdout).unwrap(), text, "the same seed prints the same models");
}

#[test]
fn unknown_space_fails() {
    let out = alphanas(&["space", "--space", "no-such-space"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: unknown search space `no-such-space`"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}
