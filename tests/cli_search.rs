//! `alphanas search` end to end on tiny budgets: outputs, front export, kill -9 and
//! `--resume`, a corrupted journal, and Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn alphanas() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_alphanas"));
    command.env("ALPHANAS_BACKEND", "cpu").env_remove("RUST_LOG");
    command
}

/// Writes an executable script `name` with `body` into `dir` and returns its path.
fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Writes an evaluator script that sleeps `delay` seconds, then reports `cost` = d_model × n_layers
/// and `size` = d_model from the architecture on stdin.
fn slow_eval_script(dir: &Path, delay: &str) -> PathBuf {
    let body = format!(
        r#"#!/bin/sh
arch=$(cat)
sleep {delay}
d=$(echo "$arch" | sed 's/.*"d_model":\([0-9]*\).*/\1/')
l=$(echo "$arch" | sed 's/.*"n_layers":\([0-9]*\).*/\1/')
echo "{{\"cost\": $((d * l)), \"size\": $d}}"
"#
    );
    write_script(dir, "eval.sh", &body)
}

fn command_search_args(script: &Path, evals: usize) -> Vec<String> {
    vec![
        "search".into(),
        "--evaluator".into(),
        "command".into(),
        "--eval-cmd".into(),
        script.display().to_string(),
        "--objective".into(),
        "min:cost".into(),
        "--objective".into(),
        "max:size".into(),
        "--evals".into(),
        evals.to_string(),
        "--seed".into(),
        "3".into(),
        "-q".into(),
    ]
}

fn history_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("history.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Waits until `dir/history.jsonl` has at least `n` complete lines, or panics after `limit`.
fn wait_for_lines(child: &mut Child, dir: &Path, n: usize, limit: Duration) {
    let start = Instant::now();
    while history_lines(dir).len() < n {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("search exited early with {status}");
        }
        assert!(start.elapsed() < limit, "no {n} results within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A space without per-layer decisions, so that every front architecture can be exported.
const UNIFORM_SPACE: &str = r#"
name = "uniform"
[fixed]
vocab_size = 1000
max_seq_len = 256
ffn = "swiglu"
norm = "rmsnorm"
pos = "rope"
bias = false
tie_embeddings = false
[decisions]
n_layers = [2, 4, 6]
d_model = [64, 128, 192]
n_heads = [2, 4]
n_kv_heads = [1, 2]
mlp_ratio = [2, 3]
"#;

#[test]
fn search_proxy_writes_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let space = dir.path().join("uniform.toml");
    std::fs::write(&space, UNIFORM_SPACE).unwrap();
    let out = dir.path().join("run");
    let result = alphanas()
        .args(["search", "--evaluator", "proxy", "--evals", "12", "--seed", "1", "--export-front", "--space"])
        .arg(&space)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "stderr: {}", String::from_utf8_lossy(&result.stderr));
    assert!(stdout.contains("Pareto front"), "{stdout}");

    assert_eq!(history_lines(&out).len(), 12);
    for file in ["front.csv", "front.json", "summary.json", "pareto.svg"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let svg = std::fs::read_to_string(out.join("pareto.svg")).unwrap();
    assert!(svg.contains("<svg"));
    assert!(svg.contains("flops_per_token"));
    // Folders are named by evaluation number, as in the front's `eval` column.
    let front: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("front.json")).unwrap()).unwrap();
    let eval = &front.as_array().expect("front.json is a list")[0]["eval"];
    let config = out.join(format!("front/{eval}/config.json"));
    assert!(config.is_file(), "no exported config at {}", config.display());
    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    assert!(value["model_type"] == "llama" || value["model_type"] == "gpt2");
}

