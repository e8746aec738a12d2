//! Hardware cost tables: op latencies measured once per device, whole-model latency predicted
//! from them, and a correction fitted to measured whole-model latencies.
//!
//! The approach follows nn-Meter (Zhang et al., MobiSys 2021: per-kernel latency tables summed
//! over a model's kernels) and HAT (Wang et al., ACL 2020: a latency predictor checked against
//! measured models).
//!
//! - [`ops`]: the op graph of a forward pass (`model_ops`) and the cost terms of each op.
//! - [`table`]: the [`CostTable`] file format, loading with checks, atomic saving.
//! - [`predict`]: summing op latencies, interpolating shapes missing from the table, and flagging
//!   extrapolation.
//! - [`calibrate`]: the per-mode linear correction fitted to measured models.
//! - [`profile`]: which shapes to profile for a set of architectures, and the profiling loop.
//! - [`timer`]: the [`OpTimer`] trait that times one op on a device; [`cpu_timer`] and
//!   [`gpu_timer`] implement it for the CPU kernels and the WGSL kernels.
//!
//! Prediction never opens a device: a table carries everything it needs, so a table profiled on
//! one machine predicts on any other.

pub mod calibrate;
pub mod cpu_timer;
pub mod gpu_timer;
pub mod ops;
pub mod predict;
pub mod profile;
pub mod table;
pub mod timer;

pub use calibrate::{Calibration, LinearFit, Measurement};
pub use ops::{model_ops, Mode, ModelOp, Op, OpKind};
pub use predict::{OpPrediction, Prediction};
pub use profile::{plan_shapes, profile_table, ProfileOptions, ProfilePlan};
pub use table::{CostTable, DeviceInfo, Entry, ProfileSettings, FORMAT_VERSION};
pub use timer::OpTimer;

/// Errors of cost-table loading, profiling, prediction and calibration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CostError {
    /// The table file could not be read or written.
    #[error("cannot {action} cost table {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The table file is not valid JSON or does not match the format (truncated, corrupted).
    #[error("cannot parse cost table {path}{location}: {message}; the file is truncated, corrupted or wrongly edited, so fix that value, or remove the file and profile again with `alphanas profile --out {path}`")]
    Parse {
        path: String,
        location: String,
        message: String,
    },
    /// The table was written in another format version.
    #[error("cost table {path} has format_version {found} but this alphanas reads version {expected}; profile the device again with this version")]
    Version { path: String, found: String, expected: u32 },
    /// The table was profiled for another dtype than the one requested.
    #[error("cost table {path} was profiled for {found} but {requested} was requested; profile with --dtype {requested} or request {found}")]
    Dtype {
        path: String,
        found: crate::arch::Dtype,
        requested: crate::arch::Dtype,
    },
    /// The table has no entry of an op kind that the model needs.
    #[error("cost table has no {op} entries, but the model needs {op} ({mode}); profile a space whose architectures use it, with --modes including {mode}")]
    MissingOp { op: &'static str, mode: Mode },
    /// A request or a table does not fit the table's settings.
    #[error("{0}")]
    Invalid(String),
    /// Timing an op failed.
    #[error("timing {op} failed: {message}")]
    Timing { op: String, message: String },
}

impl From<CostError> for crate::Error {
    fn from(err: CostError) -> Self {
        crate::Error::Other(err.to_string())
    }
}
