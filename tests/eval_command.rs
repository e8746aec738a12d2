//! The command evaluator against real child processes: the stdin and environment protocol,
//! failures, time-outs that end the whole process group, argv without a shell, and Slurm and
//! Ray wrappers driven by stand-in schedulers.

use alphanas::arch::presets;
use alphanas::eval::command::CommandEvaluator;
use alphanas::eval::{Evaluator, Status};
use alphanas::space::Candidate;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn candidate() -> Candidate {
    Candidate::Arch(presets::llama_tiny())
}

/// Writes an executable shell script `name` into `dir` and returns its path.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn evaluator(argv: &[&str], timeout: Option<Duration>, required: &[&str]) -> CommandEvaluator {
    CommandEvaluator::new(
        argv.iter().map(|s| s.to_string()).collect(),
        timeout,
        required.iter().map(|s| s.to_string()).collect(),
    )
    .unwrap()
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn command_success_reads_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = script(dir.path(), "ok.sh", r#"echo "training..."; echo '{"loss": 2.5, "ppl": 12.2}'; echo "" "#);
    let eval = evaluator(&[path.to_str().unwrap()], Some(Duration::from_secs(20)), &["loss"]);
    let outcome = eval.evaluate(0, &candidate());
    assert_eq!(outcome.status, Status::Ok, "{:?}", outcome.error);
    assert_eq!(outcome.metrics["loss"], 2.5);
    assert_eq!(outcome.metrics["ppl"], 12.2);
    assert!(outcome.elapsed_s > 0.0);
}

#[test]
fn command_stdin_and_env_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    std::fs::create_dir(&seen).unwrap();
    // The script stores what it received, then reports d_model from the file as a metric.
    let body = format!(
        r#"cat > {seen}/stdin.json
cp "$ALPHANAS_ARCH_FILE" {seen}/file.json
echo "$ALPHANAS_ARCH_FILE" > {seen}/path
echo "$ALPHANAS_TRIAL_ID" > {seen}/trial
echo '{{"score": 1}}'"#,
        seen = seen.display()
    );
    let path = script(dir.path(), "protocol.sh", &body);
    let eval = evaluator(&[path.to_str().unwrap()], None, &["score"]);
    let outcome = eval.evaluate(42, &candidate());
    assert_eq!(outcome.status, Status::Ok, "{:?}", outcome.error);

    let expected = presets::llama_tiny().to_json();
    assert_eq!(std::fs::read_to_string(seen.join("stdin.json")).unwrap(), expected);
    assert_eq!(std::fs::read_to_string(seen.join("file.json")).unwrap(), expected);
    assert_eq!(std::fs::read_to_string(seen.join("trial")).unwrap().trim(), "42");
    let arch_path = std::fs::read_to_string(seen.join("path")).unwrap();
    assert!(!Path::new(arch_path.trim()).exists(), "the temporary architecture file was not removed");
}

#[test]
fn command_nonzero_exit_keeps_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let path = script(dir.path(), "fail.sh", r#"echo '{"loss": 1}'; echo "CUDA out of memory" >&2; exit 3"#);
    let outcome = evaluator(&[path.to_str().unwrap()], None, &["loss"]).evaluate(0, &candidate());
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(error.contains("exited with status 3"), "{error}");
    assert!(error.contains("CUDA out of memory"), "{error}");
}

#[test]
fn command_stderr_tail_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // 20,000 lines of stderr, then failure: the error keeps only the end.
    let path = script(dir.path(), "chatty.sh", r#"i=0; while [ $i -lt 20000 ]; do echo "line $i" >&2; i=$((i+1)); done; exit 1"#);
    let outcome = evaluator(&[path.to_str().unwrap()], Some(Duration::from_secs(60)), &[]).evaluate(0, &candidate());
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(error.contains("line 19999"), "{}", &error[error.len().saturating_sub(200)..]);
    assert!(!error.contains("line 100\n"));
    assert!(error.len() < 2048 + 300, "error is {} bytes", error.len());
}

