//! CPU LayerNorm and RMSNorm over the last dimension of a dense row-major `rows × cols` matrix.
//!
//! - LayerNorm: `y = (x - mean) / sqrt(var + eps) · weight + bias`, with the biased variance
//!   (divided by `cols`), as in PyTorch's `nn.LayerNorm`.
//! - RMSNorm: `y = x / sqrt(mean(x²) + eps) · weight`, as in Llama.
//!
//! The references accumulate in `f64`. The fast paths use `f32` with a two-pass variance,
//! which keeps rows of magnitude ~1e4 accurate, and run in parallel over rows when large.

use rayon::prelude::*;

/// Default epsilon added to the variance (LayerNorm) or mean square (RMSNorm).
pub const NORM_EPS: f32 = 1e-5;

/// Below this many elements a norm runs on the calling thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

fn check_shapes(x: &[f32], weight: &[f32], bias: Option<&[f32]>, rows: usize, cols: usize) {
    assert_eq!(x.len(), rows * cols, "norm: x has {} elements, expected rows·cols = {rows}·{cols}", x.len());
    assert_eq!(weight.len(), cols, "norm: weight has {} elements, expected cols = {cols}", weight.len());
    if let Some(bias) = bias {
        assert_eq!(bias.len(), cols, "norm: bias has {} elements, expected cols = {cols}", bias.len());
    }
}

/// Computes LayerNorm of each row in `f64`: the plain reference.
///
/// # Panics
/// When a slice length does not match `rows` and `cols`.
pub fn layernorm_ref(x: &[f32], weight: &[f32], bias: &[f32], rows: usize, cols: usize, eps: f32) -> Vec<f32> {
    check_shapes(x, weight, Some(bias), rows, cols);
    let mut out = vec![0.0f32; x.len()];
    if cols == 0 {
        return out;
    }
    for (row_in, row_out) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let mean = row_in.iter().map(|&v| f64::from(v)).sum::<f64>() / cols as f64;
        let var = row_in.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / cols as f64;
        let inv_std = 1.0 / (var + f64::from(eps)).sqrt();
        for (j, o) in row_out.iter_mut().enumerate() {
            let normed = (f64::from(row_in[j]) - mean) * inv_std;
            *o = (normed * f64::from(weight[j]) + f64::from(bias[j])) as f32;
        }
    }
    out
}

/// Computes RMSNorm of each row in `f64`: the plain reference.
///
/// # Panics
/// When a slice length does not match `rows` and `cols`.
pub fn rmsnorm_ref(x: &[f32], weight: &[f32], rows: usize, cols: usize, eps: f32) -> Vec<f32> {
    check_shapes(x, weight, None, rows, cols);
    let mut out = vec![0.0f32; x.len()];
    if cols == 0 {
        return out;
    }
    for (row_in, row_out) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let mean_square = row_in.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / cols as f64;
        let inv_rms = 1.0 / (mean_square + f64::from(eps)).sqrt();
        for (j, o) in row_out.iter_mut().enumerate() {
            *o = (f64::from(row_in[j]) * inv_rms * f64::from(weight[j])) as f32;
        }
    }
    out
}

/// Writes LayerNorm of each row of `x` into `out`.
///
/// # Panics
/// When a slice length does not match `rows` and `cols`.
pub fn layernorm(out: &mut [f32], x: &[f32], weight: &[f32], bias: &[f32], rows: usize, cols: usize, eps: f32) {
    check_shapes(x, weight, Some(bias), rows, cols);
    assert_eq!(out.len(), x.len(), "norm: out has {} elements, expected {}", out.len(), x.len());
    if cols == 0 {
        return;
    }
    let row = |(row_out, row_in): (&mut [f32], &[f32])| {
        let mean = sum_f32(row_in) / cols as f32;
        let var = sum_squared_deviation(row_in, mean) / cols as f32;
        let inv_std = 1.0 / (var + eps).sqrt();
        for (((o, &v), &w), &b) in row_out.iter_mut().zip(row_in).zip(weight).zip(bias) {
            *o = (v - mean) * inv_std * w + b;
        }
    };
    if x.len() >= PARALLEL_MIN_ELEMENTS && rows > 1 {
        out.par_chunks_mut(cols).zip(x.par_chunks(cols)).for_each(row);
    } else {
        out.chunks_mut(cols).zip(x.chunks(cols)).for_each(row);
    }
}

