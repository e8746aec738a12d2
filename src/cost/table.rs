//! The cost-table file: what was profiled, on which device and how, the measured op latencies,
//! and the calibration once fitted. Loading checks the format version and every entry; saving
//! writes a temporary file and renames it, so a crash never leaves a half-written table.

use super::calibrate::Calibration;
use super::ops::{Mode, Op, OpKind};
use super::CostError;
use crate::arch::Dtype;
use crate::stats::TimingStats;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Version of the table format that this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The device a table was profiled on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Adapter name, or the CPU model name.
    pub name: String,
    /// `cpu`, or the wgpu backend (`vulkan`, `metal`, `dx12`, `gl`).
    pub backend: String,
    pub driver: String,
    /// `cpu`, `discrete_gpu`, `integrated_gpu`, `virtual_gpu` or `other`.
    pub device_type: String,
    /// Optional features enabled while profiling (`timestamp_query`, `shader_f16`, ...).
    #[serde(default)]
    pub features: Vec<String>,
    /// CPU threads used by the CPU backend (absent for GPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Whether each CPU worker thread was pinned to one core (absent for GPUs, and in tables
    /// written before this field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_threads: Option<bool>,
}

/// Settings the table was profiled with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileSettings {
    /// Name or path of the search space whose op shapes were profiled.
    pub space: String,
    pub modes: Vec<Mode>,
    /// Sequences per forward pass.
    pub batch: u64,
    /// Prompt length for prefill and KV-cache length for decode.
    pub seq: u64,
    /// Architectures sampled from the space to collect op shapes.
    pub architectures_sampled: usize,
    /// Largest number of distinct shapes profiled per op kind before thinning to a grid.
    pub max_shapes_per_op: usize,
    pub warmup: usize,
    pub runs: usize,
    pub quick: bool,
    pub seed: u64,
    /// Rounds over the whole shape list, each entry being the median of its rounds (see
    /// `profile_table`). Tables written before this field existed were profiled in one round.
    #[serde(default = "one_round")]
    pub rounds: usize,
}

/// Maximum op timing a table may contain, in nanoseconds (about 11.6 days). Sums of many such
/// entries stay finite, and no real op runs for longer.
pub const MAX_TIMING_NS: f64 = 1e15;

fn one_round() -> usize {
    1
}

/// One profiled op: its shape and the timing statistics in nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub op: OpKind,
    pub shape: BTreeMap<String, u64>,
    pub median_ns: f64,
    pub p10_ns: f64,
    pub p90_ns: f64,
    pub runs: usize,
    /// Median of each round when the table was profiled in several rounds. `median_ns` is then
    /// their median, `p10_ns` the lowest p10 and `p90_ns` the highest p90 of the rounds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub round_medians_ns: Vec<f64>,
}

impl Entry {
    pub fn new(op: &Op, stats: &TimingStats) -> Entry {
        Entry {
            op: op.kind,
            shape: op.named_dims(),
            median_ns: stats.median_ns,
            p10_ns: stats.p10_ns,
            p90_ns: stats.p90_ns,
            runs: stats.runs,
            round_medians_ns: Vec::new(),
        }
    }

    /// Rounds of timing behind this entry.
    pub fn rounds(&self) -> usize {
        self.round_medians_ns.len().max(1)
    }

    /// Returns the median of `round_medians_ns`, which `median_ns` must equal when the entry has
    /// rounds.
    fn median_of_rounds(&self) -> f64 {
        let mut sorted = self.round_medians_ns.clone();
        sorted.sort_by(f64::total_cmp);
        crate::stats::percentile_sorted(&sorted, 0.5)
    }

    /// Adds one more round of timing and recomputes the combined statistics.
    fn add_round(&mut self, stats: &TimingStats) {
        if self.round_medians_ns.is_empty() {
            self.round_medians_ns.push(self.median_ns);
        }
        self.round_medians_ns.push(stats.median_ns);
        self.median_ns = self.median_of_rounds();
        self.p10_ns = self.p10_ns.min(stats.p10_ns);
        self.p90_ns = self.p90_ns.max(stats.p90_ns);
        self.runs += stats.runs;
    }
}

/// A device's cost table. See `docs/COST_TABLES.md` for the file format.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CostTable {
    pub format_version: u32,
    pub device: DeviceInfo,
    pub dtype: Dtype,
    /// Creation time, UTC, RFC 3339.
    pub created: String,
    pub alphanas_version: String,
    pub settings: ProfileSettings,
    /// Median time of the smallest dispatch the timer can issue, in nanoseconds.
    pub dispatch_overhead_ns: f64,
    /// Whether entry timings already contain the dispatch overhead. Wall-clock CPU timings do;
    /// GPU timestamp timings do not, so prediction adds the overhead once per op for them.
    pub entries_include_overhead: bool,
    pub entries: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Entries parsed into ops and indexed, rebuilt by [`CostTable::reindex`].
    #[serde(skip)]
    index: HashMap<Op, usize>,
    /// Path the table was loaded from or last saved to, shown in messages.
    #[serde(skip)]
    path: String,
}

