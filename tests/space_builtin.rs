//! Built-in spaces: exact sizes, sampling validity and coverage, walks, round trips and
//! parameter ranges.

use alphanas::space::{Candidate, SearchSpace, Space, BUILTIN_NAMES};
use num_bigint::BigUint;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn builtin(name: &str) -> Space {
    Space::builtin(name).expect("built-in space exists")
}

fn arch_of(space: &Space, choices: &[u32]) -> alphanas::Architecture {
    match space.candidate(choices) {
        Candidate::Arch(arch) => arch,
        other => panic!("expected an architecture, got {other:?}"),
    }
}

#[test]
fn hwgpt_s_size_exact() {
    assert_eq!(builtin("hwgpt-s").count().to_string(), "1903784282946");
}

#[test]
fn lts_gpt2_size_exact() {
    // 15 widths (128..=1024 step 64) × Σ_{L=3..10} (63 d_ff × 3 head counts)^L.
    let per_layer = BigUint::from(63u32 * 3);
    let mut expected = BigUint::from(0u32);
    for depth in 3..=10u32 {
        expected += per_layer.pow(depth);
    }
    expected *= 15u32;
    assert_eq!(builtin("lts-gpt2").count(), expected);
}

/// Counts `llama` from its definition with plain loops, independently of the prefix tree.
#[test]
fn llama_size_exact() {
    let mut expected = BigUint::from(0u32);
    for depth in (2..=24u32).step_by(2) {
        for d_model in (128..=1536u64).step_by(128) {
            for n_heads in [2u64, 4, 6, 8, 12, 16, 24] {
                if d_model % n_heads != 0 {
                    continue;
                }
                let head_dim = d_model / n_heads;
                if !(32..=128).contains(&head_dim) || head_dim % 2 != 0 {
                    continue;
                }
                for n_kv_heads in [1u64, 2, 4, 8] {
                    if n_kv_heads > n_heads || n_heads % n_kv_heads != 0 {
                        continue;
                    }
                    // Every ratio in {2, 2.5, 3, 3.5, 4} gives a whole d_ff for multiples of 128.
                    expected += BigUint::from(5u32).pow(depth);
                }
            }
        }
    }
    assert_eq!(builtin("llama").count(), expected);
}

#[test]
fn llama_params_range() {
    let (min, max) = builtin("llama").params_range();
    assert!((5_000_000..20_000_000).contains(&min), "params_min {min}");
    assert!((500_000_000..1_100_000_000).contains(&max), "params_max {max}");
}

#[test]
fn params_range_matches_samples() {
    for name in BUILTIN_NAMES {
        let space = builtin(name);
        let (min, max) = space.params_range();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let params = arch_of(&space, &space.sample(&mut rng)).params();
            assert!(params >= min, "{name}: sample has {params} < params_min {min}");
            assert!(params <= max, "{name}: sample has {params} > params_max {max}");
        }
    }
}

#[test]
fn sampling_valid_and_covers_choices() {
    for name in BUILTIN_NAMES {
        let space = builtin(name);
        let mut rng = StdRng::seed_from_u64(42);
        // seen[decision name without the layer index] = set of labels
        let mut seen: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
        for _ in 0..10_000 {
            let choices = space.sample(&mut rng);
            let arch = arch_of(&space, &choices);
            arch.validate().expect("sampled architecture validates");
            for i in 0..choices.len() {
                let decision = space.next_decision(&choices[..i]).expect("decision before the end");
                assert!(
                    space.valid_choices(&choices[..i]).contains(&choices[i]),
                    "{name}: sampled choice {} of {} is not offered",
                    choices[i],
                    decision.name
                );
                let key = decision.name.split('.').next_back().unwrap().to_string();
                seen.entry(key).or_default().insert(decision.labels[choices[i] as usize].clone());
            }
            assert!(space.next_decision(&choices).is_none(), "{name}: sequence has a decision after its end");
        }
        for decision in space.decisions() {
            let labels = &seen[decision.field.name()];
            for value in &decision.choices {
                assert!(labels.contains(&value.to_string()), "{name}: {} = {value} never sampled", decision.field);
            }
        }
    }
}

#[test]
fn random_walks_always_complete() {
    for name in BUILTIN_NAMES {
        let space = builtin(name);
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..2000 {
            let mut prefix = Vec::new();
            while space.next_decision(&prefix).is_some() {
                let choices = space.valid_choices(&prefix);
                assert!(!choices.is_empty(), "{name}: dead end after {prefix:?}");
                prefix.push(choices[rng.random_range(0..choices.len())]);
            }
            assert!(space.valid_choices(&prefix).is_empty());
            space.architecture(&prefix).expect("completed walk is a valid architecture");
        }
    }
}

#[test]
fn choices_round_trip() {
    for name in BUILTIN_NAMES {
        let space = builtin(name);
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..1000 {
            let choices = space.sample(&mut rng);
            let candidate = space.candidate(&choices);
            assert_eq!(space.choices_of(&candidate), Some(choices), "{name}");
        }
    }
}

#[test]
fn choices_of_rejects_foreign_arch() {
    let space = builtin("hwgpt-s");
    let foreign = Candidate::Arch(alphanas::arch::presets::gpt2_small());
    assert_eq!(space.choices_of(&foreign), None);
    let row = Candidate::Row { index: 0, values: Vec::new() };
    assert_eq!(space.choices_of(&row), None);
}

#[test]
fn features_match_names() {
    for name in BUILTIN_NAMES {
        let space = builtin(name);
        let names = space.feature_names();
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..200 {
            let values = space.features(&space.sample(&mut rng));
            assert_eq!(values.len(), names.len(), "{name}");
            assert!(values.iter().all(|v| v.is_finite()), "{name}: non-finite feature");
        }
    }
}

#[test]
fn hwgpt_helper_matches_space() {
    let space = builtin("hwgpt-s");
    let arch = alphanas::space::hwgpt_s_architecture(384, 10, true, &[2, 3, 4, 2, 3, 4, 2, 3, 4, 2], &[4, 8, 12, 4, 8, 12, 4, 8, 12, 4])
        .unwrap();
    let choices = space.choices_of(&Candidate::Arch(arch.clone())).expect("helper model is in the space");
    assert_eq!(arch_of(&space, &choices), arch);
}

#[test]
fn resolve_unknown_name() {
    let err = Space::resolve("gpt5").unwrap_err().to_string();
    assert!(err.contains("unknown search space `gpt5`"), "{err}");
}
