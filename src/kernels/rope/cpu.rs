//! CPU rotary position embedding (RoPE; Su et al., "RoFormer", 2021) in the rotate-half
//! convention of GPT-NeoX and Hugging Face Llama.
//!
//! `x` is `[n_tokens, n_heads·head_dim]`. Within each head, feature `i < head_dim/2` pairs
//! with feature `i + head_dim/2`, and the pair rotates by `pos · theta^(-2i/head_dim)`:
//! `y_i = x_i·cos − x_{i+h}·sin`, `y_{i+h} = x_{i+h}·cos + x_i·sin`.
//!
//! Both paths compute the angles and their sines and cosines in `f64`, because an `f32`
//! angle at position 2048 is already off by about 1e-4 radians. `head_dim` must be even.

use rayon::prelude::*;

/// Default RoPE base `theta`, as in the RoFormer paper and Llama 1 and 2.
pub const ROPE_THETA: f32 = 10_000.0;

/// Below this many elements RoPE runs on the calling thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

fn check_shapes(x: &[f32], positions: &[u32], n_tokens: usize, n_heads: usize, head_dim: usize) {
    assert!(head_dim.is_multiple_of(2), "rope: head_dim ({head_dim}) must be even");
    assert_eq!(
        x.len(),
        n_tokens * n_heads * head_dim,
        "rope: x has {} elements, expected n_tokens·n_heads·head_dim = {n_tokens}·{n_heads}·{head_dim}",
        x.len()
    );
    assert_eq!(positions.len(), n_tokens, "rope: {} positions for {n_tokens} tokens", positions.len());
}

/// Rotation angle of pair `i` at position `pos`.
fn angle(pos: u32, i: usize, head_dim: usize, theta: f32) -> f64 {
    let exponent = -2.0 * i as f64 / head_dim as f64;
    f64::from(pos) * f64::from(theta).powf(exponent)
}

/// Applies RoPE and returns the rotated copy: the plain reference.
///
/// # Panics
/// When `head_dim` is odd or a slice length does not match the shape.
pub fn rope_ref(x: &[f32], positions: &[u32], n_tokens: usize, n_heads: usize, head_dim: usize, theta: f32) -> Vec<f32> {
    check_shapes(x, positions, n_tokens, n_heads, head_dim);
    let half = head_dim / 2;
    let mut out = x.to_vec();
    for (t, &position) in positions.iter().enumerate().take(n_tokens) {
        for h in 0..n_heads {
            let base = (t * n_heads + h) * head_dim;
            for i in 0..half {
                let (sin, cos) = angle(position, i, head_dim, theta).sin_cos();
                let x0 = f64::from(x[base + i]);
                let x1 = f64::from(x[base + i + half]);
                out[base + i] = (x0 * cos - x1 * sin) as f32;
                out[base + i + half] = (x1 * cos + x0 * sin) as f32;
            }
        }
    }
    out
}

