//! Helpers shared by the kernel tests on both backends: seeded inputs and an element-wise
//! closeness check that reports the worst element.

/// Deterministic uniform values in `[-scale, scale]` from a SplitMix64 stream seeded by `seed`.
pub fn random_vec(len: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            // The top 24 bits give a uniform value in [0, 1) that f32 represents exactly.
            let unit = (z >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * unit - 1.0) * scale
        })
        .collect()
}

/// Panics unless `|got - want| <= atol + rtol·|want|` for every element, naming the worst
/// element, its values and `label`. Non-finite values must match exactly.
pub fn assert_close(got: &[f32], want: &[f32], rtol: f32, atol: f32, label: &str) {
    assert_eq!(got.len(), want.len(), "{label}: length {} != expected {}", got.len(), want.len());
    let mut worst: Option<(usize, f32)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if !w.is_finite() || !g.is_finite() {
            assert!(
                g == w || (g.is_nan() && w.is_nan()),
                "{label}: element {i} is {g}, expected {w}"
            );
            continue;
        }
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        if excess > 0.0 && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{label}: element {i} is {}, expected {} (|diff| {:e} > atol {atol:e} + rtol {rtol:e}·|expected|)",
            got[i],
            want[i],
            (got[i] - want[i]).abs()
        );
    }
}