/// Writes RMSNorm of each row of `x` into `out`.
///
/// # Panics
/// When a slice length does not match `rows` and `cols`.
pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], rows: usize, cols: usize, eps: f32) {
    check_shapes(x, weight, None, rows, cols);
    assert_eq!(out.len(), x.len(), "norm: out has {} elements, expected {}", out.len(), x.len());
    if cols == 0 {
        return;
    }
    let row = |(row_out, row_in): (&mut [f32], &[f32])| {
        let mean_square = sum_squared_deviation(row_in, 0.0) / cols as f32;
        let inv_rms = 1.0 / (mean_square + eps).sqrt();
        for ((o, &v), &w) in row_out.iter_mut().zip(row_in).zip(weight) {
            *o = v * inv_rms * w;
        }
    };
    if x.len() >= PARALLEL_MIN_ELEMENTS && rows > 1 {
        out.par_chunks_mut(cols).zip(x.par_chunks(cols)).for_each(row);
    } else {
        out.chunks_mut(cols).zip(x.chunks(cols)).for_each(row);
    }
}

/// Sum with eight independent partial sums, which vectorises and rounds less than a
/// single running sum.
fn sum_f32(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `Σ (v - center)²` with eight partial sums.
fn sum_squared_deviation(values: &[f32], center: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&v| (v - center) * (v - center)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += (v - center) * (v - center);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::{assert_close, random_vec};

    #[test]
    fn ref_known_values() {
        // Row [1, 3]: mean 2, variance 1, so LayerNorm gives ±1/sqrt(1 + eps).
        let ln = layernorm_ref(&[1.0, 3.0], &[1.0, 2.0], &[0.0, 0.5], 1, 2, 0.0);
        assert_eq!(ln, vec![-1.0, 2.5]);
        // Row [3, 4]: mean square 12.5.
        let rms = rmsnorm_ref(&[3.0, 4.0], &[1.0, 1.0], 1, 2, 0.0);
        let r = 12.5f64.sqrt();
        assert_eq!(rms, vec![(3.0 / r) as f32, (4.0 / r) as f32]);
    }

    fn check_both(rows: usize, cols: usize, scale: f32, seed: u64, rtol: f32, atol: f32) {
        let x = random_vec(rows * cols, scale, seed);
        // Shift rows away from zero mean so LayerNorm has a mean to remove.
        let x: Vec<f32> = x.iter().map(|v| v + 0.5 * scale).collect();
        let weight: Vec<f32> = random_vec(cols, 0.5, seed + 1).iter().map(|w| w + 1.0).collect();
        let bias = random_vec(cols, 0.5, seed + 2);
        let label = format!("rows={rows} cols={cols} scale={scale}");

        let want = layernorm_ref(&x, &weight, &bias, rows, cols, NORM_EPS);
        let mut got = vec![0.0; x.len()];
        layernorm(&mut got, &x, &weight, &bias, rows, cols, NORM_EPS);
        assert_close(&got, &want, rtol, atol, &format!("layernorm {label}"));

        let want = rmsnorm_ref(&x, &weight, rows, cols, NORM_EPS);
        let mut got = vec![0.0; x.len()];
        rmsnorm(&mut got, &x, &weight, rows, cols, NORM_EPS);
        assert_close(&got, &want, rtol, atol, &format!("rmsnorm {label}"));
    }

    #[test]
    fn fast_matches_ref_ragged() {
        // Outputs are O(1); f32 sums over up to 1000 terms leave errors of a few 1e-6.
        for &rows in &[1usize, 7, 33, 130] {
            for &cols in &[1usize, 7, 33, 67, 130, 1000] {
                check_both(rows, cols, 1.0, (rows * 1000 + cols) as u64, 1e-5, 1e-5);
            }
        }
    }

    #[test]
    fn fast_matches_ref_large_magnitude() {
        // Entries ~1e4 with mean ~5e3: the two-pass variance keeps the error near f32 eps
        // relative to the normalised output.
        for &cols in &[7usize, 67, 1000] {
            check_both(33, cols, 1e4, cols as u64, 1e-4, 1e-4);
        }
    }

    #[test]
    fn parallel_path_matches_ref() {
        check_both(64, 768, 1.0, 11, 1e-5, 1e-5);
    }

    #[test]
    fn constant_row_is_finite() {
        // Zero variance: eps keeps the division finite and the output equals the bias.
        let mut got = vec![0.0; 4];
        layernorm(&mut got, &[2.0; 4], &[1.0; 4], &[0.25; 4], 1, 4, NORM_EPS);
        assert_eq!(got, vec![0.25; 4]);
    }
}