impl CostTable {
    /// Starts an empty table for `device` and `dtype` with the given settings.
    pub fn new(device: DeviceInfo, dtype: Dtype, settings: ProfileSettings, dispatch_overhead_ns: f64, entries_include_overhead: bool) -> CostTable {
        CostTable {
            format_version: FORMAT_VERSION,
            device,
            dtype,
            created: utc_now_rfc3339(),
            alphanas_version: env!("CARGO_PKG_VERSION").to_string(),
            settings,
            dispatch_overhead_ns,
            entries_include_overhead,
            entries: Vec::new(),
            calibration: None,
            index: HashMap::new(),
            path: "<memory>".into(),
        }
    }

    /// Reads and checks a table file: valid JSON, the expected `format_version`, well-formed
    /// entries and settings.
    pub fn load(path: &Path) -> Result<CostTable, CostError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CostError::Io { action: "read", path: shown.clone(), source })?;
        CostTable::from_json(&text, &shown)
    }

    /// Parses table JSON; `path` names the source in messages.
    pub fn from_json(text: &str, path: &str) -> Result<CostTable, CostError> {
        let parse_error = |e: serde_json::Error| CostError::Parse {
            path: path.to_string(),
            location: if e.line() > 0 { format!(" at line {} column {}", e.line(), e.column()) } else { String::new() },
            // serde_json ends its message with the position, which `location` already gives.
            message: {
                let text = e.to_string();
                let position = format!(" at line {} column {}", e.line(), e.column());
                text.strip_suffix(&position).unwrap_or(&text).to_string()
            },
        };

        // Check the version before the schema, so a future format gets the version message and
        // not a confusing field error.
        let value: serde_json::Value = serde_json::from_str(text).map_err(parse_error)?;
        let version = value.get("format_version");
        if version.and_then(|v| v.as_u64()) != Some(FORMAT_VERSION as u64) {
            return Err(CostError::Version {
                path: path.to_string(),
                found: version.map_or_else(|| "(missing)".to_string(), |v| v.to_string()),
                expected: FORMAT_VERSION,
            });
        }

        let table: Result<CostTable, _> = serde_path_to_error::deserialize(value);
        let mut table = table.map_err(|e| CostError::Parse {
            path: path.to_string(),
            location: format!(" at `{}`", e.path()),
            message: e.into_inner().to_string(),
        })?;
        table.path = path.to_string();
        table.check()?;
        table.reindex()?;
        Ok(table)
    }

    /// Checks settings and timing values that serde cannot.
    fn check(&self) -> Result<(), CostError> {
        let invalid = |message: String| CostError::Parse { path: self.path.clone(), location: String::new(), message };
        if self.settings.batch == 0 || self.settings.seq == 0 {
            return Err(invalid(format!("settings.batch ({}) and settings.seq ({}) must be at least 1", self.settings.batch, self.settings.seq)));
        }
        if self.settings.modes.is_empty() {
            return Err(invalid("settings.modes is empty; it lists prefill, decode or both".into()));
        }
        if !matches!(self.dtype, Dtype::F32 | Dtype::F16) {
            return Err(invalid(format!("dtype ({}) must be f32 or f16, the element types that `alphanas profile` times", self.dtype)));
        }
        if !(self.dispatch_overhead_ns.is_finite() && self.dispatch_overhead_ns >= 0.0 && self.dispatch_overhead_ns <= MAX_TIMING_NS) {
            return Err(invalid(format!(
                "dispatch_overhead_ns ({}) must be a finite non-negative number of at most {MAX_TIMING_NS:e} ns",
                self.dispatch_overhead_ns
            )));
        }
        for (i, entry) in self.entries.iter().enumerate() {
            let times = [entry.median_ns, entry.p10_ns, entry.p90_ns];
            if times.iter().chain(&entry.round_medians_ns).any(|t| !(t.is_finite() && *t > 0.0 && *t <= MAX_TIMING_NS)) {
                return Err(invalid(format!(
                    "entries[{i}] ({}) has a timing that is not a positive finite number of at most {MAX_TIMING_NS:e} ns (11.6 days)",
                    entry.op
                )));
            }
            if entry.runs == 0 {
                return Err(invalid(format!("entries[{i}] ({}) has runs 0; every entry comes from at least one timed run", entry.op)));
            }
            // Percentiles interpolate between samples, so rounding errors may put them slightly out
            // of order.
            let slack = 1.0 + 1e-9;
            if !(entry.p10_ns <= entry.median_ns * slack && entry.median_ns <= entry.p90_ns * slack) {
                return Err(invalid(format!(
                    "entries[{i}] ({}) needs p10_ns ≤ median_ns ≤ p90_ns, but has {}, {} and {}",
                    entry.op, entry.p10_ns, entry.median_ns, entry.p90_ns
                )));
            }
            if entry.round_medians_ns.len() >= 2 {
                let expected = entry.median_of_rounds();
                if (entry.median_ns - expected).abs() > 1e-9 * expected {
                    return Err(invalid(format!(
                        "entries[{i}] ({}) has median_ns {} but the median of its round_medians_ns is {expected}; they must agree",
                        entry.op, entry.median_ns
                    )));
                }
            }
        }
        Ok(())
    }

    /// Fails unless the table has entries to predict from. A table is saved empty when profiling
    /// stops before its first shape, and such a file can still be continued by `profile`.
    pub fn require_entries(&self) -> Result<(), CostError> {
        if self.entries.is_empty() {
            return Err(CostError::Invalid(format!(
                "cost table {} has no entries, so it predicts nothing; profile into it with `alphanas profile --out {}` until it finishes",
                self.path, self.path
            )));
        }
        Ok(())
    }

    /// Rebuilds the shape index after entries were added or loaded. Fails on a malformed
    /// shape or a duplicate entry.
    pub fn reindex(&mut self) -> Result<(), CostError> {
        let mut index = HashMap::with_capacity(self.entries.len());
        for (i, entry) in self.entries.iter().enumerate() {
            let op = Op::from_named(entry.op, &entry.shape).map_err(|message| CostError::Parse {
                path: self.path.clone(),
                location: format!(" at `entries[{i}].shape`"),
                message,
            })?;
            if index.insert(op.clone(), i).is_some() {
                return Err(CostError::Parse {
                    path: self.path.clone(),
                    location: format!(" at `entries[{i}]`"),
                    message: format!("duplicate entry for {op}"),
                });
            }
        }
        self.index = index;
        Ok(())
    }

    /// Path the table was loaded from or last saved to (`<memory>` otherwise).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Fails unless the table was profiled for `requested`.
    pub fn require_dtype(&self, requested: Dtype) -> Result<(), CostError> {
        if self.dtype != requested {
            return Err(CostError::Dtype { path: self.path.clone(), found: self.dtype, requested });
        }
        Ok(())
    }

    /// Returns the measured entry for exactly this op, if profiled.
    pub fn lookup(&self, op: &Op) -> Option<&Entry> {
        self.index.get(op).map(|&i| &self.entries[i])
    }

    /// Adds a measured entry, replacing an earlier one of the same shape.
    pub fn insert(&mut self, op: &Op, stats: &TimingStats) {
        let entry = Entry::new(op, stats);
        match self.index.get(op) {
            Some(&i) => self.entries[i] = entry,
            None => {
                self.index.insert(op.clone(), self.entries.len());
                self.entries.push(entry);
            }
        }
    }

    /// Adds a round of timing to the entry of `op`, or inserts the entry when there is none.
    pub fn insert_round(&mut self, op: &Op, stats: &TimingStats) {
        match self.index.get(op) {
            Some(&i) => self.entries[i].add_round(stats),
            None => self.insert(op, stats),
        }
    }

    /// Returns how well the rounds of the table agree: the share of rounds, over every entry
    /// timed in two or more, whose median lies within ±`tolerance` of the entry's median, or
    /// `None` when no entry has two rounds. A machine running at a steady speed gives nearly 1.
    /// The share of whole models that the table predicts within the same tolerance is unlikely
    /// to be higher.
    pub fn round_agreement(&self, tolerance: f64) -> Option<f64> {
        let (mut within, mut total) = (0usize, 0usize);
        for entry in self.entries.iter().filter(|e| e.round_medians_ns.len() >= 2) {
            total += entry.round_medians_ns.len();
            within += entry.round_medians_ns.iter().filter(|&&t| (t / entry.median_ns - 1.0).abs() <= tolerance).count();
        }
        (total > 0).then(|| within as f64 / total as f64)
    }

    /// Entries of one op kind as parsed ops with their median times.
    pub fn entries_of(&self, kind: OpKind) -> Vec<(Op, f64)> {
        let mut out: Vec<(Op, f64)> = self
            .index
            .iter()
            .filter(|(op, _)| op.kind == kind)
            .map(|(op, &i)| (op.clone(), self.entries[i].median_ns))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Writes the table atomically: a temporary file beside `path`, then a rename.
    pub fn save(&mut self, path: &Path) -> Result<(), CostError> {
        let shown = path.display().to_string();
        let io_error = |source| CostError::Io { action: "write", path: shown.clone(), source };
        let text = serde_json::to_string_pretty(self).expect("a cost table serialises to JSON");

        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "table.json".into());
        let temp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Some(file) = crate::error::file_in_the_way(parent) {
                return Err(CostError::Invalid(format!("cannot write {shown}: {} is a file, not a folder; choose another --out", file.display())));
            }
            std::fs::create_dir_all(parent).map_err(io_error)?;
        }
        std::fs::write(&temp, text.as_bytes()).map_err(io_error)?;
        std::fs::rename(&temp, path).map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            io_error(e)
        })?;
        self.path = shown;
        Ok(())
    }
}

