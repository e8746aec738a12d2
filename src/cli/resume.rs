//! `command.json`: the command lines of a search, kept in its output folder so that
//! `alphanas search --resume DIR` alone continues with the options the search started with.
//!
//! The file lists each run's arguments (after the program name) and working directory: the
//! first run, then every resume. A resume rebuilds the options layer by layer. It starts
//! from the first run's options, and each later run overrides only the options it gave on
//! its own command line (or through an environment variable). `--out` and `--resume` are
//! never carried over. Relative paths given in a run (`--space` naming a file,
//! `--space-table`, `--table`) are read from that run's directory.
//!
//! A run's global options that came from environment variables (`ALPHANAS_BACKEND`,
//! `ALPHANAS_THREADS`, `ALPHANAS_NO_PIN`) are stored as the equivalent arguments, so a resume
//! in another environment keeps them. Clap reads the current environment again when it parses
//! a stored command line, but an argument takes precedence over it.

use super::search::Args;
use super::{Cli, Command, Global};
use crate::space::BUILTIN_NAMES;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File name of the stored command lines inside a search's output folder.
pub const COMMAND_FILE: &str = "command.json";
const FORMAT_VERSION: u32 = 1;

/// One run's command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRun {
    /// Working directory of the run.
    pub cwd: PathBuf,
    /// Arguments after the program name.
    pub args: Vec<String>,
}

/// Contents of `command.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCommand {
    pub format_version: u32,
    /// The first run, then each resume in order.
    pub runs: Vec<StoredRun>,
}

/// Returns the current process's command line, or `None` when it is unknown (the CLI was
/// called as a library) or not valid UTF-8.
fn current_run(global: &Global) -> Option<StoredRun> {
    if global.argv.is_empty() {
        return None;
    }
    let cwd = std::env::current_dir().ok()?;
    let mut args = global.argv.clone();
    args.extend(environment_options(global, &global.argv));
    Some(StoredRun { cwd, args })
}

/// Returns as arguments the global options that `global` took from environment variables,
/// leaving out those that `argv` gives itself.
fn environment_options(global: &Global, argv: &[String]) -> Vec<String> {
    let on_command_line = |flag: &str| argv.iter().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    // Clap ignores an empty variable, as this does.
    let from_env = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty());
    let mut options = Vec::new();
    if from_env("ALPHANAS_BACKEND") && !on_command_line("--backend") {
        if let Some(value) = clap::ValueEnum::to_possible_value(&global.backend) {
            options.extend(["--backend".to_string(), value.get_name().to_string()]);
        }
    }
    if let Some(threads) = global.threads {
        if from_env("ALPHANAS_THREADS") && !on_command_line("--threads") {
            options.extend(["--threads".to_string(), threads.to_string()]);
        }
    }
    if global.no_pin && from_env("ALPHANAS_NO_PIN") && !on_command_line("--no-pin") {
        options.push("--no-pin".to_string());
    }
    options
}

/// Writes `command.json` for a new search in `dir`. A command line that is unknown or not
/// valid UTF-8 is skipped with a warning; the search itself does not need the file.
pub fn record_new(dir: &Path, global: &Global) -> crate::Result<()> {
    let Some(run) = current_run(global) else {
        log::warn!("the command line is not known as UTF-8 text; `--resume` of this search will need its options again");
        return Ok(());
    };
    crate::error::create_dir_all(dir)?;
    let stored = StoredCommand {
        format_version: FORMAT_VERSION,
        runs: vec![run],
    };
    crate::search::write_json_atomic(&dir.join(COMMAND_FILE), &stored)
}

