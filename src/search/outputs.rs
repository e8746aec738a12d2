//! The search's results: the report, `front.csv`, `front.json` and `summary.json`.

use super::config::{FrontPoint, RoundError, SearchConfig, SearchReport};
use super::driver::Counters;
use super::journal::{self, candidate_json, EvalRecord, Settings};
use super::pareto;
use super::problem::Problem;
use crate::eval::Status;
use std::collections::BTreeMap;
use std::path::Path;

/// Assembles the report from the full history. `resumed` evaluations came from a journal.
pub(crate) fn build_report(
    problem: &Problem,
    cfg: &SearchConfig,
    history: Vec<EvalRecord>,
    resumed: usize,
    counters: Counters,
    stopped: bool,
    exhausted: bool,
) -> crate::Result<SearchReport> {
    let mut status_counts: BTreeMap<String, usize> = BTreeMap::new();
    for status in ["ok", "failed", "timeout", "infeasible"] {
        status_counts.insert(status.to_string(), 0);
    }
    for record in &history {
        *status_counts.entry(status_name(record.outcome.status).to_string()).or_default() += 1;
    }
    let ok_over_constraint = history.iter().filter(|r| r.outcome.status == Status::Ok && !problem.is_feasible_ok(r)).count();

    let points = problem.feasible_points(&history);
    let front_positions = pareto::front_indices(&points.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>());
    let front: Vec<FrontPoint> = front_positions
        .iter()
        .map(|&k| {
            let (i, v) = &points[k];
            let record = &history[*i];
            FrontPoint {
                eval: record.eval,
                objectives: problem.objectives.iter().zip(v).map(|(o, &x)| o.to_minimised(x)).collect(),
                candidate: record.candidate.clone(),
                metrics: record.outcome.metrics.clone(),
            }
        })
        .collect();

    let reference_point = match &cfg.reference_point {
        Some(r) => r.clone(),
        None => default_reference(problem, &points),
    };
    let reference_min: Vec<f64> =
        problem.objectives.iter().zip(&reference_point).map(|(o, &r)| o.to_minimised(r)).collect();
    let hypervolume = hypervolume_trace(problem, &history, &reference_min);
    let prediction_error = prediction_errors(problem, &history, cfg.q);
    let simulations_per_s = if counters.simulation_seconds > 0.0 {
        counters.simulations as f64 / counters.simulation_seconds
    } else {
        0.0
    };
    Ok(SearchReport {
        new_evaluations: history.len() - resumed,
        history,
        status_counts,
        ok_over_constraint,
        front,
        reference_point,
        hypervolume,
        simulations: counters.simulations,
        simulations_per_s,
        leaf_batches: counters.leaf_batches,
        surrogate_dispatches: counters.surrogate_dispatches,
        prediction_error,
        stopped,
        exhausted,
    })
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Failed => "failed",
        Status::Timeout => "timeout",
        Status::Infeasible => "infeasible",
    }
}

/// Each objective's worst feasible value plus 1% of its range (in objective units), or 1% of
/// the value's magnitude (at least 1e-9) when the range is zero. With no feasible point the
/// reference is all zeros and every hypervolume is 0.
fn default_reference(problem: &Problem, points: &[(usize, Vec<f64>)]) -> Vec<f64> {
    (0..problem.objectives.len())
        .map(|k| {
            if points.is_empty() {
                return 0.0;
            }
            let worst = points.iter().map(|(_, v)| v[k]).fold(f64::NEG_INFINITY, f64::max);
            let best = points.iter().map(|(_, v)| v[k]).fold(f64::INFINITY, f64::min);
            let margin = if worst > best { 0.01 * (worst - best) } else { (0.01 * worst.abs()).max(1e-9) };
            problem.objectives[k].to_minimised(worst + margin)
        })
        .collect()
}

/// Hypervolume of the feasible ok results after each evaluation, against `reference` (in
/// minimised form). The front is updated incrementally and its volume recomputed only when
/// it changes.
fn hypervolume_trace(problem: &Problem, history: &[EvalRecord], reference: &[f64]) -> Vec<f64> {
    let mut front: Vec<Vec<f64>> = Vec::new();
    let mut volume = 0.0;
    let mut trace = Vec::with_capacity(history.len());
    for record in history {
        if problem.is_feasible_ok(record) {
            if let Some(point) = problem.objective_vector(&record.outcome.metrics) {
                let covered = front.iter().any(|q| q.iter().zip(&point).all(|(a, b)| a <= b));
                if !covered {
                    front.retain(|q| !pareto::dominates(&point, q));
                    front.push(point);
                    volume = pareto::hypervolume(&front, reference);
                }
            }
        }
        trace.push(volume);
    }
    trace
}

