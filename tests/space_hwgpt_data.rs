//! hwgpt-s parameter counts against the `params` column of the HW-GPT-Bench latency tables.
//! Skips when the shared data folder is missing.

use alphanas::space::{hwgpt_s_architecture, Candidate, SearchSpace, Space};

fn parse_list(text: &str) -> Vec<u64> {
    text.split_whitespace().map(|v| v.parse().expect("integer list entry")).collect()
}

#[test]
fn hwgpt_params_match_data() {
    let Some(dir) = alphanas::shared_data_dir() else {
        eprintln!("skipping hwgpt_params_match_data: shared data folder not found (set ALPHANAS_DATA_DIR)");
        return;
    };
    let path = dir.join("hwgpt/hwgpt_s_latency_h100.csv");
    if !path.is_file() {
        eprintln!("skipping hwgpt_params_match_data: {} not found", path.display());
        return;
    }
    let space = Space::builtin("hwgpt-s").unwrap();
    let mut reader = csv::Reader::from_path(&path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap_or_else(|| panic!("column {name} missing"));
    let (embed, layers, bias, ratio, heads, params) = (
        column("embed_dim"),
        column("n_layer"),
        column("bias"),
        column("mlp_ratio"),
        column("n_head"),
        column("params"),
    );

    let mut rows = 0;
    for record in reader.records() {
        let record = record.unwrap();
        let bias_value = match record[bias].to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            other => panic!("unexpected bias value {other}"),
        };
        let arch = hwgpt_s_architecture(
            record[embed].parse().unwrap(),
            record[layers].parse().unwrap(),
            bias_value,
            &parse_list(&record[ratio]),
            &parse_list(&record[heads]),
        )
        .unwrap();
        let expected: f64 = record[params].parse().unwrap();
        assert_eq!(arch.params() as f64, expected, "row {} ({})", rows, arch.to_json());
        assert!(
            space.choices_of(&Candidate::Arch(arch)).is_some(),
            "row {rows} is not an architecture of the hwgpt-s space"
        );
        rows += 1;
    }
    assert_eq!(rows, 10_000);
}