#[test]
fn command_chatty_stdout_no_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    // More than a pipe buffer (64 KiB) on both streams before the metrics line.
    let body = r#"i=0; while [ $i -lt 5000 ]; do echo "out $i padding padding padding"; echo "err $i padding padding" >&2; i=$((i+1)); done; echo '{"loss": 4}'"#;
    let path = script(dir.path(), "chatty_ok.sh", body);
    let outcome = evaluator(&[path.to_str().unwrap()], Some(Duration::from_secs(60)), &["loss"]).evaluate(0, &candidate());
    assert_eq!(outcome.status, Status::Ok, "{:?}", outcome.error);
    assert_eq!(outcome.metrics["loss"], 4.0);
}

#[test]
fn command_overlong_metrics_line_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    // One JSON line of about 2 MiB: twice what the evaluator keeps of stdout.
    let body = r#"printf '{"loss": 1.5, "pad": "'; head -c 2097152 /dev/zero | tr '\0' x; printf '"}\n'"#;
    let path = script(dir.path(), "long_line.sh", body);
    let outcome = evaluator(&[path.to_str().unwrap()], Some(Duration::from_secs(60)), &["loss"]).evaluate(0, &candidate());
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(error.contains("longer than the 1 MiB"), "{error}");
}

#[test]
fn command_missing_metric_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = script(dir.path(), "missing.sh", r#"echo '{"ppl": 20}'"#);
    let outcome = evaluator(&[path.to_str().unwrap()], None, &["loss"]).evaluate(0, &candidate());
    assert_eq!(outcome.status, Status::Failed);
    assert!(outcome.error.unwrap().contains("`loss` is missing"));
}

#[test]
fn command_non_finite_metric_fails() {
    let dir = tempfile::tempdir().unwrap();
    for (name, line) in [("nan.sh", r#"{"loss": NaN}"#), ("inf.sh", r#"{"loss": Infinity}"#), ("ninf.sh", r#"{"loss": -Infinity}"#)] {
        let path = script(dir.path(), name, &format!("echo '{line}'"));
        let outcome = evaluator(&[path.to_str().unwrap()], None, &["loss"]).evaluate(0, &candidate());
        assert_eq!(outcome.status, Status::Failed, "{line}");
        assert!(outcome.error.unwrap().contains("non-finite"), "{line}");
    }
}

#[test]
fn command_timeout_kills_grandchild() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("grandchild.pid");
    // The script starts a background sleeper (a grandchild of alphanas), records its pid,
    // then hangs itself.
    let body = format!("sleep 300 &\necho $! > {}\nsleep 300", pid_file.display());
    let path = script(dir.path(), "hang.sh", &body);
    let start = Instant::now();
    let outcome = evaluator(&[path.to_str().unwrap()], Some(Duration::from_millis(500)), &[]).evaluate(0, &candidate());
    let elapsed = start.elapsed();
    assert_eq!(outcome.status, Status::Timeout);
    assert!(outcome.error.unwrap().contains("timed out"));
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");

    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // The grandchild was re-parented to init (or a subreaper), which reaps it after SIGKILL;
    // give that a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!process_alive(pid), "grandchild {pid} survived the time-out");
}

