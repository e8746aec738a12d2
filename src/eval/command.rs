//! The `command` evaluator: runs the user's program once per candidate.
//!
//! Protocol, per trial:
//! - The candidate's JSON goes to the child's stdin and to a temporary file whose path is in
//!   `ALPHANAS_ARCH_FILE`; the trial number is in `ALPHANAS_TRIAL_ID`. An architecture is
//!   written in the architecture JSON format, a table row as an object of its decision values
//!   plus `"row": INDEX`.
//! - The last non-empty line of stdout must be a JSON object of metrics (numbers).
//! - A non-zero exit, an unparsable last line, a missing metric or a non-finite value fails
//!   the trial. The error keeps the last 2 KiB of stderr.
//!
//! The program runs directly from its argument vector (see [`super::argv`]); no shell is
//! involved, so architecture values are never spliced into a command line. The child leads
//! its own process group. On time-out the whole group gets SIGKILL, so grandchildren die with
//! it. After a normal exit the group is also killed, so that a leftover background process
//! cannot hold the output pipes open and stall the evaluation.

use super::{EvalOutcome, Evaluator, Status};
use crate::space::Candidate;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes of stderr kept for the error message.
pub const STDERR_TAIL_BYTES: usize = 2048;

/// Bytes of stdout kept. Only the last line matters, and this bounds memory for a child that
/// prints a lot.
const STDOUT_TAIL_BYTES: usize = 1 << 20;

/// Interval between checks whether the child has exited.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Distinguishes temporary files of trials that run at the same time.
static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Evaluator that runs an external program per candidate (see the module documentation).
#[derive(Debug, Clone)]
pub struct CommandEvaluator {
    argv: Vec<String>,
    timeout: Option<Duration>,
    required_metrics: Vec<String>,
    working_dir: Option<PathBuf>,
}

impl CommandEvaluator {
    /// Builds the evaluator from an argument vector. `required_metrics` lists the names every
    /// ok result must contain (the objectives and constraints). `timeout` of `None` waits
    /// forever.
    pub fn new(argv: Vec<String>, timeout: Option<Duration>, required_metrics: Vec<String>) -> crate::Result<Self> {
        if argv.is_empty() || argv[0].is_empty() {
            return Err(crate::Error::Invalid(
                "--eval-cmd is empty; give the program and its arguments, for example --eval-cmd \"python3 train.py\"".into(),
            ));
        }
        if let Some(t) = timeout {
            if t.is_zero() {
                return Err(crate::Error::Invalid("--eval-timeout (0) must be positive, in seconds".into()));
            }
        }
        Ok(CommandEvaluator { argv, timeout, required_metrics, working_dir: None })
    }

    /// Builds the evaluator from a command line split with shell quoting rules.
    pub fn from_command_line(line: &str, timeout: Option<Duration>, required_metrics: Vec<String>) -> crate::Result<Self> {
        let argv = super::argv::split_command_line(line).map_err(|e| crate::Error::Invalid(format!("--eval-cmd: {e}")))?;
        Self::new(argv, timeout, required_metrics)
    }

    /// Runs the program in `dir` instead of the current directory.
    pub fn with_working_dir(mut self, dir: PathBuf) -> Self {
        self.working_dir = Some(dir);
        self
    }