#[test]
fn search_json_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let result = alphanas()
        .args(["search", "--evaluator", "proxy", "--quality", "scaling-law", "--train-tokens", "2e10", "--evals", "6", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(result.status.success(), "stderr: {}", String::from_utf8_lossy(&result.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(summary["evaluations"], 6);
    assert!(summary["front"].as_array().unwrap().iter().all(|p| p["objectives"]["loss"].is_number()));
}

#[test]
fn search_kill9_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    let script = slow_eval_script(dir.path(), "0.2");
    let out = dir.path().join("run");
    let mut args = command_search_args(&script, 16);
    args.extend(["--out".into(), out.display().to_string()]);

    // SIGKILL leaves the candidate files of the trials in flight, so they go to the test's folder.
    let mut child = alphanas().env("TMPDIR", dir.path()).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for_lines(&mut child, &out, 5, Duration::from_secs(120));
    // SAFETY: SIGKILL to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let before = history_lines(&out);
    assert!(before.len() < 16, "the run finished before it was killed");

    let mut resume_args = command_search_args(&script, 16);
    resume_args.extend(["--resume".into(), out.display().to_string()]);
    let result = alphanas().args(&resume_args).output().unwrap();
    assert!(result.status.success(), "resume failed: {}", String::from_utf8_lossy(&result.stderr));

    let after = history_lines(&out);
    assert_eq!(after.len(), 16);
    // Complete lines written before the kill are kept as they were.
    let kept = before.iter().filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()).count();
    assert_eq!(&after[..kept], &before[..kept]);
    let mut archs = std::collections::HashSet::new();
    for (i, line) in after.iter().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["eval"], i, "eval numbers must run 0..16 in order");
        assert!(archs.insert(value["arch"].to_string()), "candidate at eval {i} was evaluated twice");
    }
}

#[test]
fn search_corrupted_history_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let first = alphanas().args(["search", "--evaluator", "proxy", "--evals", "5", "-q", "--out"]).arg(&out).output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));

    let mut lines = history_lines(&out);
    lines[2] = "{\"eval\": 2, \"source\": garbage".into();
    std::fs::write(out.join("history.jsonl"), lines.join("\n") + "\n").unwrap();

    let resumed = alphanas().args(["search", "--evaluator", "proxy", "--evals", "8", "-q", "--resume"]).arg(&out).output().unwrap();
    assert!(!resumed.status.success());
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(stderr.starts_with("error:"), "{stderr}");
    assert!(stderr.contains("line 3"), "the error must name the line: {stderr}");
}

#[test]
fn search_sigint_writes_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let script = slow_eval_script(dir.path(), "0.3");
    let out = dir.path().join("run");
    let mut args = command_search_args(&script, 200);
    args.extend(["--out".into(), out.display().to_string()]);

    let mut child = alphanas().args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_lines(&mut child, &out, 3, Duration::from_secs(120));
    // SAFETY: SIGINT to our own child, as Ctrl-C sends it.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let start = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(130), "{}", String::from_utf8_lossy(&output.stderr));

    let lines = history_lines(&out);
    assert!(lines.len() < 200);
    for file in ["front.csv", "front.json", "summary.json", "pareto.svg"] {
        assert!(out.join(file).is_file(), "{file} missing after Ctrl-C");
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--resume"), "{stderr}");
}

#[test]
fn search_option_errors() {
    let cases: [(&[&str], &str); 4] = [
        (&["search", "--evaluator", "command"], "--eval-cmd"),
        (&["search", "--quality", "scaling-law"], "--train-tokens"),
        (&["search", "--evaluator", "magic"], "magic"),
        (&["search", "--evaluator", "command", "--eval-cmd", "true"], "--objective"),
    ];
    for (args, expected) in cases {
        let result = alphanas().args(args).output().unwrap();
        assert!(!result.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// Options rejected once the search starts (a zero budget, a metric the evaluator lacks) leave
/// no output folder behind.
#[test]
fn search_errors_leave_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [&[&str]; 3] = [&["--evals", "0"], &["--objective", "min:foo"], &["--workers", "0"]];
    for (i, options) in cases.into_iter().enumerate() {
        let out = dir.path().join(format!("run{i}"));
        let result = alphanas().args(["search", "--evaluator", "proxy", "-q"]).args(options).arg("--out").arg(&out).output().unwrap();
        assert!(!result.status.success(), "{options:?} succeeded");
        assert!(!out.exists(), "{options:?} left {}", out.display());
    }
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let result = alphanas().args(["search", "--evaluator", "proxy", "-q", "--out"]).arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("is a file, not a folder"), "{stderr}");
}

#[test]
fn search_evaluator_ignoring_stdin() {
    // A program that never reads its stdin exits while AlphaNAS could still be writing to it.
    // With a pipe, the write would raise SIGPIPE and kill the whole search.
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "noread.sh", "#!/bin/sh\necho '{\"cost\": 1, \"size\": 2}'\n");
    let out = dir.path().join("run");
    let mut args = command_search_args(&script, 6);
    args.extend(["--out".into(), out.display().to_string()]);
    let output = alphanas().args(&args).output().unwrap();
    assert!(output.status.success(), "{:?}: {}", output.status, String::from_utf8_lossy(&output.stderr));
    let lines = history_lines(&out);
    assert_eq!(lines.len(), 6);
    assert!(lines.iter().all(|l| l.contains("\"status\":\"ok\"")), "{lines:?}");
}

