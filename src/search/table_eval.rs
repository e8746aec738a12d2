//! The `table` evaluator: a candidate's metrics are its row's numeric columns.

use crate::eval::{EvalOutcome, Evaluator, Status};
use crate::space::table::TableSpace;
use crate::space::Candidate;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Looks up rows of a [`TableSpace`].
#[derive(Debug, Clone)]
pub struct TableEvaluator {
    space: Arc<TableSpace>,
}

impl TableEvaluator {
    /// An evaluator over the rows of `space`.
    pub fn new(space: Arc<TableSpace>) -> Self {
        TableEvaluator { space }
    }
}

impl Evaluator for TableEvaluator {
    fn name(&self) -> &str {
        "table"
    }

    fn metric_names(&self) -> Vec<String> {
        self.space.metric_names().to_vec()
    }

    fn evaluate(&self, _trial: u64, candidate: &Candidate) -> EvalOutcome {
        let index = match candidate {
            Candidate::Row { index, .. } => *index,
            Candidate::Arch(_) => {
                return EvalOutcome::failed(
                    Status::Failed,
                    "the table evaluator looks up table rows; use --space-table with it",
                    0.0,
                )
            }
        };
        match self.space.row_metrics(index) {
            Some(values) => {
                let metrics: BTreeMap<String, f64> =
                    self.space.metric_names().iter().cloned().zip(values.iter().copied()).collect();
                EvalOutcome::ok(metrics, 0.0)
            }
            None => EvalOutcome::failed(
                Status::Failed,
                format!("row {index} is not in the table ({} rows)", self.space.len()),
                0.0,
            ),
        }
    }
}