    /// The argument vector the program is started with.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    fn run_trial(&self, trial: u64, input_path: &std::path::Path) -> Result<BTreeMap<String, f64>, (Status, String)> {
        // Stdin is the candidate's file itself, not a pipe. A child that exits without reading
        // a piped stdin closes the pipe under our write, and the SIGPIPE that `main` leaves at
        // its default action would then kill the whole search.
        let stdin = std::fs::File::open(input_path)
            .map_err(|e| (Status::Failed, format!("cannot open the candidate file {}: {e}", input_path.display())))?;
        let mut command = Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .env("ALPHANAS_ARCH_FILE", input_path)
            .env("ALPHANAS_TRIAL_ID", trial.to_string())
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(dir) = &self.working_dir {
            command.current_dir(dir);
        }
        #[cfg(target_os = "linux")]
        {
            // If AlphaNAS is killed outright (SIGKILL), no handler runs to stop the trials, so
            // the kernel sends SIGKILL to the program instead. The signal follows the death of
            // the spawning thread, which waits for the program, so it cannot fire early.
            let parent = std::process::id() as libc::pid_t;
            // SAFETY: the closure runs in the child between fork and exec and calls only prctl,
            // getppid and __errno_location, which are async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The parent may have died before prctl took effect.
                    if libc::getppid() != parent {
                        return Err(std::io::Error::other("alphanas exited while the trial was starting"));
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().map_err(|e| {
            (Status::Failed, format!("cannot start `{}`: {e}; check that the program exists and is executable", self.argv[0]))
        })?;
        let group = child.id() as libc::pid_t;
        RUNNING_GROUPS.lock().unwrap_or_else(|e| e.into_inner()).insert(group);

        // Stdout and stderr are drained on their own threads, so a child that fills one pipe
        // while we wait on the other cannot deadlock.
        let stdout_reader = child.stdout.take().map(|out| spawn_tail_reader(out, STDOUT_TAIL_BYTES));
        let stderr_reader = child.stderr.take().map(|err| spawn_tail_reader(err, STDERR_TAIL_BYTES));

        let waited = wait_with_deadline(&mut child, self.timeout);
        kill_group(group);
        RUNNING_GROUPS.lock().unwrap_or_else(|e| e.into_inner()).remove(&group);
        if matches!(waited, Ok(None)) {
            // Reap the leader that the time-out killed.
            let _ = child.wait();
        }
        let stdout = join_reader(stdout_reader);
        let stderr = join_reader(stderr_reader).text;
        let stderr_tail = describe_stderr(&stderr);

        let status = match waited {
            Ok(Some(status)) => status,
            Ok(None) => {
                let seconds = self.timeout.map(|t| t.as_secs_f64()).unwrap_or_default();
                return Err((
                    Status::Timeout,
                    format!("timed out after {seconds} s and its process group was killed; raise --eval-timeout if trials need longer{stderr_tail}"),
                ));
            }
            Err(e) => return Err((Status::Failed, format!("cannot wait for `{}`: {e}", self.argv[0]))),
        };
        if !status.success() {
            return Err((Status::Failed, format!("`{}` {}{stderr_tail}", self.argv[0], describe_exit(status))));
        }

        parse_metrics(&stdout.text, &self.required_metrics).map_err(|e| {
            // Only the end of stdout is kept, so a last line longer than that arrives cut.
            if stdout.cut && !stdout.text.trim_end().contains('\n') {
                let mib = STDOUT_TAIL_BYTES >> 20;
                let error = format!("the last line of stdout is longer than the {mib} MiB that AlphaNAS keeps, so it arrived cut; print the metrics as a short JSON line of their own at the end");
                return (Status::Failed, format!("{error}{stderr_tail}"));
            }
            (Status::Failed, format!("{e}{stderr_tail}"))
        })
    }
}

impl Evaluator for CommandEvaluator {
    fn name(&self) -> &str {
        "command"
    }

    /// Returns the program and its arguments, because another program reports other metrics.
    /// The time-out may change between runs.
    fn settings(&self) -> std::collections::BTreeMap<String, String> {
        std::collections::BTreeMap::from([("command".to_string(), self.argv.join(" "))])
    }

    fn metric_names(&self) -> Vec<String> {
        self.required_metrics.clone()
    }