#[test]
fn search_max_params_skips_large_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let limit = 20_000_000.0;
    let output = alphanas()
        .args(["search", "--evaluator", "proxy", "--evals", "16", "--max-params", "20000000", "--seed", "5", "-q", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines = history_lines(&out);
    assert_eq!(lines.len(), 16);
    for line in &lines {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let params = record["metrics"]["params"].as_f64().unwrap();
        assert!(params <= limit, "evaluated a candidate over --max-params: {line}");
    }
}

#[test]
fn search_all_failed_exits_with_error() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "fail.sh", "#!/bin/sh\necho 'out of memory' >&2\nexit 3\n");
    let out = dir.path().join("run");
    let mut args = command_search_args(&script, 3);
    args.extend(["--out".into(), out.display().to_string()]);
    let output = alphanas().args(&args).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("none of the 3 evaluations succeeded"), "{stderr}");
    assert!(stderr.contains("out of memory"), "the first error is shown: {stderr}");
    // The failures are journaled and the outputs written.
    assert_eq!(history_lines(&out).len(), 3);
    assert!(out.join("summary.json").is_file());
}

/// Writes an evaluator that marks its start in `DIR/started-ID`, sleeps 4 s, then marks its end
/// in `DIR/done-ID` and prints metrics; returns its path.
fn marking_eval_script(dir: &Path) -> PathBuf {
    let marks = dir.display();
    let body = format!(
        "#!/bin/sh\ntouch {marks}/started-$ALPHANAS_TRIAL_ID\nsleep 4\ntouch {marks}/done-$ALPHANAS_TRIAL_ID\necho '{{\"cost\": 1, \"size\": 2}}'\n"
    );
    write_script(dir, "mark.sh", &body)
}