/// Reads `command.json` from `dir`; `Ok(None)` when the folder has none.
pub fn load(dir: &Path) -> crate::Result<Option<StoredCommand>> {
    let path = dir.join(COMMAND_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(crate::Error::io(
                format!("cannot read {}", path.display()),
                e,
            ))
        }
    };
    let stored: StoredCommand = serde_json::from_str(&text).map_err(|e| {
        crate::Error::Invalid(format!(
            "{} is not valid ({e}); delete it and give the search's options again with --resume",
            path.display()
        ))
    })?;
    if stored.format_version != FORMAT_VERSION || stored.runs.is_empty() {
        return Err(crate::Error::Invalid(format!(
            "{} has format_version {} and {} runs; this build reads version {FORMAT_VERSION} with at least one run. Delete it and give the search's options again with --resume",
            path.display(),
            stored.format_version,
            stored.runs.len()
        )));
    }
    Ok(Some(stored))
}

/// Parses one stored command line into the `search` options, the global options and the
/// matches that show which options the command line gave.
fn parse(run: &StoredRun, path: &Path) -> crate::Result<(Args, Global, ArgMatches)> {
    let argv = std::iter::once("alphanas".to_string()).chain(run.args.iter().cloned());
    let invalid = |why: String| {
        crate::Error::Invalid(format!(
            "{} contains the command line `alphanas {}`, which this build cannot read ({why}); delete the file and give the search's options again with --resume",
            path.display(),
            run.args.join(" ")
        ))
    };
    let matches = Cli::command().try_get_matches_from(argv).map_err(|e| invalid(clap_reason(&e)))?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| invalid(clap_reason(&e)))?;
    let Command::Search(args) = cli.command else {
        return Err(invalid("it is not an `alphanas search` command".into()));
    };
    let search = matches
        .subcommand_matches("search")
        .cloned()
        .ok_or_else(|| invalid("no search subcommand".into()))?;
    Ok((args, cli.global, search))
}

/// Returns the first line of clap's message for `error`, without its `error: ` prefix.
fn clap_reason(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// True when the command line (or an environment variable) gave the option `id`.
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// The `search` options that a later run may override. Every option except `--out` and
/// `--resume` is listed; `every_search_option_is_merged` checks this against clap.
macro_rules! merged_options {
    ($m:ident) => {
        $m!(
            space, space_table, decisions, features, surrogate, strategy, evaluator, eval_cmd, eval_timeout,
            workers, objectives, constraints, max_latency_ms, max_params, max_memory_mb, quality, train_tokens,
            evals, batch, table, seed, export_front, measure_batch, measure_seq, measure_runs
        )
    };
}

/// Overrides in `base` the options that `matches` shows were given in `layer`.
fn overlay(base: &mut Args, layer: &Args, matches: &ArgMatches) {
    macro_rules! take {
        ($($field:ident),*) => {
            $(if given(matches, stringify!($field)) {
                base.$field = layer.$field.clone();
            })*
        };
    }
    merged_options!(take);
}

/// Reads a relative path given in a run from that run's working directory.
fn anchor(path: &Path, cwd: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    }
}

/// Makes the file paths that `matches` shows were given in a run absolute, from the run's
/// working directory `cwd`. A `--space` that names a built-in space is not a path.
fn anchor_paths(args: &mut Args, matches: &ArgMatches, cwd: &Path) {
    if given(matches, "space_table") {
        args.space_table = args.space_table.as_deref().map(|p| anchor(p, cwd));
    }
    if given(matches, "table") {
        args.table = args.table.as_deref().map(|p| anchor(p, cwd));
    }
    if given(matches, "space") && !BUILTIN_NAMES.contains(&args.space.as_str()) {
        args.space = anchor(Path::new(&args.space), cwd).display().to_string();
    }
}