/// Mean absolute percentage error of the surrogate's pre-evaluation predictions, per round of
/// `q` evaluations that carry a prediction. Targets known exactly before evaluation are left
/// out: their predictions are not the surrogate's.
fn prediction_errors(problem: &Problem, history: &[EvalRecord], q: usize) -> Vec<RoundError> {
    let predicted: Vec<&EvalRecord> = history
        .iter()
        .filter(|r| r.predicted.is_some() && r.outcome.status == Status::Ok)
        .collect();
    let mut rounds = Vec::new();
    for (round, chunk) in predicted.chunks(q.max(1)).enumerate() {
        let mut mape = BTreeMap::new();
        for (target, _) in problem.targets.iter().zip(&problem.exact).filter(|(_, exact)| exact.is_none()) {
            let errors: Vec<f64> = chunk
                .iter()
                .filter_map(|r| {
                    let p = r.predicted.as_ref()?.get(target)?;
                    let m = r.outcome.metrics.get(target)?;
                    (*m != 0.0).then(|| 100.0 * (p - m).abs() / m.abs())
                })
                .collect();
            if !errors.is_empty() {
                mape.insert(target.clone(), errors.iter().sum::<f64>() / errors.len() as f64);
            }
        }
        // A round without a surrogate prediction (every target exact) has nothing to report.
        if !mape.is_empty() {
            rounds.push(RoundError { round, n: chunk.len(), mape });
        }
    }
    rounds
}

/// Writes `front.csv`, `front.json` and `summary.json` into `dir`.
pub(crate) fn write_outputs(
    dir: &Path,
    settings: &Settings,
    problem: &Problem,
    report: &SearchReport,
    surrogate: Option<(String, Vec<String>)>,
    elapsed_s: f64,
    extra: Option<(String, serde_json::Value)>,
) -> crate::Result<()> {
    let names: Vec<&str> = problem.objectives.iter().map(|o| o.metric.as_str()).collect();

    let mut csv = String::from("eval");
    for name in &names {
        csv.push(',');
        csv.push_str(name);
    }
    csv.push_str(",candidate\n");
    for point in &report.front {
        csv.push_str(&point.eval.to_string());
        for v in &point.objectives {
            csv.push(',');
            csv.push_str(&v.to_string());
        }
        let json = candidate_json(&point.candidate).to_string().replace('"', "\"\"");
        csv.push_str(&format!(",\"{json}\"\n"));
    }
    journal::write_text_atomic(&dir.join("front.csv"), &csv)?;

    let front_json: Vec<serde_json::Value> = report
        .front
        .iter()
        .map(|p| {
            let objectives: serde_json::Map<String, serde_json::Value> =
                names.iter().zip(&p.objectives).map(|(n, v)| (n.to_string(), serde_json::json!(v))).collect();
            let key = match p.candidate {
                crate::space::Candidate::Arch(_) => "arch",
                crate::space::Candidate::Row { .. } => "row",
            };
            serde_json::json!({
                "eval": p.eval,
                "objectives": objectives,
                key: candidate_json(&p.candidate),
                "metrics": p.metrics,
            })
        })
        .collect();
    journal::write_json_atomic(&dir.join("front.json"), &front_json)?;

    let mut summary = serde_json::json!({
        "settings": settings,
        "evaluations": report.history.len(),
        "new_evaluations": report.new_evaluations,
        "counts": report.status_counts,
        "ok_over_constraint": report.ok_over_constraint,
        "stopped": report.stopped,
        "exhausted": report.exhausted,
        "elapsed_s": elapsed_s,
        "surrogate": surrogate.as_ref().map(|(name, _)| name),
        "surrogate_features": surrogate.as_ref().map(|(_, features)| features),
        "exact_targets": problem.exact_targets(),
        "simulations": report.simulations,
        "simulations_per_s": report.simulations_per_s,
        "leaf_batches": report.leaf_batches,
        "surrogate_dispatches": report.surrogate_dispatches,
        "front_size": report.front.len(),
        "hypervolume": {
            "objectives": names,
            "reference_point": report.reference_point,
            "after_each_eval": report.hypervolume,
        },
        "prediction_error": report.prediction_error,
    });
    if let (Some((key, value)), Some(object)) = (extra, summary.as_object_mut()) {
        object.insert(key, value);
    }
    journal::write_json_atomic(&dir.join("summary.json"), &summary)
}
