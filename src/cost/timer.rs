//! [`OpTimer`]: times one op on one device. The profiler only talks to this trait, so the CPU
//! and GPU backends profile through the same loop.

use super::ops::Op;
use super::table::DeviceInfo;
use super::CostError;
use crate::arch::Dtype;
use crate::stats::TimingStats;

/// Times single ops on a device, with inputs allocated and filled outside the timed region.
pub trait OpTimer {
    /// Describes the device the timings come from, as written to the table.
    fn device_info(&self) -> DeviceInfo;

    /// Returns the element type of the timed kernels.
    fn dtype(&self) -> Dtype;

    /// Tells whether [`OpTimer::time_op`] includes the cost of issuing the op (wall-clock timers) or
    /// only its execution (GPU timestamp queries).
    fn includes_dispatch_overhead(&self) -> bool;

    /// Times `op` after `warmup` untimed calls, over `runs` timed calls.
    fn time_op(&mut self, op: &Op, warmup: usize, runs: usize) -> Result<TimingStats, CostError>;

    /// Times the smallest dispatch the backend can issue (a one-element op), which prediction
    /// adds per op when [`OpTimer::includes_dispatch_overhead`] is false.
    fn time_dispatch_overhead(&mut self, warmup: usize, runs: usize) -> Result<TimingStats, CostError>;
}

/// Rows of the embedding table that timers gather from, as in the built-in spaces. The gather
/// cost depends on the rows copied, not on the table size.
pub const PROFILE_VOCAB: usize = 32_000;
