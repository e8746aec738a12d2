//! Architecture search: MCTS guided by a surrogate, baseline strategies, Pareto fronts and
//! hypervolume, the search loop and its journal.
//!
//! The entry point is [`run_search`]. It proposes candidates with the configured
//! [`Strategy`] and evaluates them with an [`Evaluator`](crate::eval::Evaluator) on worker
//! threads, appending each result to `history.jsonl`. It refits the surrogate and repeats
//! until the budget is spent, then writes `front.csv`, `front.json` and `summary.json`.

mod acquisition;
mod baselines;
mod config;
pub mod cost_feedback;
mod driver;
mod journal;
pub mod mcts;
mod model;
mod objective;
mod outputs;
pub mod pareto;
pub mod plot;
mod problem;
pub mod table_eval;
pub mod table_features;
pub(crate) mod tree_search;

pub use acquisition::Acquisition;
pub use cost_feedback::{CostTableFeedback, MeasuredPass};
pub use config::{
    FrontPoint, NoHooks, Progress, Rollout, RoundError, SearchConfig, SearchHooks, SearchReport, Selection, Strategy,
    SurrogateKind,
};
pub use driver::{check_resumable, run_search};
pub use journal::{candidate_json, load_history, write_json_atomic, EvalRecord, Settings};
pub use model::{MlpSurrogate, Prediction, RidgeEnsemble, Surrogate};
pub use objective::{is_feasible, normal_cdf, Bound, Constraint, Objective, Sense};
pub use problem::Problem;
pub use table_eval::TableEvaluator;
pub use table_features::TableFeatures;