/// Waits until some trial has written its start mark.
fn wait_for_start(dir: &Path, limit: Duration) {
    let start = Instant::now();
    while !dir.join("started-0").exists() {
        assert!(start.elapsed() < limit, "no trial started within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn done_marks(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("done-")).count()
}

#[test]
fn search_second_interrupt_kills_trials() {
    let dir = tempfile::tempdir().unwrap();
    let script = marking_eval_script(dir.path());
    let out = dir.path().join("run");
    let mut args = command_search_args(&script, 20);
    args.extend(["--out".into(), out.display().to_string(), "--workers".into(), "2".into()]);
    let files = dir.path().join("candidates");
    std::fs::create_dir(&files).unwrap();
    let child = alphanas().env("TMPDIR", &files).args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_start(dir.path(), Duration::from_secs(60));
    for _ in 0..2 {
        // SAFETY: SIGINT to our own child, as Ctrl-C sends it.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("interrupted twice"), "{stderr}");
    // The trials in flight were killed, so none of them gets to write its end mark.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(done_marks(dir.path()), 0);
    // Their candidate files were removed before the exit.
    let left: Vec<_> = std::fs::read_dir(&files).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "candidate files left behind: {left:?}");
}

#[test]
fn search_sigkill_takes_trials_down() {
    let dir = tempfile::tempdir().unwrap();
    let script = marking_eval_script(dir.path());
    let out = dir.path().join("run");
    let mut args = command_search_args(&script, 20);
    args.extend(["--out".into(), out.display().to_string()]);
    let mut child = alphanas().env("TMPDIR", dir.path()).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for_start(dir.path(), Duration::from_secs(60));
    child.kill().unwrap();
    child.wait().unwrap();
    // The trial's shell got SIGKILL with its parent, so it never reaches its end mark.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(done_marks(dir.path()), 0);
}

#[test]
fn search_sigterm_writes_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let script = slow_eval_script(dir.path(), "0.3");
    let out = dir.path().join("run");
    let mut args = command_search_args(&script, 200);
    args.extend(["--out".into(), out.display().to_string()]);
    let mut child = alphanas().args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_lines(&mut child, &out, 3, Duration::from_secs(120));
    // SAFETY: SIGTERM to our own child, as `timeout` and schedulers send it.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", String::from_utf8_lossy(&output.stderr));
    for file in ["front.csv", "front.json", "summary.json", "pareto.svg"] {
        assert!(out.join(file).is_file(), "{file} missing after SIGTERM");
    }
}

#[test]
fn search_table_option_errors() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    std::fs::write(&csv, "a,b,loss\n1,2,0.5\n2,3,0.4\n3,1,0.7\n").unwrap();
    let table = csv.display().to_string();
    let cases: [(&[&str], &str); 2] = [
        (&["search", "--space-table", &table, "--decisions", "a,b", "--evaluator", "proxy", "--objective", "min:loss"], "--evaluator table or command"),
        (&["search", "--space", "hwgpt-s", "--space-table", &table, "--decisions", "a,b", "--objective", "min:loss"], "--space"),
    ];
    for (args, expected) in cases {
        let result = alphanas().args(args).arg("--out").arg(dir.path().join("run")).output().unwrap();
        assert!(!result.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn search_draws_only_candidates_within_tight_limit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // Few architectures of the llama space have at most 9M parameters (the smallest has 8.5M).
    let output = alphanas()
        .args(["search", "--evaluator", "proxy", "--evals", "16", "--max-params", "9e6", "--seed", "3", "-q", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for line in history_lines(&out) {
        assert!(line.contains(r#""status":"ok""#), "a draw broke the limit: {line}");
    }
}

#[test]
fn search_explains_impossible_known_limits() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 2] = [
        (
            &["--quality", "scaling-law", "--train-tokens", "2e10", "--constraint", "loss<=1"],
            "all 5 candidates broke a constraint known before evaluation, so none was evaluated",
        ),
        (&["--objective", "min:loss"], "(`loss` needs --quality scaling-law --train-tokens D)"),
    ];
    for (i, (options, expected)) in cases.into_iter().enumerate() {
        let output = alphanas()
            .args(["search", "--evaluator", "proxy", "--evals", "5", "-q"])
            .args(options)
            .arg("--out")
            .arg(dir.path().join(format!("run{i}")))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{options:?} succeeded");
        assert!(stderr.contains(expected), "{options:?}: {stderr}");
    }
}

#[test]
fn search_reads_selected_space_features() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let output = alphanas()
        .args(["search", "--evaluator", "proxy", "--evals", "14", "--seed", "4", "--surrogate", "ridge"])
        .args(["--features", "log_params,n_layers,log_flops_decode", "-q", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["surrogate"], "ridge-ensemble");
    assert_eq!(summary["surrogate_features"], serde_json::json!(["log_params", "n_layers", "log_flops_decode"]));
    assert_eq!(history_lines(&out).len(), 14);
}

#[test]
fn search_rejects_unknown_space_feature() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let cases: [(&str, &str); 2] = [
        ("log_params,nope", "`nope` is not a feature of space llama; choose from: choice.n_layers"),
        ("n_layers,n_layers", "--features names `n_layers` twice"),
    ];
    for (features, expected) in cases {
        let output = alphanas()
            .args(["search", "--evaluator", "proxy", "--evals", "14", "--features", features, "--out"])
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{features} was accepted");
        assert!(stderr.contains(expected), "{features}: {stderr}");
        // Rejected before the output folder is made.
        assert!(!out.exists(), "{features}: {} was created", out.display());
    }
}

#[test]
fn search_summary_counts_results_over_constraint() {
    let dir = tempfile::tempdir().unwrap();
    let script = slow_eval_script(dir.path(), "0");
    let out = dir.path().join("run");
    // `cost` comes from the command, so the search cannot know it before the evaluation.
    let limit = 5_000.0;
    let output = alphanas()
        .args(command_search_args(&script, 8))
        .args(["--constraint", "cost<=5000", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let over = history_lines(&out)
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["status"] == "ok" && r["metrics"]["cost"].as_f64().unwrap() > limit)
        .count();
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert!(over > 0, "the test needs results over the limit");
    assert_eq!(summary["ok_over_constraint"].as_u64(), Some(over as u64));
    assert_eq!(summary["counts"]["ok"].as_u64(), Some(8));
    assert_eq!(summary["exact_targets"], serde_json::json!([]));
}

#[test]
fn search_uses_exact_architecture_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let limit = 3e8;
    let output = alphanas()
        .args(["search", "--evaluator", "proxy", "--evals", "14", "--constraint", "flops_per_token<=3e8", "--seed", "2", "-q", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["exact_targets"], serde_json::json!(["flops_per_token", "decoder_params"]));
    assert_eq!(summary["ok_over_constraint"].as_u64(), Some(0));

    let mut predicted = 0;
    for line in history_lines(&out) {
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        let metrics = &record["metrics"];
        let flops = metrics["flops_per_token"].as_f64().unwrap();
        match record["status"].as_str().unwrap() {
            "ok" => assert!(flops <= limit, "evaluated over the limit: {line}"),
            "infeasible" => {
                assert!(flops > limit, "{line}");
                assert_eq!(record["elapsed_s"], 0.0, "not evaluated: {line}");
            }
            other => panic!("unexpected status {other}: {line}"),
        }

        // What the tree scored for a proposal is the exact value, not the surrogate's guess.
        if let Some(p) = record["predicted"].as_object() {
            if record["status"] == "ok" {
                predicted += 1;
                assert_eq!(p["decoder_params"], metrics["decoder_params"], "{line}");
                assert_eq!(p["flops_per_token"], metrics["flops_per_token"], "{line}");
            }
        }
    }
    assert!(predicted > 0, "no surrogate-guided proposal was evaluated");

    // Every target is exact, so no round has a prediction error to report.
    assert_eq!(summary["prediction_error"], serde_json::json!([]));
}

/// Reads the `runs` list of a search folder's `command.json`.
fn stored_runs(out: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("command.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["runs"].as_array().unwrap().clone()
}

#[test]
fn resume_rejects_changed_evaluator_settings() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let first = alphanas()
        .args(["search", "--evaluator", "proxy", "--quality", "scaling-law", "--train-tokens", "2e10", "--evals", "4", "-q", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));

    // Both would change the metrics of new results, so old and new could not share a front.
    let cases: [(&[&str], &str); 2] = [
        (&["--train-tokens", "1e12"], "train_tokens 2e10, not train_tokens 1e12"),
        (&["--measure-seq", "256"], "analytic_seq 64, not analytic_seq 256"),
    ];
    for (options, expected) in cases {
        let resumed = alphanas().args(["search", "--evals", "6", "-q"]).args(options).arg("--resume").arg(&out).output().unwrap();
        let stderr = String::from_utf8_lossy(&resumed.stderr);
        assert!(!resumed.status.success(), "{options:?} was accepted");
        assert!(stderr.contains(expected), "{options:?}: {stderr}");
    }
    assert_eq!(history_lines(&out).len(), 4);
}

#[test]
fn resume_keeps_options_from_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let first = alphanas()
        .env("ALPHANAS_THREADS", "1")
        .env("ALPHANAS_NO_PIN", "1")
        .env("ALPHANAS_BACKEND", "cpu")
        .args(["search", "--evaluator", "proxy", "--seed", "5", "--evals", "4", "-q", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let runs = stored_runs(&out);
    let args: Vec<&str> = runs[0]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let stored = args.join(" ");
    assert!(stored.ends_with("--backend cpu --threads 1 --no-pin"), "{stored}");

    // The resume runs without those variables and still gets one unpinned thread.
    let resumed = alphanas()
        .env_remove("ALPHANAS_THREADS")
        .env_remove("ALPHANAS_NO_PIN")
        .env_remove("ALPHANAS_BACKEND")
        .args(["search", "--evals", "6", "-vv", "--resume"])
        .arg(&out)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{log}");
    assert!(log.contains("1 CPU worker thread, 0 of them pinned"), "{log}");
    assert_eq!(history_lines(&out).len(), 6);
}

#[test]
fn resume_alone_reuses_first_options() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let first = alphanas()
        .args(["search", "--evaluator", "proxy", "--objective", "min:flops_per_token", "--objective", "max:decoder_params"])
        .args(["--seed", "5", "--evals", "4", "--threads", "1", "--no-pin", "-q", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(stored_runs(&out).len(), 1);

    // Only the budget is given again: the evaluator, objectives, seed and thread options come
    // from command.json.
    let resumed = alphanas().args(["search", "--evals", "7", "-vv", "--resume"]).arg(&out).output().unwrap();
    let log = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{log}");
    assert!(log.contains("1 CPU worker thread, 0 of them pinned"), "{log}");
    assert_eq!(history_lines(&out).len(), 7);
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("settings.json")).unwrap()).unwrap();
    assert_eq!(settings["seed"], 5);
    assert_eq!(settings["evaluator"], "proxy");
    assert_eq!(stored_runs(&out).len(), 2);

    // A later bare resume keeps the raised budget, so nothing is left to evaluate.
    let again = alphanas().args(["search", "-q", "--resume"]).arg(&out).output().unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(history_lines(&out).len(), 7);

    // An incompatible option is rejected, and command.json does not record it.
    let runs = stored_runs(&out).len();
    let wrong = alphanas().args(["search", "--space", "lts-gpt2", "-q", "--resume"]).arg(&out).output().unwrap();
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("lts-gpt2"), "{stderr}");
    assert!(stderr.contains("alone reuses them"), "{stderr}");
    assert_eq!(stored_runs(&out).len(), runs);
}

/// Writes `rows.csv` into `dir`: decisions `a` and `b` in 0..4, a known column `size`, and
/// metrics `x` and `y`.
fn write_rows(dir: &Path) {
    let mut table = String::from("a,b,size,x,y\n");
    for a in 0..4 {
        for b in 0..4 {
            table.push_str(&format!("{a},{b},{},{},{}\n", (a + 1) * 100 * (b + 1), a * 3 + b, 10 - a - b));
        }
    }
    std::fs::write(dir.join("rows.csv"), table).unwrap();
}

/// Runs `alphanas search` in `dir` on `rows.csv` with two objectives and `extra` options.
fn table_search(dir: &Path, extra: &[&str]) -> std::process::Output {
    alphanas()
        .current_dir(dir)
        .args(["search", "--space-table", "rows.csv", "--decisions", "a,b", "--objective", "min:x", "--objective", "min:y"])
        .args(["-q"])
        .args(extra)
        .output()
        .unwrap()
}

/// Runs `alphanas search -q --resume OUT` in `cwd` with `extra` options.
fn resume_in(cwd: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    alphanas().current_dir(cwd).args(["search", "-q", "--resume", out]).args(extra).output().unwrap()
}

#[test]
fn table_search_with_features() {
    let dir = tempfile::tempdir().unwrap();
    write_rows(dir.path());
    let search = |features: &str, out: &str| {
        table_search(dir.path(), &["--features", features, "--surrogate", "ridge", "--evals", "14", "--out", out])
    };
    let ok = search("size,a", "run");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(history_lines(&dir.path().join("run")).len(), 14);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["surrogate_features"], serde_json::json!(["log(size)", "a"]));

    let leak = search("x", "leak");
    assert!(!leak.status.success());
    let stderr = String::from_utf8_lossy(&leak.stderr);
    assert!(stderr.contains("--features x"), "{stderr}");
    assert!(stderr.contains("is an objective"), "{stderr}");

    let missing = search("depth", "missing");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("column not found"));
}

#[test]
fn resume_reads_relative_paths_from_first_directory() {
    let dir = tempfile::tempdir().unwrap();
    write_rows(dir.path());
    let first = table_search(dir.path(), &["--evals", "5", "--out", "run"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));

    let out = dir.path().join("run");
    let elsewhere = tempfile::tempdir().unwrap();
    let resumed = alphanas()
        .current_dir(elsewhere.path())
        .args(["search", "--evals", "9", "-q", "--resume"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(history_lines(&out).len(), 9);
}

#[test]
fn resume_rejects_invalid_run_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    write_rows(dir.path());
    let first = table_search(dir.path(), &["--evals", "4", "--out", "run"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let out = dir.path().join("run");

    // Options that the search rejects do not enter command.json, so a bare resume still works.
    for bad in [&["--evals", "0"][..], &["--workers", "0"], &["--decisions", "b,a"]] {
        let rejected = resume_in(dir.path(), "run", bad);
        assert!(!rejected.status.success(), "{bad:?} was accepted");
        assert_eq!(stored_runs(&out).len(), 1, "{bad:?} was stored");
    }
    let reordered = resume_in(dir.path(), "run", &["--decisions", "b,a"]);
    let stderr = String::from_utf8_lossy(&reordered.stderr);
    assert!(stderr.contains("--decisions"), "{stderr}");

    // Table options given with --resume need no other table option.
    let features = resume_in(dir.path(), "run", &["--evals", "8", "--features", "size", "--surrogate", "ridge"]);
    assert!(features.status.success(), "{}", String::from_utf8_lossy(&features.stderr));
    assert_eq!(history_lines(&out).len(), 8);
}

#[test]
fn resume_anchors_later_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    write_rows(dir.path());
    let first = table_search(dir.path(), &["--evals", "3", "--out", "run"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));

    // The second run names the table again from a subfolder, by a different relative path.
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let second = resume_in(&sub, "../run", &["--evals", "5", "--space-table", "../rows.csv"]);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    let third = resume_in(dir.path(), "run", &["--evals", "7"]);
    assert!(third.status.success(), "{}", String::from_utf8_lossy(&third.stderr));
    assert_eq!(history_lines(&dir.path().join("run")).len(), 7);
}

#[test]
fn resume_without_command_file() {
    let dir = tempfile::tempdir().unwrap();
    write_rows(dir.path());
    let first = table_search(dir.path(), &["--evals", "3", "--out", "run"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let out = dir.path().join("run");
    std::fs::remove_file(out.join("command.json")).unwrap();

    let bare = alphanas().current_dir(dir.path()).args(["search", "--resume", "run", "--evals", "5"]).output().unwrap();
    assert!(!bare.status.success());
    let stderr = String::from_utf8_lossy(&bare.stderr);
    assert!(stderr.contains("no command.json"), "the warning explains the error: {stderr}");

    // A resume with the full options works and writes command.json for the next one.
    let full = table_search(dir.path(), &["--evals", "5", "--resume", "run"]);
    assert!(full.status.success(), "{}", String::from_utf8_lossy(&full.stderr));
    assert_eq!(stored_runs(&out).len(), 1);
    let bare = resume_in(dir.path(), "run", &["--evals", "7"]);
    assert!(bare.status.success(), "{}", String::from_utf8_lossy(&bare.stderr));
    assert_eq!(history_lines(&out).len(), 7);
}

#[test]
fn table_nan_metric_fails_trial() {
    let dir = tempfile::tempdir().unwrap();
    // Row a=1 has no x, and every row has an unused column that is NaN in some rows.
    let mut table = String::from("a,b,unused,x,y\n");
    for a in 0..3 {
        for b in 0..3 {
            let x = if a == 1 { "NaN".to_string() } else { (a * 3 + b).to_string() };
            let unused = if b == 0 { "NaN" } else { "1" };
            table.push_str(&format!("{a},{b},{unused},{x},{}\n", 10 - a - b));
        }
    }
    std::fs::write(dir.path().join("rows.csv"), table).unwrap();
    let run = table_search(dir.path(), &["--evals", "9", "--strategy", "random", "--out", "run"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let out = dir.path().join("run");
    let lines = history_lines(&out);
    assert!(lines.iter().all(|l| !l.contains("null")), "{lines:?}");
    let failed = lines.iter().filter(|l| l.contains("\"status\":\"failed\"")).count();
    assert_eq!(failed, 3, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("no finite value of x")), "{lines:?}");

    let resumed = resume_in(dir.path(), "run", &[]);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
}

#[test]
fn second_search_in_same_folder_refused() {
    let dir = tempfile::tempdir().unwrap();
    let script = slow_eval_script(dir.path(), "0.3");
    let out = dir.path().join("run");
    let mut args = command_search_args(&script, 50);
    args.extend(["--out".into(), out.display().to_string()]);
    let mut child = alphanas().args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for_lines(&mut child, &out, 1, Duration::from_secs(120));

    let runs = stored_runs(&out).len();
    let second = alphanas().args(["search", "-q", "--resume"]).arg(&out).output().unwrap();
    let after = stored_runs(&out).len();
    let _ = child.kill();
    let _ = child.wait();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another search is running"), "{stderr}");
    assert_eq!(after, runs, "the refused resume was stored");
}

#[test]
fn evaluator_processes_are_not_pinned() {
    // The CLI pins its CPU worker threads, and a child process inherits the affinity of the
    // thread that starts it. Training commands must still see every CPU the search may use.
    let nproc = |command: &mut Command| String::from_utf8(command.output().unwrap().stdout).unwrap().trim().parse::<u64>().unwrap();
    let allowed = nproc(Command::new("nproc").env_remove("OMP_NUM_THREADS"));
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "cpus.sh", "#!/bin/sh\ncat > /dev/null\necho \"{\\\"cost\\\": $(nproc), \\\"size\\\": 1}\"\n");
    let out = dir.path().join("run");
    let mut args = command_search_args(&script, 4);
    args.extend(["--workers".into(), "2".into(), "--out".into(), out.display().to_string()]);
    let output = alphanas().args(&args).env_remove("OMP_NUM_THREADS").output().unwrap();
    assert!(output.status.success(), "{:?}: {}", output.status, String::from_utf8_lossy(&output.stderr));
    let lines = history_lines(&out);
    assert_eq!(lines.len(), 4);
    for line in &lines {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["metrics"]["cost"].as_f64(), Some(allowed as f64), "{line}");
    }
}

/// Editing the space file or the table between runs, even keeping the number of candidates,
/// or giving another --eval-cmd, is rejected on resume, so old results keep their meaning.
#[test]
fn resume_rejects_edited_space_and_command() {
    let dir = tempfile::tempdir().unwrap();
    let space = dir.path().join("uniform.toml");
    std::fs::write(&space, UNIFORM_SPACE).unwrap();
    let out = dir.path().join("arch");
    let first = alphanas().args(["search", "--evals", "3", "-q", "--space"]).arg(&space).arg("--out").arg(&out).output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    std::fs::write(&space, UNIFORM_SPACE.replace("d_model = [64, 128, 192]", "d_model = [64, 128, 256]")).unwrap();
    let resumed = alphanas().args(["search", "--evals", "5", "-q", "--resume"]).arg(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(!resumed.status.success(), "an edited space file was accepted");
    assert!(stderr.contains("the definition of space uniform changed"), "{stderr}");

    write_rows(dir.path());
    let table = table_search(dir.path(), &["--evals", "4", "--out", "table"]);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let rows = std::fs::read_to_string(dir.path().join("rows.csv")).unwrap();
    std::fs::write(dir.path().join("rows.csv"), rows.replacen("0,0,100,0,10", "0,0,100,0,99", 1)).unwrap();
    let resumed = resume_in(dir.path(), "table", &["--evals", "6"]);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(!resumed.status.success(), "an edited table was accepted");
    assert!(stderr.contains("table cells differ"), "{stderr}");

    let script = slow_eval_script(dir.path(), "0");
    let out = dir.path().join("command");
    let first = alphanas().args(command_search_args(&script, 2)).arg("--out").arg(&out).output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let resumed = alphanas().args(["search", "--evals", "3", "-q", "--eval-cmd", "python3 other.py", "--resume"]).arg(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(!resumed.status.success(), "another --eval-cmd was accepted");
    assert!(stderr.contains("not command python3 other.py"), "{stderr}");
}

/// A table without a header row, or with a column named twice, is rejected with the reason.
#[test]
fn table_header_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.csv"), "").unwrap();
    std::fs::write(dir.path().join("twice.csv"), "a,a,x\n1,2,3\n").unwrap();
    for (file, expected) in [("empty.csv", "has no header row"), ("twice.csv", "names column `a` twice")] {
        let output = alphanas()
            .current_dir(dir.path())
            .args(["search", "--space-table", file, "--decisions", "a", "--objective", "min:x", "-q", "--out", "run"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{file} was accepted");
        assert!(stderr.contains(expected), "{file}: {stderr}");
    }
}