#[test]
fn command_leftover_background_does_not_stall() {
    let dir = tempfile::tempdir().unwrap();
    // The background sleeper inherits stdout; without killing the group the reader would wait
    // for it for 300 s.
    let path = script(dir.path(), "bg.sh", r#"sleep 300 & echo '{"loss": 1}'"#);
    let start = Instant::now();
    let outcome = evaluator(&[path.to_str().unwrap()], Some(Duration::from_secs(60)), &["loss"]).evaluate(0, &candidate());
    assert_eq!(outcome.status, Status::Ok, "{:?}", outcome.error);
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn command_argv_not_through_shell() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    std::fs::write(&marker, "keep").unwrap();
    let args_file = dir.path().join("args");
    // The script writes each argument on its own line.
    let path = script(dir.path(), "args.sh", &format!(r#"for a in "$@"; do echo "$a"; done > {}; echo '{{"n": '$#'}}'"#, args_file.display()));
    let line = format!("{} --tag 'x; rm -rf {}' \"$HOME\" a\\ b", path.display(), marker.display());
    let eval = CommandEvaluator::from_command_line(&line, None, vec!["n".into()]).unwrap();
    let outcome = eval.evaluate(0, &candidate());
    assert_eq!(outcome.status, Status::Ok, "{:?}", outcome.error);
    assert_eq!(outcome.metrics["n"], 4.0);
    let args = std::fs::read_to_string(&args_file).unwrap();
    let expected = format!("--tag\nx; rm -rf {}\n$HOME\na b\n", marker.display());
    assert_eq!(args, expected);
    assert!(marker.exists(), "the argument was run as a command");
}

#[test]
fn command_missing_program_fails() {
    let outcome = evaluator(&["/nonexistent/alphanas-eval"], None, &[]).evaluate(0, &candidate());
    assert_eq!(outcome.status, Status::Failed);
    assert!(outcome.error.unwrap().contains("cannot start"));
}

#[test]
fn command_parallel_trials() {
    let dir = tempfile::tempdir().unwrap();
    let path = script(dir.path(), "id.sh", r#"cat > /dev/null; echo "{\"trial\": $ALPHANAS_TRIAL_ID}""#);
    let eval = evaluator(&[path.to_str().unwrap()], Some(Duration::from_secs(60)), &["trial"]);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6).map(|trial| {
            let eval = &eval;
            scope.spawn(move || (trial, eval.evaluate(trial, &candidate())))
        }).collect();
        for handle in handles {
            let (trial, outcome) = handle.join().unwrap();
            assert_eq!(outcome.status, Status::Ok, "{:?}", outcome.error);
            assert_eq!(outcome.metrics["trial"], trial as f64);
        }
    });
}

fn repo_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name)
}