/// Returns the options of a resumed search: the stored runs' options overlaid in order, then
/// the current command line's. Also returns the command to store back, with this run
/// appended. A folder without `command.json` (from an older build, or deleted) resumes with
/// the options given now, and the returned command starts with this run.
pub fn resolve(args: &Args, global: &Global, dir: &Path) -> crate::Result<(Args, Global, Option<StoredCommand>)> {
    let Some(current) = current_run(global) else {
        return Ok((args.clone(), global.clone(), None));
    };
    let Some(mut stored) = load(dir)? else {
        log::warn!(
            "{} has no {COMMAND_FILE}, so no options are reused; the search continues with the options given now",
            dir.display()
        );
        let stored = StoredCommand { format_version: FORMAT_VERSION, runs: vec![current] };
        return Ok((args.clone(), global.clone(), Some(stored)));
    };

    let path = dir.join(COMMAND_FILE);
    let first = &stored.runs[0];
    let (mut merged, mut merged_global, first_matches) = parse(first, &path)?;
    anchor_paths(&mut merged, &first_matches, &first.cwd);
    for run in stored.runs[1..].iter().chain(std::iter::once(&current)) {
        let (mut layer, layer_global, matches) = parse(run, &path)?;
        anchor_paths(&mut layer, &matches, &run.cwd);
        overlay(&mut merged, &layer, &matches);
        if given(&matches, "backend") {
            merged_global.backend = layer_global.backend;
        }
        if given(&matches, "threads") {
            merged_global.threads = layer_global.threads;
        }
        if given(&matches, "no_pin") {
            merged_global.no_pin = layer_global.no_pin;
        }
    }

    // A program named by a relative path (`./train.sh`) is looked up from the current
    // directory, while a bare name (`python`) is looked up in PATH.
    let program = merged.eval_cmd.as_deref().and_then(|line| line.split_whitespace().next());
    let relative_program = program.is_some_and(|p| p.contains('/') && !p.starts_with('/'));
    if relative_program && std::env::current_dir().ok().as_deref() != Some(first.cwd.as_path()) {
        log::warn!(
            "the search started in {}; the relative program path {} of --eval-cmd is now read from the current directory",
            first.cwd.display(),
            program.unwrap_or_default()
        );
    }

    // Output and logging follow the run at hand.
    merged.out = None;
    merged.resume = args.resume.clone();
    merged_global.json = global.json;
    merged_global.verbose = global.verbose;
    merged_global.quiet = global.quiet;
    merged_global.argv = global.argv.clone();
    stored.runs.push(current);
    Ok((merged, merged_global, Some(stored)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &str) -> StoredRun {
        StoredRun {
            cwd: PathBuf::from("/tmp"),
            args: args.split_whitespace().map(String::from).collect(),
        }
    }

    #[test]
    fn every_search_option_is_merged() {
        let cli = Cli::command();
        let search = cli.find_subcommand("search").expect("search subcommand");
        macro_rules! names {
            ($($field:ident),*) => { vec![$(stringify!($field)),*] };
        }
        let merged: Vec<&str> = merged_options!(names);
        let globals: Vec<String> = cli
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        for arg in search.get_arguments() {
            let id = arg.get_id().as_str();
            if ["out", "resume", "help"].contains(&id) || globals.iter().any(|g| g == id) {
                continue;
            }
            assert!(
                merged.contains(&id),
                "search option `{id}` is not carried over by --resume; add it to merged_options!"
            );
        }
    }

    #[test]
    fn later_runs_override_given_options() {
        let path = Path::new("command.json");
        let (mut base, _, _) =
            parse(&run("--backend cpu search --evaluator proxy --objective min:flops_per_token --evals 8 --seed 3 --out x"), path)
                .unwrap();
        let (layer, _, matches) = parse(&run("search --resume x --evals 12"), path).unwrap();
        overlay(&mut base, &layer, &matches);
        assert_eq!(base.evals, 12);
        assert_eq!(base.seed, 3);
        assert_eq!(base.evaluator.as_deref(), Some("proxy"));
        assert_eq!(base.objectives, vec!["min:flops_per_token".to_string()]);
        let (layer, _, matches) = parse(
            &run("search --resume x --objective max:decoder_params"),
            path,
        )
        .unwrap();
        overlay(&mut base, &layer, &matches);
        assert_eq!(base.objectives, vec!["max:decoder_params".to_string()]);
        assert_eq!(base.evals, 12);
    }

    #[test]
    fn unreadable_command_names_file() {
        let err = parse(
            &run("search --no-such-option 3"),
            Path::new("/r/command.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/r/command.json") && err.contains("delete the file"),
            "{err}"
        );
        let err = parse(&run("devices"), Path::new("/r/command.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an `alphanas search` command"), "{err}");
    }
}
