//! `alphanas export` end to end: configs for Llama and GPT-2 shapes, and rejections that
//! name the field.

use std::path::Path;
use std::process::Command;

fn alphanas() -> Command {
    Command::new(env!("CARGO_BIN_EXE_alphanas"))
}

fn write_arch(dir: &Path, name: &str, json: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, json).unwrap();
    path
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn export_llama_gqa() {
    let dir = tempfile::tempdir().unwrap();
    let arch = write_arch(
        dir.path(),
        "llama.json",
        r#"{"d_model": 512, "n_layers": 6, "n_heads": 8, "n_kv_heads": 2, "head_dim": 80, "d_ff": 1376, "max_seq_len": 4096, "tie_embeddings": true}"#,
    );
    let out = dir.path().join("hf");
    let status = alphanas().args(["export", "--format", "hf-llama", "--arch"]).arg(&arch).arg("--out").arg(&out).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));

    let config = read_json(&out.join("config.json"));
    assert_eq!(config["model_type"], "llama");
    assert_eq!(config["hidden_size"], 512);
    assert_eq!(config["num_hidden_layers"], 6);
    assert_eq!(config["num_attention_heads"], 8);
    assert_eq!(config["num_key_value_heads"], 2);
    assert_eq!(config["head_dim"], 80);
    assert_eq!(config["intermediate_size"], 1376);
    assert_eq!(config["max_position_embeddings"], 4096);
    assert_eq!(config["vocab_size"], 32000);
    assert_eq!(config["tie_word_embeddings"], true);
    assert_eq!(config["hidden_act"], "silu");
}

#[test]
fn export_gpt2_small() {
    let dir = tempfile::tempdir().unwrap();
    let arch = write_arch(
        dir.path(),
        "gpt2.json",
        r#"{"vocab_size": 50257, "max_seq_len": 1024, "d_model": 768, "n_layers": 12, "n_heads": 12, "d_ff": 3072,
            "ffn": "gelu", "norm": "layernorm", "pos": "learned", "bias": true, "tie_embeddings": true}"#,
    );
    let out = dir.path().join("gpt2");
    let result = alphanas().args(["export", "--format", "hf-gpt2", "--arch"]).arg(&arch).arg("--out").arg(&out).output().unwrap();
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));

    let config = read_json(&out.join("config.json"));
    assert_eq!(config["model_type"], "gpt2");
    assert_eq!(config["n_embd"], 768);
    assert_eq!(config["n_layer"], 12);
    assert_eq!(config["n_head"], 12);
    assert_eq!(config["n_inner"], 3072);
    assert_eq!(config["n_positions"], 1024);
    assert_eq!(config["vocab_size"], 50257);
    assert_eq!(config["activation_function"], "gelu_new");
}

#[test]
fn export_rejections_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("relu.json", r#"{"d_model": 256, "n_layers": 2, "n_heads": 4, "d_ff": 512, "ffn": "relu"}"#, "hf-llama", "ffn \"relu\""),
        ("rms.json", r#"{"d_model": 256, "n_layers": 2, "n_heads": 4, "d_ff": 512, "ffn": "gelu", "pos": "learned", "bias": true, "tie_embeddings": true}"#, "hf-gpt2", "norm \"rmsnorm\""),
        ("untied.json", r#"{"d_model": 256, "n_layers": 2, "n_heads": 4, "d_ff": 512, "ffn": "gelu", "norm": "layernorm", "pos": "learned", "bias": true}"#, "hf-gpt2", "tie_embeddings"),
        (
            "per_layer.json",
            r#"{"d_model": 256, "n_layers": 2, "n_heads": 4, "d_ff": 512, "layers": [{"n_heads": 4}, {"n_heads": 2}]}"#,
            "hf-llama",
            "layers[1].n_heads (2)",
        ),
    ];
    for (name, json, format, field) in cases {
        let arch = write_arch(dir.path(), name, json);
        let out = dir.path().join(format!("out-{name}"));
        let result = alphanas().args(["export", "--format", format, "--arch"]).arg(&arch).arg("--out").arg(&out).output().unwrap();
        assert!(!result.status.success(), "{name} was exported");
        let stderr = String::from_utf8_lossy(&result.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{name}: {stderr}");
        assert!(lines[0].starts_with("error:"), "{name}: {stderr}");
        assert!(lines[0].contains(field), "{name}: expected `{field}` in {stderr}");
        assert!(!out.join("config.json").exists(), "{name}: a config was written");
    }
}
