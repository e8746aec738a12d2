//! The search journal: `history.jsonl` (one line per evaluation, appended and flushed as
//! each result arrives) and `settings.json` (what a resumed search must agree with).

use super::objective::{Constraint, Objective};
use crate::eval::{EvalOutcome, Status};
use crate::space::{Candidate, SearchSpace};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One finished evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRecord {
    /// Position in the history, from 0.
    pub eval: usize,
    /// What proposed the candidate: `initial`, `mcts`, `random`, `evolution` or `local`.
    pub source: String,
    /// The candidate's choice sequence in its space.
    pub choices: Vec<u32>,
    pub candidate: Candidate,
    pub outcome: EvalOutcome,
    /// The surrogate's mean prediction per target, made before the evaluation, when a
    /// surrogate proposed the candidate.
    pub predicted: Option<BTreeMap<String, f64>>,
}

/// One line of `history.jsonl`. Field order is the order written.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    eval: usize,
    source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    arch: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    row: Option<serde_json::Map<String, serde_json::Value>>,
    choices: Vec<u32>,
    /// Finite metric values; `null` from an older build is read as a missing metric.
    metrics: BTreeMap<String, Option<f64>>,
    status: Status,
    elapsed_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    predicted: Option<BTreeMap<String, f64>>,
}

/// The JSON form of a candidate: the architecture object, or the row's decision values.
pub fn candidate_json(candidate: &Candidate) -> serde_json::Value {
    match candidate {
        Candidate::Arch(arch) => serde_json::to_value(arch).unwrap_or(serde_json::Value::Null),
        Candidate::Row { values, .. } => serde_json::Value::Object(row_json(values)),
    }
}

fn row_json(values: &[(String, String)]) -> serde_json::Map<String, serde_json::Value> {
    values.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect()
}

fn to_line(record: &EvalRecord) -> Line {
    let (arch, row) = match &record.candidate {
        Candidate::Arch(a) => (Some(serde_json::to_value(a).unwrap_or(serde_json::Value::Null)), None),
        Candidate::Row { values, .. } => (None, Some(row_json(values))),
    };
    Line {
        eval: record.eval,
        source: record.source.clone(),
        arch,
        row,
        choices: record.choices.clone(),
        metrics: record.outcome.metrics.iter().filter(|(_, v)| v.is_finite()).map(|(k, &v)| (k.clone(), Some(v))).collect(),
        status: record.outcome.status,
        elapsed_s: record.outcome.elapsed_s,
        error: record.outcome.error.clone(),
        predicted: record.predicted.clone(),
    }
}

/// Appends records to `history.jsonl`, syncing each line to disk before returning.
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Opens `dir/history.jsonl` for appending, creating it when missing.
    pub fn open(dir: &Path) -> crate::Result<Self> {
        let path = dir.join("history.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| crate::Error::io(format!("cannot open {}", path.display()), e))?;
        Ok(Journal { path, file })
    }

    /// Writes one record as a line and syncs it, so a crash loses at most the line in flight.
    pub fn append(&mut self, record: &EvalRecord) -> crate::Result<()> {
        let mut text = serde_json::to_string(&to_line(record))
            .map_err(|e| crate::Error::Other(format!("cannot encode evaluation {}: {e}", record.eval)))?;
        text.push('\n');
        let context = || format!("cannot write {}", self.path.display());
        self.file.write_all(text.as_bytes()).map_err(|e| crate::Error::io(context(), e))?;
        self.file.sync_data().map_err(|e| crate::Error::io(context(), e))
    }
}