/// Applies RoPE to `x` in place. The sines and cosines are computed once per token and
/// shared by its heads; tokens run in parallel when `x` is large.
///
/// # Panics
/// When `head_dim` is odd or a slice length does not match the shape.
pub fn rope(x: &mut [f32], positions: &[u32], n_tokens: usize, n_heads: usize, head_dim: usize, theta: f32) {
    check_shapes(x, positions, n_tokens, n_heads, head_dim);
    let row_len = n_heads * head_dim;
    if row_len == 0 {
        return;
    }
    let half = head_dim / 2;
    let inv_freq: Vec<f64> = (0..half).map(|i| angle(1, i, head_dim, theta)).collect();

    let rotate_token = |(row, &pos): (&mut [f32], &u32)| {
        // At most head_dim/2 pairs; a stack buffer avoids an allocation per token for
        // head_dim up to 512.
        let mut table = [(0.0f32, 0.0f32); 256];
        let mut heap_table = Vec::new();
        let sin_cos: &mut [(f32, f32)] = if half <= table.len() {
            &mut table[..half]
        } else {
            heap_table.resize(half, (0.0, 0.0));
            &mut heap_table
        };
        for (entry, &freq) in sin_cos.iter_mut().zip(&inv_freq) {
            let (sin, cos) = (f64::from(pos) * freq).sin_cos();
            *entry = (sin as f32, cos as f32);
        }
        for head in row.chunks_exact_mut(head_dim) {
            let (first, second) = head.split_at_mut(half);
            for ((x0, x1), &(sin, cos)) in first.iter_mut().zip(second.iter_mut()).zip(sin_cos.iter()) {
                let (a, b) = (*x0, *x1);
                *x0 = a * cos - b * sin;
                *x1 = b * cos + a * sin;
            }
        }
    };
    if x.len() >= PARALLEL_MIN_ELEMENTS && n_tokens > 1 {
        x.par_chunks_mut(row_len).zip(positions.par_iter()).for_each(rotate_token);
    } else {
        x.chunks_mut(row_len).zip(positions.iter()).for_each(rotate_token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::{assert_close, random_vec};

    #[test]
    fn ref_position_zero_is_identity() {
        let x = random_vec(2 * 3 * 8, 1.0, 1);
        assert_eq!(rope_ref(&x, &[0, 0], 2, 3, 8, ROPE_THETA), x);
    }

    #[test]
    fn ref_known_rotation() {
        // head_dim 2: one pair, angle = pos, so position 1 rotates (1, 0) to (cos 1, sin 1).
        let out = rope_ref(&[1.0, 0.0], &[1], 1, 1, 2, ROPE_THETA);
        assert!((out[0] - 1f32.cos()).abs() < 1e-7);
        assert!((out[1] - 1f32.sin()).abs() < 1e-7);
        // head_dim 4: pair 1 has frequency theta^(-1/2) = 0.01 with theta 10000.
        let out = rope_ref(&[0.0, 1.0, 0.0, 0.0], &[100], 1, 1, 4, ROPE_THETA);
        assert!((out[1] - 1f32.cos()).abs() < 1e-6, "{out:?}");
        assert!((out[3] - 1f32.sin()).abs() < 1e-6, "{out:?}");
    }

    #[test]
    fn fast_matches_ref_ragged() {
        for &n_tokens in &[1usize, 7, 33, 130] {
            for &(n_heads, head_dim) in &[(1usize, 2usize), (3, 8), (5, 64), (2, 130)] {
                let x = random_vec(n_tokens * n_heads * head_dim, 1.0, (n_tokens + head_dim) as u64);
                let positions: Vec<u32> = (0..n_tokens as u32).map(|t| t * 37 % 2048).collect();
                let want = rope_ref(&x, &positions, n_tokens, n_heads, head_dim, ROPE_THETA);
                let mut got = x.clone();
                rope(&mut got, &positions, n_tokens, n_heads, head_dim, ROPE_THETA);
                // Same f64 angles; the f32 products differ by about one ulp.
                assert_close(&got, &want, 1e-6, 1e-6, &format!("tokens={n_tokens} heads={n_heads} dim={head_dim}"));
            }
        }
    }

    #[test]
    fn fast_matches_ref_large_positions_and_magnitude() {
        let (n_tokens, n_heads, head_dim) = (67, 4, 600);
        let x = random_vec(n_tokens * n_heads * head_dim, 1e4, 9);
        let positions: Vec<u32> = (0..n_tokens as u32).map(|t| 100_000 + t * 1000).collect();
        let want = rope_ref(&x, &positions, n_tokens, n_heads, head_dim, 500_000.0);
        let mut got = x.clone();
        rope(&mut got, &positions, n_tokens, n_heads, head_dim, 500_000.0);
        assert_close(&got, &want, 1e-5, 1e-2, "large positions, |x| ~ 1e4");
    }
}