/// Formats the current time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    format_rfc3339(secs)
}

/// Formats seconds since the Unix epoch as an RFC 3339 UTC timestamp. The date conversion is
/// the proleptic Gregorian days-to-civil algorithm published by Howard Hinnant
/// ("chrono-Compatible Low-Level Date Algorithms").
fn format_rfc3339(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs_of_day = unix_secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3600,
        (secs_of_day / 60) % 60,
        secs_of_day % 60
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn test_settings() -> ProfileSettings {
        ProfileSettings {
            space: "test".into(),
            modes: vec![Mode::Prefill, Mode::Decode],
            batch: 1,
            seq: 16,
            architectures_sampled: 0,
            max_shapes_per_op: 100,
            warmup: 1,
            runs: 3,
            quick: false,
            seed: 0,
            rounds: 1,
        }
    }

    pub(crate) fn test_device() -> DeviceInfo {
        DeviceInfo {
            name: "test cpu".into(),
            backend: "cpu".into(),
            driver: String::new(),
            device_type: "cpu".into(),
            features: vec![],
            threads: Some(1),
            pinned_threads: Some(false),
        }
    }

    fn stats(ns: f64) -> TimingStats {
        TimingStats { median_ns: ns, p10_ns: ns * 0.9, p90_ns: ns * 1.1, runs: 3 }
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_796_346_061), "2026-12-04T01:01:01Z");
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let mut table = CostTable::new(test_device(), Dtype::F32, test_settings(), 100.0, true);
        table.insert(&Op::matmul(16, 64, 32), &stats(1000.0));
        table.insert(&Op::rows_cols(OpKind::Rmsnorm, 16, 32), &stats(50.0));
        table.save(&path).unwrap();

        let loaded = CostTable::load(&path).unwrap();
        assert_eq!(loaded.entries, table.entries);
        assert_eq!(loaded.lookup(&Op::matmul(16, 64, 32)).unwrap().median_ns, 1000.0);
        assert!(loaded.lookup(&Op::matmul(16, 64, 33)).is_none());
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn insert_replaces_same_shape() {
        let mut table = CostTable::new(test_device(), Dtype::F32, test_settings(), 0.0, true);
        table.insert(&Op::matmul(1, 2, 3), &stats(10.0));
        table.insert(&Op::matmul(1, 2, 3), &stats(20.0));
        assert_eq!(table.entries.len(), 1);
        assert_eq!(table.entries[0].median_ns, 20.0);
    }

    #[test]
    fn round_agreement_counts_rounds_near_the_median() {
        let mut table = CostTable::new(test_device(), Dtype::F32, test_settings(), 0.0, true);
        table.insert(&Op::matmul(1, 2, 3), &stats(10.0));
        assert_eq!(table.round_agreement(0.1), None, "one round has nothing to agree with");
        // Rounds 100, 105 and 130: the median is 105, and 130 lies 24% above it.
        table.insert(&Op::matmul(4, 5, 6), &stats(100.0));
        table.insert_round(&Op::matmul(4, 5, 6), &stats(105.0));
        table.insert_round(&Op::matmul(4, 5, 6), &stats(130.0));
        assert_eq!(table.round_agreement(0.1), Some(2.0 / 3.0));
        assert_eq!(table.round_agreement(0.25), Some(1.0));
    }

    #[test]
    fn duplicate_entries_rejected() {
        let mut table = CostTable::new(test_device(), Dtype::F32, test_settings(), 0.0, true);
        table.insert(&Op::matmul(1, 2, 3), &stats(10.0));
        let mut value = serde_json::to_value(&table).unwrap();
        let entry = value["entries"][0].clone();
        value["entries"].as_array_mut().unwrap().push(entry);
        let err = CostTable::from_json(&value.to_string(), "t.json").unwrap_err().to_string();
        assert!(err.contains("duplicate entry for matmul(m=1, n=2, k=3)"), "{err}");
    }
}