/// Reads `dir/history.jsonl` back into records for `space`.
///
/// A last line that does not parse (a write cut short by a crash or SIGKILL) is dropped with
/// a warning and removed from the file, so later appends start on a clean line. A gap in the
/// `eval` numbering (a line deleted by hand) is closed with a warning, and the records are
/// numbered in file order. Any other unreadable line, an `eval` number that repeats or goes
/// back, or a choice sequence that is not a complete candidate of `space` is an error naming
/// the line number.
pub fn load_history(dir: &Path, space: &dyn SearchSpace) -> crate::Result<Vec<EvalRecord>> {
    let path = dir.join("history.jsonl");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| crate::Error::io(format!("cannot read {}", path.display()), e))?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut records = Vec::with_capacity(lines.len());
    let mut kept_bytes = 0usize;
    let mut renumbered = false;
    for (i, raw) in lines.iter().enumerate() {
        let number = i + 1;
        let content = raw.trim_end_matches(['\n', '\r']);
        if content.trim().is_empty() {
            kept_bytes += raw.len();
            continue;
        }
        let mut line: Line = match serde_json::from_str(content) {
            Ok(line) => line,
            Err(e) if i + 1 == lines.len() => {
                log::warn!(
                    "dropping the unreadable last line {number} of {} (an interrupted write): {e}",
                    path.display()
                );
                truncate(&path, kept_bytes)?;
                break;
            }
            Err(e) => {
                return Err(crate::Error::Invalid(format!(
                    "{} line {number} is not a valid evaluation record ({e}); fix or delete that line, then resume",
                    path.display()
                )));
            }
        };
        if line.eval > records.len() {
            if !renumbered {
                log::warn!(
                    "{} line {number} has eval {} where {} was expected, as after a deleted line; the records from there on are numbered in file order",
                    path.display(),
                    line.eval,
                    records.len()
                );
                renumbered = true;
            }
            line.eval = records.len();
        }
        if line.eval != records.len() {
            return Err(crate::Error::Invalid(format!(
                "{} line {number} has eval {} but {} was expected; the journal is out of order, as when two searches wrote to it at once. Keep each eval number once, in order, then resume",
                path.display(),
                line.eval,
                records.len()
            )));
        }
        let candidate = complete_candidate(space, &line.choices).ok_or_else(|| {
            crate::Error::Invalid(format!(
                "{} line {number}: choices {:?} are not a complete candidate of space `{}`; resume with the space the search started with",
                path.display(),
                line.choices,
                space.name()
            ))
        })?;
        let outcome = EvalOutcome {
            status: line.status,
            // Older builds wrote a NaN metric as null; such a value is left out.
            metrics: line.metrics.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect(),
            error: line.error,
            elapsed_s: line.elapsed_s,
        };
        records.push(EvalRecord {
            eval: line.eval,
            source: line.source,
            choices: line.choices,
            candidate,
            outcome,
            predicted: line.predicted,
        });
        kept_bytes += raw.len();
    }
    Ok(records)
}

fn truncate(path: &Path, len: usize) -> crate::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| crate::Error::io(format!("cannot open {}", path.display()), e))?;
    file.set_len(len as u64)
        .map_err(|e| crate::Error::io(format!("cannot truncate {}", path.display()), e))
}

/// The candidate of `choices` when they walk `space` validly to a complete candidate.
pub fn complete_candidate(space: &dyn SearchSpace, choices: &[u32]) -> Option<Candidate> {
    for depth in 0..choices.len() {
        if !space.valid_choices(&choices[..depth]).contains(&choices[depth]) {
            return None;
        }
    }
    if space.next_decision(choices).is_some() {
        return None;
    }
    Some(space.candidate(choices))
}

/// What a resumed search must share with the search that wrote the directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub format_version: u32,
    pub space: String,
    /// Number of candidates in the space, as a decimal string.
    pub space_size: String,
    /// [`SearchSpace::definition_digest`] of the space. Empty in directories written by older
    /// builds, where it is not checked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub space_digest: String,
    pub evaluator: String,
    pub objectives: Vec<String>,
    pub constraints: Vec<String>,
    pub strategy: String,
    pub seed: u64,
    /// Names of the space's features in order, which change when its decisions or their
    /// order change. Empty in directories written by older builds, where it is not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// The evaluator's settings that change its metrics (see
    /// [`Evaluator::settings`](crate::eval::Evaluator::settings)). Absent in directories
    /// written by older builds, where it is not checked.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evaluator_settings: BTreeMap<String, String>,
}

