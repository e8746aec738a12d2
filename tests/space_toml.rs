//! TOML space files: counting against brute force, uniform sampling, and one-line errors.

use alphanas::space::{SearchSpace, Space};
use alphanas::Architecture;
use num_bigint::BigUint;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;

const TINY: &str = r#"
name = "tiny"
[fixed]
vocab_size = 100
max_seq_len = 16
[decisions]
n_layers = [1, 2]
d_model = [64, 96, 128]
n_heads = [2, 3, 4]
n_kv_heads = [1, 2]
d_ff = { values = [64, 128], per_layer = true }
[constraints]
head_dim = { min = 24, max = 48 }
"#;

fn tiny() -> Space {
    Space::from_toml_str(TINY, "tiny", "test").expect("tiny space parses")
}

/// Checks whether the tiny space admits this model from its definition, with
/// `Architecture::validate` and the head_dim limits but without the space code.
fn tiny_admits(d_model: u64, n_heads: u64, n_kv_heads: u64, d_ffs: &[u64]) -> bool {
    let layers: Vec<String> = d_ffs.iter().map(|d| format!("{{\"d_ff\": {d}}}")).collect();
    let json = format!(
        r#"{{"vocab_size": 100, "max_seq_len": 16, "d_model": {d_model}, "n_layers": {}, "n_heads": {n_heads},
            "n_kv_heads": {n_kv_heads}, "d_ff": {}, "layers": [{}]}}"#,
        d_ffs.len(),
        d_ffs[0],
        layers.join(", ")
    );
    match Architecture::from_json(&json) {
        Ok(arch) => (24..=48).contains(&arch.head_dim()),
        Err(_) => false,
    }
}

