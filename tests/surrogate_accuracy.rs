//! Surrogate accuracy on public measured data (HAT latency sets on a Titan Xp). Each test
//! prints a message and returns when the shared data folder is missing. They train five
//! ensembles on 1,800 rows each, which takes minutes in the test profile, so they are ignored
//! by default: run `cargo test --release --test surrogate_accuracy -- --ignored`.

use alphanas::surrogate::data::{InputSpec, Table};
use alphanas::surrogate::ols::LinearModel;
use alphanas::surrogate::{Ensemble, EnsembleConfig};

const HAT_FEATURES: &[&str] = &[
    "encoder_embed_dim",
    "encoder_layer_num",
    "encoder_ffn_embed_dim_avg",
    "encoder_self_attention_heads_avg",
    "decoder_embed_dim",
    "decoder_layer_num",
    "decoder_ffn_embed_dim_avg",
    "decoder_self_attention_heads_avg",
    "decoder_ende_attention_heads_avg",
    "decoder_arbitrary_ende_attn_avg",
];

fn share_within_10pct(predicted: &[f64], actual: &[f64]) -> f64 {
    alphanas::stats::within(predicted, actual, 0.10)
}

// NOTE: this goal is not met yet. With default settings the ensemble put 95.5 to 98% of test
// rows within ±10% and scored below least squares on all four sets (2026-12-04).
#[test]
#[ignore = "trains for minutes; run with --ignored"]
fn hat_titanxp_decoder_latency_within_10pct() {
    let Some(data_dir) = alphanas::shared_data_dir() else {
        eprintln!("hat_titanxp_decoder_latency_within_10pct: skipped, no shared data folder");
        return;
    };
    let files = ["iwslt14deen", "wmt14ende", "wmt14enfr", "wmt19ende"];
    for name in files {
        let path = data_dir.join(format!("hat/{name}_gpu_titanxp_all.csv"));
        let table = Table::read(&path).unwrap();
        let features: Vec<String> = HAT_FEATURES.iter().map(|s| s.to_string()).collect();
        let spec = InputSpec::from_table(&table, &features).unwrap();
        let x = spec.encode(&table).unwrap();
        let y: Vec<Vec<f64>> = table.numeric_column("latency_mean_decoder").unwrap().into_iter().map(|v| vec![v]).collect();
        let (train_x, test_x) = x.split_at(1800);
        let (train_y, test_y) = y.split_at(1800);

        let cfg = EnsembleConfig { log_targets: vec![true], ..Default::default() };
        let model = Ensemble::fit(train_x, train_y, spec.feature_names(), vec!["latency_mean_decoder".into()], &cfg).unwrap();
        let flat: Vec<f32> = test_x.iter().flatten().map(|&v| v as f32).collect();
        let prediction = model.predict(&flat, test_x.len());
        let predicted: Vec<f64> = prediction.mean.iter().map(|&v| f64::from(v)).collect();
        let actual: Vec<f64> = test_y.iter().map(|r| r[0]).collect();

        let linear = LinearModel::fit(train_x, train_y).unwrap();
        let linear_predicted: Vec<f64> = test_x.iter().map(|r| linear.predict_row(r)[0]).collect();

        let ensemble_share = share_within_10pct(&predicted, &actual);
        let linear_share = share_within_10pct(&linear_predicted, &actual);
        eprintln!("{name}: ensemble {ensemble_share:.3}, least squares {linear_share:.3} of 200 test rows within ±10%");
        assert!(ensemble_share >= 0.99, "{name}: only {ensemble_share} of test predictions within ±10%");
        assert!(ensemble_share >= linear_share, "{name}: least squares ({linear_share}) beats the ensemble ({ensemble_share})");
    }
}