impl Settings {
    /// Checks that a search with `self` may continue the one recorded as `stored`.
    pub fn check_resume(&self, stored: &Settings, dir: &Path) -> crate::Result<()> {
        let mismatch = |what: &str, old: String, new: String| {
            crate::Error::Invalid(format!(
                "cannot resume {}: it was searched with {what} {old}, not {new} ({} lists its settings); leave out the options that differ, because `alphanas search --resume {}` alone reuses them, or use a new --out directory",
                dir.display(),
                dir.join("settings.json").display(),
                dir.display()
            ))
        };
        let list = |items: &[String]| if items.is_empty() { "(none)".to_string() } else { items.join(", ") };
        if stored.space != self.space {
            return Err(mismatch("space", stored.space.clone(), self.space.clone()));
        }
        if stored.space_size != self.space_size {
            let size = |s: &Settings| format!("{} of {} architectures", s.space, s.space_size);
            return Err(mismatch("space", size(stored), format!("{} (the space's definition changed)", size(self))));
        }
        if !stored.features.is_empty() && stored.features != self.features {
            let position = stored.features.iter().zip(&self.features).position(|(a, b)| a != b);
            let difference = match position {
                Some(i) => format!("input {i} is `{}`, not `{}`", stored.features[i], self.features[i]),
                None => format!("{} inputs, not {}", stored.features.len(), self.features.len()),
            };
            return Err(crate::Error::Invalid(format!(
                "cannot resume {}: the space's decisions differ from those the search started with ({difference}); give the original --decisions in their original order, or leave them out",
                dir.display()
            )));
        }
        if !stored.space_digest.is_empty() && stored.space_digest != self.space_digest {
            return Err(crate::Error::Invalid(format!(
                "cannot resume {}: the definition of space {} changed since the search started (its choices, fixed values, constraints or table cells differ, digest {} instead of {}); restore the original space file or table, or use a new --out directory",
                dir.display(),
                self.space,
                self.space_digest,
                stored.space_digest
            )));
        }
        if stored.evaluator != self.evaluator {
            return Err(mismatch("evaluator", stored.evaluator.clone(), self.evaluator.clone()));
        }
        if !stored.evaluator_settings.is_empty() && stored.evaluator_settings != self.evaluator_settings {
            let show = |settings: &BTreeMap<String, String>, keys: &[&String]| {
                keys.iter()
                    .map(|k| format!("{k} {}", settings.get(*k).map(String::as_str).unwrap_or("(unset)")))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut keys: Vec<&String> = stored.evaluator_settings.keys().chain(self.evaluator_settings.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.retain(|k| stored.evaluator_settings.get(*k) != self.evaluator_settings.get(*k));
            return Err(mismatch(
                "evaluator settings",
                show(&stored.evaluator_settings, &keys),
                show(&self.evaluator_settings, &keys),
            ));
        }
        if stored.objectives != self.objectives {
            return Err(mismatch("objectives", list(&stored.objectives), list(&self.objectives)));
        }
        if stored.constraints != self.constraints {
            return Err(mismatch("constraints", list(&stored.constraints), list(&self.constraints)));
        }
        if stored.strategy != self.strategy || stored.seed != self.seed {
            log::info!(
                "resuming with strategy {} and seed {} (the search started with {} and {})",
                self.strategy,
                self.seed,
                stored.strategy,
                stored.seed
            );
        }
        Ok(())
    }

    /// Builds the settings of a search.
    pub fn new(
        space: &dyn SearchSpace,
        evaluator: &dyn crate::eval::Evaluator,
        objectives: &[Objective],
        constraints: &[Constraint],
        strategy: &str,
        seed: u64,
    ) -> Self {
        Settings {
            format_version: 1,
            space: space.name().to_string(),
            space_size: space.count().to_string(),
            space_digest: space.definition_digest(),
            evaluator: evaluator.name().to_string(),
            objectives: objectives.iter().map(|o| o.to_string()).collect(),
            constraints: constraints.iter().map(|c| c.to_string()).collect(),
            strategy: strategy.to_string(),
            seed,
            features: space.feature_names(),
            evaluator_settings: evaluator.settings(),
        }
    }
}

/// Writes `value` as pretty JSON to `path` through a temporary file and a rename, so readers
/// never see half a file.
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> crate::Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| crate::Error::Other(format!("cannot encode {}: {e}", path.display())))?;
    write_text_atomic(path, &text)
}

/// Writes `text` to `path` through a temporary file and a rename.
pub fn write_text_atomic(path: &Path, text: &str) -> crate::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| crate::Error::io(format!("cannot write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| crate::Error::io(format!("cannot write {}", path.display()), e))
}
