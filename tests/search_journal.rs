//! The journal, resume and output files of a search run.

#[path = "search_common.rs"]
mod common;

use alphanas::search::{run_search, Constraint, NoHooks, Objective, SearchConfig, Strategy, SurrogateKind};
use alphanas::space::SearchSpace;
use common::{BowlEvaluator, GridSpace};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

fn config(dir: &Path, evals: usize, resume: bool) -> SearchConfig {
    SearchConfig {
        strategy: Strategy::Mcts,
        objectives: vec![Objective::min("loss"), Objective::min("cost")],
        evals,
        batch: 16,
        q: 3,
        initial: 6,
        seed: 11,
        simulations_per_round: 128,
        out_dir: Some(dir.to_path_buf()),
        resume,
        surrogate: SurrogateKind::Ridge,
        ..SearchConfig::default()
    }
}

fn problem() -> (Arc<dyn SearchSpace>, Arc<BowlEvaluator>) {
    (Arc::new(GridSpace { width: 3, choices: 6 }), Arc::new(BowlEvaluator::new(vec![1.0, 4.0, 2.0])))
}

fn history_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("history.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn outputs_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let (space, evaluator) = problem();
    let report = run_search(space, evaluator, &config(dir.path(), 12, false), &mut NoHooks).unwrap();

    let lines = history_lines(dir.path());
    assert_eq!(lines.len(), 12);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["eval"], i);
        assert_eq!(line["status"], "ok");
        assert!(line["row"].is_object(), "table-like candidates are written under `row`");
        assert!(line["metrics"]["loss"].is_number());
        assert!(line["elapsed_s"].is_number());
    }
    assert_eq!(lines[0]["source"], "initial");
    assert_eq!(lines[11]["source"], "mcts");

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["counts"]["ok"], 12);
    assert_eq!(summary["hypervolume"]["after_each_eval"].as_array().unwrap().len(), 12);
    assert_eq!(summary["hypervolume"]["reference_point"].as_array().unwrap().len(), 2);
    assert_eq!(summary["surrogate_dispatches"], summary["leaf_batches"]);
    assert!(summary["simulations"].as_u64().unwrap() > 0);
    assert!(summary["prediction_error"].as_array().unwrap().iter().all(|r| r["mape"]["loss"].is_number()));

    let front: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("front.json")).unwrap()).unwrap();
    assert_eq!(front.as_array().unwrap().len(), report.front.len());
    let csv = std::fs::read_to_string(dir.path().join("front.csv")).unwrap();
    assert!(csv.starts_with("eval,loss,cost,candidate\n"));
    assert_eq!(csv.lines().count(), 1 + report.front.len());
}

#[test]
fn resume_drops_truncated_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let (space, evaluator) = problem();
    run_search(space.clone(), evaluator.clone(), &config(dir.path(), 9, false), &mut NoHooks).unwrap();
    let path = dir.path().join("history.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Cut the last line in half, as a SIGKILL during the write would.
    let last = lines[8];
    let cut = format!("{}\n{}", lines[..8].join("\n"), &last[..last.len() / 2]);
    std::fs::write(&path, cut).unwrap();

    let evaluator2 = Arc::new(BowlEvaluator::new(vec![1.0, 4.0, 2.0]));
    let report = run_search(space, evaluator2.clone(), &config(dir.path(), 15, true), &mut NoHooks).unwrap();
    assert_eq!(report.history.len(), 15);
    assert_eq!(report.new_evaluations, 7);
    assert_eq!(evaluator2.calls.load(std::sync::atomic::Ordering::SeqCst), 7);
    let lines = history_lines(dir.path());
    assert_eq!(lines.len(), 15);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["eval"], i);
    }
    let distinct: HashSet<String> = lines.iter().map(|l| l["choices"].to_string()).collect();
    assert_eq!(distinct.len(), 15, "no candidate is evaluated twice across the resume");
}

#[test]
fn resume_rejects_corrupt_middle_line() {
    let dir = tempfile::tempdir().unwrap();
    let (space, evaluator) = problem();
    run_search(space.clone(), evaluator.clone(), &config(dir.path(), 6, false), &mut NoHooks).unwrap();
    let path = dir.path().join("history.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[2] = "{\"eval\": 2, garbage".into();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let err = run_search(space, evaluator, &config(dir.path(), 10, true), &mut NoHooks).unwrap_err().to_string();
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("not a valid evaluation record"), "{err}");
}

#[test]
fn resume_rejects_other_objectives() {
    let dir = tempfile::tempdir().unwrap();
    let (space, evaluator) = problem();
    run_search(space.clone(), evaluator.clone(), &config(dir.path(), 6, false), &mut NoHooks).unwrap();
    let mut cfg = config(dir.path(), 10, true);
    cfg.objectives = vec![Objective::min("loss")];
    let err = run_search(space, evaluator, &cfg, &mut NoHooks).unwrap_err().to_string();
    assert!(err.contains("cannot resume"), "{err}");
    assert!(err.contains("objectives"), "{err}");
    assert!(err.contains("not min:loss ("), "the new objectives in their CLI form: {err}");
    assert!(!err.contains('['), "no debug formatting: {err}");
}

#[test]
fn resume_rejects_other_constraints() {
    let dir = tempfile::tempdir().unwrap();
    let (space, evaluator) = problem();
    run_search(space.clone(), evaluator.clone(), &config(dir.path(), 6, false), &mut NoHooks).unwrap();
    let mut cfg = config(dir.path(), 10, true);
    cfg.constraints = vec![Constraint::parse("cost<=5").unwrap()];
    let err = run_search(space, evaluator, &cfg, &mut NoHooks).unwrap_err().to_string();
    assert!(err.contains("constraints (none), not cost<=5"), "{err}");
    assert!(err.contains("settings.json"), "{err}");
}

#[test]
fn new_search_refuses_used_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (space, evaluator) = problem();
    run_search(space.clone(), evaluator.clone(), &config(dir.path(), 4, false), &mut NoHooks).unwrap();
    let err = run_search(space, evaluator, &config(dir.path(), 4, false), &mut NoHooks).unwrap_err().to_string();
    assert!(err.contains("already contains a search"), "{err}");
    assert!(err.contains("--resume"), "{err}");
}

#[test]
fn resume_without_journal_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (space, evaluator) = problem();
    let err = run_search(space, evaluator, &config(dir.path(), 4, true), &mut NoHooks).unwrap_err().to_string();
    assert!(err.contains("cannot resume"), "{err}");
    assert!(err.contains("settings.json"), "{err}");
}

#[test]
fn deleted_line_is_renumbered() {
    let dir = tempfile::tempdir().unwrap();
    let (space, evaluator) = problem();
    run_search(space.clone(), evaluator.clone(), &config(dir.path(), 6, false), &mut NoHooks).unwrap();
    let path = dir.path().join("history.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let deleted = lines.remove(2).to_string();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let report = run_search(space, evaluator, &config(dir.path(), 8, true), &mut NoHooks).unwrap();
    assert_eq!(report.history.len(), 8);
    let numbers: Vec<usize> = report.history.iter().map(|r| r.eval).collect();
    assert_eq!(numbers, (0..8).collect::<Vec<_>>());
    // The deleted candidate may be proposed again, but nothing else repeats.
    let mut choices: Vec<&Vec<u32>> = report.history.iter().map(|r| &r.choices).collect();
    choices.sort();
    choices.dedup();
    assert_eq!(choices.len(), 8, "a candidate was evaluated twice ({deleted})");
}