    fn evaluate(&self, trial: u64, candidate: &Candidate) -> EvalOutcome {
        let start = Instant::now();
        let input = candidate_json(candidate);
        let input_file = match TempFile::create(trial, &input) {
            Ok(file) => file,
            Err(e) => return EvalOutcome::failed(Status::Failed, e, start.elapsed().as_secs_f64()),
        };

        let result = self.run_trial(trial, &input_file.path);
        let elapsed = start.elapsed().as_secs_f64();
        match result {
            Ok(metrics) => EvalOutcome::ok(metrics, elapsed),
            Err((status, error)) => {
                log::debug!("trial {trial}: command evaluator {status:?}: {error}");
                EvalOutcome::failed(status, error, elapsed)
            }
        }
    }
}

/// JSON text the program receives for `candidate`.
pub fn candidate_json(candidate: &Candidate) -> String {
    match candidate {
        Candidate::Arch(arch) => arch.to_json(),
        Candidate::Row { source_row, values, .. } => {
            let mut object = serde_json::Map::new();
            object.insert("row".into(), serde_json::Value::from(*source_row as u64));
            for (name, value) in values {
                object.insert(name.clone(), serde_json::Value::String(value.clone()));
            }
            serde_json::Value::Object(object).to_string()
        }
    }
}

/// Parses the last non-empty line of `stdout` as a JSON object of finite numbers and checks
/// that every name in `required` is present. Values that are not numbers (strings, lists)
/// are ignored, so a program may print extra information.
pub fn parse_metrics(stdout: &str, required: &[String]) -> Result<BTreeMap<String, f64>, String> {
    let Some(line) = stdout.lines().rev().map(str::trim).find(|l| !l.is_empty()) else {
        return Err("the command printed nothing on stdout; its last line must be a JSON object of metrics such as {\"loss\": 3.2}".into());
    };
    let object: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(line) {
        Ok(object) => object,
        Err(e) => {
            if let Some(token) = non_finite_token(line) {
                return Err(format!(
                    "the metrics line contains the non-finite value {token}; every metric must be a finite number (last line: {})",
                    clip(line, 200)
                ));
            }
            return Err(format!(
                "the last line of stdout is not a JSON object of metrics ({e}); print one such as {{\"loss\": 3.2}} last (last line: {})",
                clip(line, 200)
            ));
        }
    };

    let mut metrics = BTreeMap::new();
    for (name, value) in &object {
        if let Some(number) = value.as_f64() {
            if !number.is_finite() {
                return Err(format!("metric `{name}` is not finite ({number}); every metric must be a finite number"));
            }
            metrics.insert(name.clone(), number);
        } else if value.is_null() {
            return Err(format!("metric `{name}` is null; every metric must be a finite number"));
        }
    }
    for name in required {
        if let Some(value) = object.get(name).filter(|_| !metrics.contains_key(name)) {
            return Err(format!(
                "metric `{name}` is {}, not a number; print it as a JSON number, for example {{\"{name}\": 3.2}}",
                clip(&value.to_string(), 80)
            ));
        }
        if !metrics.contains_key(name) {
            let found: Vec<&str> = metrics.keys().map(String::as_str).collect();
            return Err(format!(
                "metric `{name}` is missing from the command's output (found: {}); print it in the last line of stdout",
                if found.is_empty() { "none".to_string() } else { found.join(", ") }
            ));
        }
    }
    Ok(metrics)
}

/// The spelling of a non-finite number in `line` (as Python's `json.dumps` writes them), if any.
fn non_finite_token(line: &str) -> Option<&'static str> {
    ["-Infinity", "Infinity", "NaN", "-inf", "inf", "nan"].into_iter().find(|token| {
        line.match_indices(token).any(|(at, _)| {
            let before = line[..at].chars().next_back();
            let after = line[at + token.len()..].chars().next();
            let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric() && c != '_' && c != '"');
            boundary(before) && boundary(after)
        })
    })
}

/// Waits for `child` until `timeout` passes. Returns `Ok(None)` on time-out.
fn wait_with_deadline(child: &mut Child, timeout: Option<Duration>) -> std::io::Result<Option<ExitStatus>> {
    let Some(timeout) = timeout else {
        return child.wait().map(Some);
    };
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Sends SIGKILL to every process in group `group`.
/// Process groups of the trials running now, so that [`kill_running_trials`] can stop them.
static RUNNING_GROUPS: Mutex<BTreeSet<libc::pid_t>> = Mutex::new(BTreeSet::new());

/// Candidate files of the trials running now, so that [`kill_running_trials`] can remove them
/// when the process exits without dropping them.
static LIVE_FILES: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Kills the process group of every command trial still running, removes their candidate
/// files, and returns how many trials there were. For a process that is about to exit without
/// waiting for its trials (a second Ctrl-C), so that neither a trial nor its file outlives it.
pub fn kill_running_trials() -> usize {
    let groups = RUNNING_GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    for &group in groups.iter() {
        kill_group(group);
    }
    for path in LIVE_FILES.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = std::fs::remove_file(path);
    }
    groups.len()
}

fn kill_group(group: libc::pid_t) {
    // SAFETY: killpg only sends a signal. The group id is the child's pid, which the kernel
    // does not reuse while any process of that group is alive, so the signal cannot reach an
    // unrelated group. ESRCH (no process left) is expected and ignored.
    let result = unsafe { libc::killpg(group, libc::SIGKILL) };
    if result != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            log::warn!("cannot kill process group {group} of an evaluator command: {err}");
        }
    }
}

/// The end of a child's output stream, and whether earlier bytes were dropped.
#[derive(Default)]
struct Tail {
    text: String,
    cut: bool,
}

/// Reads `source` to its end on a new thread, keeping only its last `keep` bytes.
fn spawn_tail_reader(mut source: impl Read + Send + 'static, keep: usize) -> JoinHandle<(Vec<u8>, bool)> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut cut = false;
        let mut buffer = [0u8; 8192];
        loop {
            match source.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buffer[..n]);
                    if kept.len() > 2 * keep {
                        kept.drain(..kept.len() - keep);
                        cut = true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if kept.len() > keep {
            kept.drain(..kept.len() - keep);
            cut = true;
        }
        (kept, cut)
    })
}

