//! `alphanas arch metrics` as a user runs it: exact published counts, JSON keys, and one-line
//! errors with a non-zero exit for malformed files.

use std::io::Write;
use std::process::Command;

fn alphanas(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_alphanas"))
        .args(args)
        .env("ALPHANAS_BACKEND", "cpu")
        .env_remove("ALPHANAS_NO_PIN")
        .output()
        .expect("the alphanas binary runs")
}

fn write_temp(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

const GPT2_SMALL: &str = r#"{"vocab_size": 50257, "max_seq_len": 1024, "d_model": 768, "n_layers": 12,
  "n_heads": 12, "d_ff": 3072, "ffn": "gelu", "norm": "layernorm", "pos": "learned",
  "bias": true, "tie_embeddings": true}"#;

#[test]
fn metrics_json_gpt2_small() {
    let file = write_temp(GPT2_SMALL);
    let out = alphanas(&["arch", "metrics", file.path().to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));

    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["params"], 124_439_808u64);
    assert_eq!(value["weight_bytes"]["f32"], 4 * 124_439_808u64);
    assert_eq!(value["weight_bytes"]["f16"], 2 * 124_439_808u64);
    // 2 × n_layers × n_kv_heads × head_dim × bytes per element.
    assert_eq!(value["kv_cache_bytes_per_token"]["f16"], 2 * 12 * 12 * 64 * 2u64);
    assert_eq!(value["kv_cache_bytes_per_token"]["int8"], 2 * 12 * 12 * 64u64);
    assert!(value["flops_per_token"]["prefill"].as_u64().unwrap() > 2 * 85_000_000);
    assert!(value["peak_memory_bytes"]["f32"]["decode"].as_u64().unwrap() > 4 * 124_439_808u64);
}

#[test]
fn metrics_table_output() {
    let file = write_temp(GPT2_SMALL);
    let out = alphanas(&["arch", "metrics", file.path().to_str().unwrap(), "--seq", "512"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("124,439,808"), "{text}");
    assert!(text.contains("S = 512"), "{text}");
}

#[test]
fn malformed_files_give_one_error_line() {
    let cases = [
        ("", "empty"),
        ("   \n", "empty"),
        ("{\"d_model\": 512,", "EOF"),
        ("{\"d_modle\": 512, \"n_layers\": 2, \"n_heads\": 8, \"d_ff\": 8}", "unknown field `d_modle`"),
        ("{\"d_model\": 512, \"n_layers\": \"two\", \"n_heads\": 8, \"d_ff\": 8}", "n_layers"),
        ("{\"d_model\": 500, \"n_layers\": 2, \"n_heads\": 12, \"d_ff\": 8}", "n_heads (12) must divide d_model (500)"),
        ("{\"d_model\": 512, \"n_layers\": 0, \"n_heads\": 8, \"d_ff\": 8}", "n_layers (0)"),
        ("{\"d_model\": 512, \"n_layers\": 2, \"n_heads\": 8, \"d_ff\": -1}", "d_ff (-1)"),
        ("{\"d_model\": 512, \"n_layers\": 2, \"n_heads\": 8, \"d_ff\": 8, \"ffn\": \"SwiGLU\"}", "unknown variant `SwiGLU`"),
        ("not json", "expected a JSON object"),
    ];
    for (text, needle) in cases {
        let file = write_temp(text);
        let out = alphanas(&["arch", "metrics", file.path().to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} was accepted");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{text:?} printed {stderr:?}");
        assert!(lines[0].starts_with("error: "), "{stderr}");
        assert!(lines[0].contains(needle), "{text:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn missing_file_is_an_error() {
    let out = alphanas(&["arch", "metrics", "/nonexistent/arch.json"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: cannot read architecture file /nonexistent/arch.json"), "{stderr}");
}

/// Reads the thread count and the pinned count from the pool line of a `-vv` log
/// ("2 CPU worker threads, 2 of them pinned ..." or "3 CPU worker threads, not pinned because ...").
fn worker_counts(args: &[&str]) -> (usize, usize) {
    let out = alphanas(args);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log.lines().find(|l| l.contains("CPU worker thread")).unwrap_or_else(|| panic!("no pool line in {log}"));
    let numbers: Vec<usize> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    let pinned = if line.contains("not pinned because") { 0 } else { numbers[1] };
    (numbers[0], pinned)
}

/// Counts the CPUs this process may run on.
fn allowed_cpus() -> usize {
    let output = std::process::Command::new("nproc").env_remove("OMP_NUM_THREADS").output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().parse().unwrap()
}

#[test]
fn cpu_workers_pinned_by_default() {
    let file = write_temp(GPT2_SMALL);
    let path = file.path().to_str().unwrap();
    let (threads, pinned) = worker_counts(&["-vv", "--threads", "2", "arch", "metrics", path]);
    assert_eq!(threads, 2);
    if cfg!(target_os = "linux") && allowed_cpus() >= 2 {
        assert_eq!(pinned, 2, "each worker gets a CPU");
    }

    let (threads, pinned) = worker_counts(&["-vv", "--threads", "2", "--no-pin", "arch", "metrics", path]);
    assert_eq!(threads, 2);
    assert_eq!(pinned, 0, "--no-pin leaves the workers unpinned");
}

#[test]
fn more_threads_than_cpus_stay_unpinned() {
    let file = write_temp(GPT2_SMALL);
    let path = file.path().to_str().unwrap();
    let threads = allowed_cpus() + 1;
    let out = alphanas(&["-vv", "--threads", &threads.to_string(), "arch", "metrics", path]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains(&format!("{threads} CPU worker threads, not pinned because")), "{log}");
}

#[test]
fn thread_option_errors() {
    let file = write_temp(GPT2_SMALL);
    let path = file.path().to_str().unwrap();
    let out = alphanas(&["--threads", "0", "arch", "metrics", path]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--threads (0) must be at least 1"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_alphanas"))
        .args(["arch", "metrics", path])
        .env("ALPHANAS_BACKEND", "cpu")
        .env("ALPHANAS_NO_PIN", "maybe")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("maybe"), "{stderr}");
}
