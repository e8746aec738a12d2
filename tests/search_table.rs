//! Table spaces read from CSV files and searched with the table evaluator.

use alphanas::search::{run_search, NoHooks, Objective, SearchConfig, Strategy, SurrogateKind, TableEvaluator};
use alphanas::space::table::TableSpace;
use alphanas::space::{Candidate, SearchSpace};
use num_bigint::BigUint;
use std::sync::Arc;

fn decisions(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Writes a 2-layer table: `width` in {1, 2, 3}, per-layer `heads` in {1, 2}, metric `score`.
fn write_table(dir: &std::path::Path) -> std::path::PathBuf {
    let mut text = String::from("id,width,heads,score,name_len\n");
    let mut id = 0;
    for width in 1..=3 {
        for h0 in 1..=2 {
            for h1 in 1..=2 {
                let score = (width * 10 + h0 * 3 + h1) as f64;
                text.push_str(&format!("{id},{width},{h0} {h1},{score},4\n"));
                id += 1;
            }
        }
    }
    // A duplicate of the first row's decisions, which is dropped.
    text.push_str("99,1,1 1,0.0,4\n");
    let path = dir.join("table.csv");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn table_space_from_csv() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_table(dir.path());
    let space = TableSpace::from_csv(&path, &decisions(&["width", "heads"])).unwrap();
    assert_eq!(space.count(), BigUint::from(12u32));
    assert_eq!(space.valid_choices(&[]), vec![0, 1, 2]);
    assert_eq!(space.next_decision(&[0]).unwrap().name, "heads[0]");
    assert_eq!(space.next_decision(&[0, 1]).unwrap().name, "heads[1]");
    assert!(space.next_decision(&[0, 1, 1]).is_none());
    assert_eq!(space.feature_names(), decisions(&["width", "heads[0]", "heads[1]", "heads_mean"]));
    assert_eq!(space.features(&[2, 1, 0]), vec![1.0, 1.0, 0.0, 0.5]);
    assert_eq!(space.metric_names(), &decisions(&["id", "score", "name_len"])[..]);
}

#[test]
fn table_space_missing_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let err = TableSpace::from_csv(&dir.path().join("none.csv"), &decisions(&["a"])).unwrap_err().to_string();
    assert!(err.contains("none.csv"), "{err}");
    let path = write_table(dir.path());
    let err = TableSpace::from_csv(&path, &decisions(&["depth"])).unwrap_err().to_string();
    assert!(err.contains("`depth` is missing"), "{err}");
}

#[test]
fn table_search_finds_best_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_table(dir.path());
    let space = Arc::new(TableSpace::from_csv(&path, &decisions(&["width", "heads"])).unwrap());
    let evaluator = Arc::new(TableEvaluator::new(space.clone()));
    for strategy in [Strategy::Mcts, Strategy::Random, Strategy::Evolution, Strategy::Local] {
        let cfg = SearchConfig {
            strategy,
            objectives: vec![Objective::max("score")],
            evals: 12,
            q: 2,
            initial: 4,
            population: 4,
            tournament: 2,
            simulations_per_round: 64,
            batch: 8,
            surrogate: SurrogateKind::Ridge,
            ..SearchConfig::default()
        };
        let report = run_search(space.clone(), evaluator.clone(), &cfg, &mut NoHooks).unwrap();
        assert_eq!(report.history.len(), 12, "{strategy:?}");
        assert_eq!(report.front[0].objectives, vec![38.0], "{strategy:?}");
        let Candidate::Row { values, .. } = &report.front[0].candidate else { panic!("rows expected") };
        assert_eq!(values[1], ("heads".to_string(), "2 2".to_string()));
    }
}

#[test]
fn hwgpt_table_shape() {
    let Some(data) = alphanas::shared_data_dir() else {
        eprintln!("skipping: the shared data folder is not available");
        return;
    };
    let path = data.join("hwgpt/hwgpt_s_joint.csv");
    let names = decisions(&["embed_dim", "n_layer", "bias", "mlp_ratio", "n_head"]);
    let space = TableSpace::from_csv(&path, &names).unwrap();
    assert_eq!(space.count(), BigUint::from(space.len()));
    assert!(space.len() > 9_900, "{} rows", space.len());
    assert!(space.len() <= 10_000, "{} rows", space.len());
    assert_eq!(space.valid_choices(&[]).len(), 3, "embed_dim has three values");
    let features = space.feature_names();
    // 3 scalars, 12 layers of 2 per-layer columns, and 2 means.
    assert_eq!(features.len(), 3 + 24 + 2);
    assert!(space.metric_names().contains(&"lat_h100_ms_mean".to_string()));
}