fn join_reader(handle: Option<JoinHandle<(Vec<u8>, bool)>>) -> Tail {
    let (bytes, cut) = handle.and_then(|h| h.join().ok()).unwrap_or_default();
    Tail { text: String::from_utf8_lossy(&bytes).into_owned(), cut }
}

/// `"; stderr: ..."` with the end of stderr, or nothing when stderr is empty.
fn describe_stderr(stderr: &str) -> String {
    let trimmed = stderr.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("; stderr: {trimmed}")
    }
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "failed".into(),
    }
}

/// The first `max` characters of `text`, with `...` when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// A temporary file that holds the candidate's JSON and is removed on drop.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn create(trial: u64, contents: &str) -> Result<TempFile, String> {
        let serial = FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("alphanas-{}-trial{trial}-{serial}.json", std::process::id());
        let path = std::env::temp_dir().join(name);
        let mut handle = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("cannot create the candidate file {}: {e}; check that TMPDIR is writable", path.display()))?;
        // Registered before the write, so that a failed write still removes the file on drop.
        LIVE_FILES.lock().unwrap_or_else(|e| e.into_inner()).insert(path.clone());
        let file = TempFile { path };
        handle
            .write_all(contents.as_bytes())
            .map_err(|e| format!("cannot write the candidate file {}: {e}", file.path.display()))?;
        Ok(file)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        LIVE_FILES.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn metrics_from_last_line() {
        let out = "epoch 1\n{\"loss\": 9}\nlog line\n{\"loss\": 3.5, \"note\": \"x\", \"ppl\": 33}\n\n";
        let metrics = parse_metrics(out, &names(&["loss"])).unwrap();
        assert_eq!(metrics["loss"], 3.5);
        assert_eq!(metrics["ppl"], 33.0);
        assert!(!metrics.contains_key("note"));
    }

    #[test]
    fn metrics_missing_named() {
        let err = parse_metrics("{\"ppl\": 3}", &names(&["loss"])).unwrap_err();
        assert!(err.contains("`loss` is missing"), "{err}");
        assert!(err.contains("ppl"), "{err}");
    }

    #[test]
    fn metrics_of_wrong_type_named() {
        for (line, shown) in [("{\"loss\": \"3.2\"}", "\"3.2\""), ("{\"loss\": [1]}", "[1]"), ("{\"loss\": true}", "true")] {
            let err = parse_metrics(line, &names(&["loss"])).unwrap_err();
            assert!(err.contains(&format!("`loss` is {shown}, not a number")), "{line}: {err}");
        }
    }

    #[test]
    fn metrics_non_finite_rejected() {
        for line in ["{\"loss\": NaN}", "{\"loss\": Infinity}", "{\"loss\": -Infinity}"] {
            let err = parse_metrics(line, &names(&["loss"])).unwrap_err();
            assert!(err.contains("non-finite"), "{line}: {err}");
        }
        let err = parse_metrics("{\"loss\": null}", &names(&["loss"])).unwrap_err();
        assert!(err.contains("null"), "{err}");
    }

    #[test]
    fn metrics_not_json() {
        let err = parse_metrics("done\n", &[]).unwrap_err();
        assert!(err.contains("not a JSON object"), "{err}");
        let err = parse_metrics("\n  \n", &[]).unwrap_err();
        assert!(err.contains("printed nothing"), "{err}");
        // A field named like a non-finite token is not mistaken for one.
        let err = parse_metrics("{\"nan\": 1", &[]).unwrap_err();
        assert!(err.contains("not a JSON object"), "{err}");
    }

    #[test]
    fn row_candidate_json() {
        let row = Candidate::Row { index: 5, source_row: 7, values: vec![("width".into(), "256".into())] };
        let value: serde_json::Value = serde_json::from_str(&candidate_json(&row)).unwrap();
        assert_eq!(value["row"], 7);
        assert_eq!(value["width"], "256");
    }

    #[test]
    fn empty_command_rejected() {
        assert!(CommandEvaluator::from_command_line("  ", None, vec![]).is_err());
        assert!(CommandEvaluator::from_command_line("echo 'x", None, vec![]).is_err());
        assert!(CommandEvaluator::from_command_line("echo", Some(Duration::ZERO), vec![]).is_err());
    }
}