#[test]
fn count_matches_brute_force() {
    let mut expected = 0u64;
    for n_layers in [1usize, 2] {
        for d_model in [64u64, 96, 128] {
            for n_heads in [2u64, 3, 4] {
                for n_kv_heads in [1u64, 2] {
                    // Every assignment of d_ff to the layers.
                    for code in 0..(1usize << n_layers) {
                        let d_ffs: Vec<u64> = (0..n_layers).map(|i| if code >> i & 1 == 1 { 128 } else { 64 }).collect();
                        if tiny_admits(d_model, n_heads, n_kv_heads, &d_ffs) {
                            expected += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(expected > 0);
    assert_eq!(tiny().count(), BigUint::from(expected));
}

#[test]
fn walk_enumeration_matches_count() {
    // Depth-first over valid_choices reaches every valid architecture exactly once.
    fn walk(space: &Space, prefix: &mut Vec<u32>, seen: &mut Vec<Vec<u32>>) {
        if space.next_decision(prefix).is_none() {
            space.architecture(prefix).expect("complete walk is valid");
            seen.push(prefix.clone());
            return;
        }
        for choice in space.valid_choices(prefix) {
            prefix.push(choice);
            walk(space, prefix, seen);
            prefix.pop();
        }
    }
    let space = tiny();
    let mut seen = Vec::new();
    walk(&space, &mut Vec::new(), &mut seen);
    assert_eq!(BigUint::from(seen.len()), space.count());
}

#[test]
fn sampling_is_uniform() {
    let space = tiny();
    let n_archs: usize = space.count().try_into().unwrap();
    let draws = 400 * n_archs;
    let mut rng = StdRng::seed_from_u64(2024);
    let mut counts: HashMap<Vec<u32>, usize> = HashMap::new();
    for _ in 0..draws {
        *counts.entry(space.sample(&mut rng)).or_default() += 1;
    }
    assert_eq!(counts.len(), n_archs, "every architecture is drawn");

    // Pearson chi-square against the uniform distribution, compared with the 0.999 quantile
    // of chi-square with k - 1 degrees of freedom (Wilson–Hilferty approximation).
    let expected = draws as f64 / n_archs as f64;
    let chi2: f64 = counts.values().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
    let df = (n_archs - 1) as f64;
    let z = 3.090; // standard normal 0.999 quantile
    let a = 2.0 / (9.0 * df);
    let critical = df * (1.0 - a + z * a.sqrt()).powi(3);
    assert!(chi2 < critical, "chi-square {chi2:.1} exceeds {critical:.1} for {df} degrees of freedom");
}

#[test]
fn doc_example_parses() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/SPACES.md")).unwrap();
    let example = doc.split("## Example").nth(1).expect("docs/SPACES.md has an Example section");
    let toml = example.split("```toml").nth(1).unwrap().split("```").next().unwrap();
    let space = Space::from_toml_str(toml, "example", "docs").expect("the documented example is valid");
    assert_eq!(space.name(), "small-gqa");
    assert!(space.count() > BigUint::from(0u32));
}

#[test]
fn mlp_ratio_sets_d_ff() {
    let text = "[fixed]\nn_layers = 2\nn_heads = 4\n[decisions]\nd_model = [128, 192]\nmlp_ratio = { values = [2, 2.5], per_layer = true }\n";
    let space = Space::from_toml_str(text, "ratio", "test").unwrap();
    // 2.5 × 128 = 320 and 2.5 × 192 = 480 are whole: 2 widths × 2² layer choices.
    assert_eq!(space.count(), BigUint::from(8u32));
    let arch = space.architecture(&[1, 1, 0]).unwrap();
    assert_eq!(arch.layer(0).d_ff, 480);
    assert_eq!(arch.layer(1).d_ff, 384);
}

#[test]
fn fractional_ratio_drops_combination() {
    let text = "[fixed]\nn_layers = 1\nn_heads = 2\n[decisions]\nd_model = [64, 66]\nmlp_ratio = [1.5]\n";
    let space = Space::from_toml_str(text, "ratio", "test").unwrap();
    // 1.5 × 66 = 99 is whole, 1.5 × 64 = 96 too: both count.
    assert_eq!(space.count(), BigUint::from(2u32));
    let text = "[fixed]\nn_layers = 1\nn_heads = 2\n[decisions]\nd_model = [64, 66]\nmlp_ratio = [1.25]\n";
    let space = Space::from_toml_str(text, "ratio", "test").unwrap();
    // 1.25 × 66 = 82.5 is not.
    assert_eq!(space.count(), BigUint::from(1u32));
}

#[test]
fn fixed_model_wide_heads() {
    let text = "[fixed]\nn_layers = 2\nd_model = 256\nd_ff = 512\nn_heads = 8\n[decisions]\nn_heads = { values = [2, 8], per_layer = true }\n";
    let space = Space::from_toml_str(text, "heads", "test").unwrap();
    let arch = space.architecture(&[0, 1]).unwrap();
    assert_eq!(arch.n_heads, 8);
    assert_eq!(arch.layer(0).n_heads, 2);
    assert_eq!(arch.head_dim(), 32);
}

/// Each malformed file gives one line that contains `fragment`.
#[test]
fn malformed_files_one_line_errors() {
    let base = "[fixed]\nn_layers = 2\nn_heads = 4\nd_ff = 256\n";
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "the space file is empty"),
        ("   \n# only a comment\n".into(), "the space file is empty"),
        ("[decisions\nd_model = [64]".into(), "malformed TOML at line 1"),
        (format!("{base}[decisions]\ndmodel = [64]\n"), "unknown field `decisions.dmodel`"),
        (format!("{base}[decision]\nd_model = [64]\n"), "unknown top-level key `decision`"),
        (format!("{base}[decisions]\nd_model = []\n"), "decisions.d_model has no choices"),
        (format!("{base}[decisions]\nd_model = [64, \"128\"]\n"), "decisions.d_model[1] must be a positive integer, found a string"),
        (format!("{base}[decisions]\nd_model = [64, -128]\n"), "decisions.d_model[1] (-128) must be a positive integer"),
        (format!("{base}[decisions]\nd_model = [64, 64]\n"), "decisions.d_model lists 64 twice"),
        (format!("{base}[decisions]\nd_model = 64\n"), "decisions.d_model must be a list of choices"),
        (format!("{base}[decisions]\nd_model = {{ start = 512, stop = 128 }}\n"), "decisions.d_model.start (512) is above stop (128)"),
        (format!("{base}[decisions]\nd_model = {{ start = 64, stop = 128, step = 0 }}\n"), "decisions.d_model.step (0) must be positive"),
        (format!("{base}[decisions]\nd_model = {{ start = 64, stop = 128, stepp = 8 }}\n"), "unknown key `decisions.d_model.stepp`"),
        (format!("{base}[decisions]\nd_model = {{ values = [64], per_layer = true }}\n"), "decisions.d_model cannot be per_layer"),
        (format!("{base}[decisions]\nd_model = [64]\nffn = [\"swish\"]\n"), "decisions.ffn[0] must be one of \"swiglu\", \"gelu\", \"relu\""),
        (format!("{base}[decisions]\nd_model = [64]\nbias = [\"yes\"]\n"), "decisions.bias[0] must be true or false"),
        (format!("{base}[fixed2]\n"), "unknown top-level key `fixed2`"),
        ("[fixed]\nn_layers = 2\nn_heads = 4\n[decisions]\nd_model = [64]\n".into(), "missing d_ff"),
        ("[fixed]\nn_layers = 2\nd_ff = 64\n[decisions]\nd_model = [64]\n".into(), "missing n_heads"),
        (format!("{base}mlp_ratio = 4\n[decisions]\nd_model = [64]\n"), "both d_ff and mlp_ratio are given"),
        (format!("{base}[decisions]\nd_model = [64]\nn_layers = [2, 4]\n"), "n_layers is both under [fixed] and [decisions]"),
        (
            "[fixed]\nn_layers = 2\nd_ff = 64\nd_model = 64\n[decisions]\nn_heads = { values = [2, 4], per_layer = true }\n".into(),
            "n_heads is a per-layer decision, so the model-wide head width must be set",
        ),
        (format!("{base}[decisions]\nd_model = [64]\n[constraints]\nhead_dims = {{ min = 1 }}\n"), "unknown constraint `constraints.head_dims`"),
        (format!("{base}[decisions]\nd_model = [64]\n[constraints]\nhead_dim = {{ min = 64, max = 32 }}\n"), "constraints.head_dim.min (64) is above constraints.head_dim.max (32)"),
        (format!("{base}[decisions]\nd_model = [64]\n[constraints]\nhead_dim = {{ low = 8 }}\n"), "unknown key `constraints.head_dim.low`"),
        // Impossible: head_dim is 16 or 32 for every choice, never 64 or more.
        (
            format!("{base}[decisions]\nd_model = [64, 128]\n[constraints]\nhead_dim = {{ min = 64 }}\n"),
            "space `bad` contains no valid architecture (first rejection: d_model 64: head_dim (16) is below constraints.head_dim.min (64))",
        ),
        // Impossible: 3 never divides 64 or 128.
        (
            "[fixed]\nn_layers = 2\nn_heads = 3\nd_ff = 256\n[decisions]\nd_model = [64, 128]\n".into(),
            "contains no valid architecture (first rejection: d_model 64: invalid architecture: n_heads (3) must divide d_model (64)",
        ),
    ];
    for (text, fragment) in cases {
        let err = Space::from_toml_str(&text, "bad", "test").expect_err(&format!("accepted:\n{text}")).to_string();
        assert!(err.contains(fragment), "error `{err}` lacks `{fragment}` for:\n{text}");
        assert!(!err.contains('\n'), "error spans lines: {err}");
    }
}

#[test]
fn file_error_names_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "[decisions]\nd_modle = [64]\n").unwrap();
    let err = Space::resolve(path.to_str().unwrap()).unwrap_err().to_string();
    assert!(err.contains("typo.toml"), "{err}");
    assert!(err.contains("unknown field `decisions.d_modle`"), "{err}");
}

#[test]
fn file_name_defaults_to_stem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.toml");
    std::fs::write(&path, "[fixed]\nn_layers = 2\nn_heads = 4\nd_ff = 256\n[decisions]\nd_model = [64, 128]\n").unwrap();
    let space = Space::resolve(path.to_str().unwrap()).unwrap();
    assert_eq!(space.name(), "mine");
    assert_eq!(space.count(), BigUint::from(2u32));
}

#[test]
fn architecture_rejects_bad_sequences() {
    let space = tiny();
    assert!(space.architecture(&[]).is_err());
    assert!(space.architecture(&[0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    assert!(space.architecture(&[9, 0, 0, 0]).is_err());
}
