//! Built-in spaces: exact sizes, sampling validity and coverage, walks, round trips and
//! parameter ranges.

use alphanas::space::{Candidate, SearchSpace, Space, BUILTIN_NAMES};
use num_bigint::BigUint;
use num_traits::ToPrimitive;
use std::collections::{BTreeMap, BTreeSet};
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
    for _depth in 2..=24u32 {
        for d_model in (128..=1536u64).step_by(64) {
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
                    // Every ratio in {2, 2.25, ..., 4} gives a whole d_ff for multiples of 64.
                    expected += BigUint::from(9u32);
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

/// Exact probability that a uniform draw has depth choice `choice` (the first decision).
fn depth_probability(space: &Space, choice: u32) -> f64 {
    let share = space.count_completions(&[choice]) * BigUint::from(1_000_000_000u64) / space.count();
    share.to_u64().unwrap() as f64 / 1e9
}

/// Draws 10,000 architectures from each built-in space and checks that each is valid and
/// offered step by step, and that every choice appears. With per-layer decisions a uniform
/// draw is almost always of the largest depths, because lts-gpt2 has 189 times more models
/// of depth 10 than of depth 9, for example. So a depth must appear only where its exact
/// probability predicts at least 10 draws, and each depth's frequency is compared with
/// that probability.
#[test]
fn sampling_valid_and_covers_choices() {
    const DRAWS: usize = 10_000;
    for name in BUILTIN_NAMES {
        let space = builtin(name);
        let mut rng = StdRng::seed_from_u64(42);
        let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut depth_draws: BTreeMap<u32, usize> = BTreeMap::new();
        for _ in 0..DRAWS {
            let choices = space.sample(&mut rng);
            let arch = arch_of(&space, &choices);
            arch.validate().expect("sampled architecture validates");
            *depth_draws.entry(choices[0]).or_default() += 1;
            for i in 0..choices.len() {
                let decision = space.next_decision(&choices[..i]).expect("decision before the end");
                assert!(
                    space.valid_choices(&choices[..i]).contains(&choices[i]),
                    "{name}: sampled choice {} of {} is not offered",
                    choices[i],
                    decision.name
                );
                let field = decision.name.split('.').next_back().unwrap().to_string();
                seen.entry(field).or_default().insert(decision.labels[choices[i] as usize].clone());
            }
            assert!(space.next_decision(&choices).is_none(), "{name}: sequence has a decision after its end");
        }

        let depth = space.decisions().next().unwrap();
        assert_eq!(depth.field.name(), "n_layers");
        for (index, value) in depth.choices.iter().enumerate() {
            let p = depth_probability(&space, index as u32);
            let expected = p * DRAWS as f64;
            let observed = depth_draws.get(&(index as u32)).copied().unwrap_or(0) as f64;
            let sigma = (DRAWS as f64 * p * (1.0 - p)).sqrt().max(1.0);
            assert!(
                (observed - expected).abs() <= 5.0 * sigma,
                "{name}: depth {value} drawn {observed} times, expected {expected:.1}"
            );
            if expected >= 10.0 {
                assert!(observed > 0.0, "{name}: depth {value} never drawn");
            }
        }
        for decision in space.decisions().skip(1) {
            let labels = &seen[decision.field.name()];
            for value in &decision.choices {
                assert!(labels.contains(&value.to_string()), "{name}: {} = {value} never sampled", decision.field);
            }
        }
    }
}

/// Walks that pick uniformly among the valid choices at each step reach every choice of every
/// decision, depths included.
#[test]
fn uniform_walks_cover_choices() {
    for name in BUILTIN_NAMES {
        let space = builtin(name);
        let mut rng = StdRng::seed_from_u64(8);
        let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for _ in 0..10_000 {
            let mut prefix = Vec::new();
            while let Some(decision) = space.next_decision(&prefix) {
                let valid = space.valid_choices(&prefix);
                let choice = valid[rng.random_range(0..valid.len())];
                let field = decision.name.split('.').next_back().unwrap().to_string();
                seen.entry(field).or_default().insert(decision.labels[choice as usize].clone());
                prefix.push(choice);
            }
        }
        for decision in space.decisions() {
            let labels = &seen[decision.field.name()];
            for value in &decision.choices {
                assert!(labels.contains(&value.to_string()), "{name}: {} = {value} never reached", decision.field);
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
    let row = Candidate::Row { index: 0, source_row: 0, values: Vec::new() };
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

#[test]
fn resolve_missing_space_file() {
    let err = Space::resolve("no/such/space.toml").unwrap_err().to_string();
    assert!(err.contains("cannot read search space file no/such/space.toml"), "{err}");
    assert!(err.contains("not found"), "{err}");
}

/// The extremes of hwgpt-s from the HW-GPT-Bench parameter formula
/// `2·50254·d + Σ_l (256·h_l·d + 3·r_l·d²) + (2L+1)·2d`, plus `Σ_l (192·h_l + 2d + 2·r_l·d)`
/// with biases: the smallest model is d 192, 10 layers, 4 heads, ratio 2, no bias, and the
/// largest d 768, 12 layers, 12 heads, ratio 4, with biases.
#[test]
fn hwgpt_params_range_exact() {
    let formula = |d: u64, layers: u64, heads: u64, ratio: u64, bias: bool| {
        let mut params = 2 * 50254 * d + layers * (256 * heads * d + 3 * ratio * d * d) + (2 * layers + 1) * 2 * d;
        if bias {
            params += layers * (192 * heads + 2 * d + 2 * ratio * d);
        }
        params
    };
    let (min, max) = builtin("hwgpt-s").params_range();
    assert_eq!(min, formula(192, 10, 4, 2, false));
    assert_eq!(max, formula(768, 12, 12, 4, true));
}
