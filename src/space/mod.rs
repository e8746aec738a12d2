//! Search spaces: the decisions a search walks, the architectures (or table rows) they lead
//! to, exact counting and uniform sampling.
//!
//! Every space implements [`SearchSpace`]. A candidate is a sequence of choice indices, one
//! per decision, taken in the space's fixed decision order. The order can depend on earlier
//! choices (per-layer decisions exist only for the layers the depth decision created), and at
//! each step only choices that can still lead to a valid candidate are offered.

pub mod table;

use num_bigint::BigUint;

/// Errors raised while reading, building or walking a search space.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpaceError {
    /// The space definition is invalid; the message names the entry and the fix.
    #[error("invalid search space: {0}")]
    Invalid(String),
    /// The space file could not be read.
    #[error("cannot read search space file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// No built-in space has this name and no file exists at this path.
    #[error("unknown search space `{0}`; use a built-in name (llama, hwgpt-s, lts-gpt2) or the path of a TOML file")]
    Unknown(String),
}

/// One decision as offered at a step of the walk.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Name such as `d_model` or `layers[3].d_ff`.
    pub name: String,
    /// Label of every choice of this decision (also the invalid ones), indexed by choice id.
    pub labels: Vec<String>,
}

/// What a completed choice sequence denotes.
#[derive(Debug, Clone, PartialEq)]
pub enum Candidate {
    /// An architecture of an architecture space.
    Arch(crate::arch::Architecture),
    /// A row of a table space, with its decision values by column name.
    Row {
        /// Position among the space's distinct rows, after rows that repeat an earlier row's
        /// decision values are dropped.
        index: usize,
        /// The row's position among the file's data rows, from 0 (CSV line `source_row + 2`).
        source_row: usize,
        values: Vec<(String, String)>,
    },
}

/// A space that a tree search, a sampler and the surrogate can all work with.
pub trait SearchSpace: Send + Sync {
    /// Name shown in logs and outputs (`llama`, a file stem, ...).
    fn name(&self) -> &str;

    /// The decision taken after `prefix`, or `None` when `prefix` is a complete candidate.
    fn next_decision(&self, prefix: &[u32]) -> Option<Decision>;

    /// Choice ids valid after `prefix`: each leads to at least one valid candidate. Empty when
    /// `prefix` is complete.
    fn valid_choices(&self, prefix: &[u32]) -> Vec<u32>;

    /// Exact number of valid candidates.
    fn count(&self) -> BigUint;

    /// Draws one valid candidate uniformly at random.
    fn sample(&self, rng: &mut dyn rand::RngCore) -> Vec<u32>;

    /// What the complete sequence `choices` denotes.
    fn candidate(&self, choices: &[u32]) -> Candidate;

    /// Maps a candidate back to its choice sequence, if it belongs to this space.
    fn choices_of(&self, candidate: &Candidate) -> Option<Vec<u32>>;

    /// Names of the values [`SearchSpace::features`] returns.
    fn feature_names(&self) -> Vec<String>;

    /// Fixed-length numeric features of a complete candidate for the surrogate.
    fn features(&self, choices: &[u32]) -> Vec<f32>;

    /// Returns a digest of what defines the candidates: the decisions, fixed values and
    /// constraints of an architecture space, or the cells of a table. A resumed search checks
    /// it, so an edited space file or table is not mixed into an old history. Empty, the
    /// default, skips that check.
    fn definition_digest(&self) -> String {
        String::new()
    }
}

/// Hashes `bytes` with 64-bit FNV-1a and returns 16 hex digits. Unlike std's hasher, the
/// result is the same in every build, so it can be stored in files; it is not for security.
pub(crate) fn fnv1a_64(bytes: &[u8]) -> String {
    // The 64-bit FNV offset basis and prime.
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = bytes.iter().fold(OFFSET, |hash, &byte| (hash ^ byte as u64).wrapping_mul(PRIME));
    format!("{hash:016x}")
}

mod arch_space;
pub mod builtin;
pub mod spec;

pub use arch_space::Space;
pub use builtin::{hwgpt_s_architecture, BUILTIN_NAMES};
pub use spec::{Constraint, ConstraintTarget, DecisionSpec, Field, SpaceSpec, Value};