/// Creates stand-in `srun`, `sbatch` and `scancel` commands in `dir/bin` and returns a PATH
/// that finds them first.
fn fake_slurm(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // srun: skip options, run the program in the foreground with stdin passed through.
    script(&bin, "srun", r#"while [ $# -gt 0 ]; do case "$1" in --*) shift ;; *) break ;; esac; done
echo "srun $*" >> "$ALPHANAS_SHARED_DIR/calls"
exec "$@""#);
    // sbatch --wait --parsable ... --output=F --error=G SCRIPT: print a job id, run the script
    // with its output in the files, and return its status.
    script(&bin, "sbatch", r#"out=/dev/null; err=/dev/null
while [ $# -gt 1 ]; do case "$1" in --output=*) out="${1#--output=}" ;; --error=*) err="${1#--error=}" ;; esac; shift; done
echo "sbatch $1" >> "$ALPHANAS_SHARED_DIR/calls"
echo 1234
"$1" > "$out" 2> "$err""#);
    script(&bin, "scancel", r#"echo "scancel $*" >> "$ALPHANAS_SHARED_DIR/calls""#);
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

/// The evaluator's child environment is inherited, so the scheduler settings are set through
/// a small `env` wrapper in the argument vector.
fn slurm_evaluator(path_var: &str, shared: &Path, mode: &str, program: &[&str]) -> CommandEvaluator {
    let mut argv: Vec<String> = vec![
        "env".into(),
        format!("PATH={path_var}"),
        format!("ALPHANAS_SHARED_DIR={}", shared.display()),
        format!("ALPHANAS_SLURM_MODE={mode}"),
        repo_script("eval_slurm.sh").display().to_string(),
    ];
    argv.extend(program.iter().map(|s| s.to_string()));
    CommandEvaluator::new(argv, Some(Duration::from_secs(60)), vec!["d_model".into()]).unwrap()
}

#[test]
fn slurm_wrapper_srun_and_sbatch() {
    let dir = tempfile::tempdir().unwrap();
    let path_var = fake_slurm(dir.path());
    let shared = dir.path().join("shared");
    // The "training" program reads the architecture from stdin and the file, and checks both.
    let train = script(dir.path(), "train.sh", r#"from_stdin=$(cat)
from_file=$(cat "$ALPHANAS_ARCH_FILE")
[ "$from_stdin" = "$from_file" ] || { echo "stdin and file differ" >&2; exit 9; }
echo "step 1 loss 9" >&2
d=$(echo "$from_stdin" | sed 's/.*"d_model":\([0-9]*\).*/\1/')
echo "{\"d_model\": $d, \"trial\": $ALPHANAS_TRIAL_ID}""#);

    for mode in ["srun", "sbatch"] {
        let eval = slurm_evaluator(&path_var, &shared, mode, &[train.to_str().unwrap()]);
        let outcome = eval.evaluate(7, &candidate());
        assert_eq!(outcome.status, Status::Ok, "{mode}: {:?}", outcome.error);
        assert_eq!(outcome.metrics["d_model"], 256.0, "{mode}");
        assert_eq!(outcome.metrics["trial"], 7.0, "{mode}");
    }
    let calls = std::fs::read_to_string(shared.join("calls")).unwrap();
    assert!(calls.contains("srun "), "{calls}");
    assert!(calls.contains("sbatch "), "{calls}");
    // Only the call log remains: trial files are cleaned up.
    let left: Vec<_> = std::fs::read_dir(&shared).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("calls")]);
}

#[test]
fn slurm_wrapper_relays_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path_var = fake_slurm(dir.path());
    let shared = dir.path().join("shared");
    let train = script(dir.path(), "crash.sh", r#"echo "NCCL error on node 3" >&2; exit 5"#);
    for mode in ["srun", "sbatch"] {
        let outcome = slurm_evaluator(&path_var, &shared, mode, &[train.to_str().unwrap()]).evaluate(1, &candidate());
        assert_eq!(outcome.status, Status::Failed, "{mode}");
        let error = outcome.error.unwrap();
        assert!(error.contains("status 5"), "{mode}: {error}");
        assert!(error.contains("NCCL error on node 3"), "{mode}: {error}");
    }
}

#[test]
fn slurm_wrapper_quotes_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let path_var = fake_slurm(dir.path());
    let shared = dir.path().join("shared");
    let marker = dir.path().join("marker");
    std::fs::write(&marker, "keep").unwrap();
    let train = script(dir.path(), "echo_args.sh", r#"cat > /dev/null; echo "{\"d_model\": 1, \"n\": $#}""#);
    let hostile = format!("$(rm {}); `rm {}`", marker.display(), marker.display());
    let eval = slurm_evaluator(&path_var, &shared, "sbatch", &[train.to_str().unwrap(), &hostile, "two words"]);
    let outcome = eval.evaluate(2, &candidate());
    assert_eq!(outcome.status, Status::Ok, "{:?}", outcome.error);
    assert_eq!(outcome.metrics["n"], 2.0);
    assert!(marker.exists(), "an argument was run by the batch shell");
}

#[test]
fn ray_wrapper_filters_status_lines() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // ray job submit --wait --working-dir DIR [...] -- ENTRYPOINT: run the entrypoint with sh
    // in DIR, then print status lines as Ray does.
    script(&bin, "ray", r#"while [ $# -gt 0 ]; do case "$1" in --working-dir) wd="$2"; shift 2 ;; --) shift; break ;; *) shift ;; esac; done
echo "Job submission server address: http://127.0.0.1:8265"
cd "$wd" && sh -c "$1"; status=$?
echo "------------------------------------------"
echo "Job 'raysubmit_1' succeeded"
exit $status"#);
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let train = script(dir.path(), "train.sh", r#"d=$(sed 's/.*"d_model":\([0-9]*\).*/\1/'); echo "{\"d_model\": $d, \"trial\": $ALPHANAS_TRIAL_ID}""#);
    let argv = vec![
        "env".to_string(),
        format!("PATH={}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()),
        format!("ALPHANAS_RAY_WORKING_DIR={}", work.display()),
        repo_script("eval_ray.sh").display().to_string(),
        train.display().to_string(),
    ];
    let eval = CommandEvaluator::new(argv, Some(Duration::from_secs(60)), vec!["d_model".into()]).unwrap();
    let outcome = eval.evaluate(3, &candidate());
    assert_eq!(outcome.status, Status::Ok, "{:?}", outcome.error);
    assert_eq!(outcome.metrics["d_model"], 256.0);
    assert_eq!(outcome.metrics["trial"], 3.0);
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0, "the uploaded architecture file was not removed");
}
