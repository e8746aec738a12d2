//! CPU row-wise softmax over a dense row-major `rows × cols` matrix.
//!
//! Both paths subtract the row maximum before exponentiating, so rows with entries near
//! ±1e4 neither overflow nor lose the largest terms. A row whose maximum is `-inf` (every
//! entry masked) becomes all zeros rather than NaN.

use rayon::prelude::*;

/// Rows with fewer elements than this are not worth splitting across threads one by one.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// Computes the softmax of each row with `f64` arithmetic: the plain reference.
///
/// # Panics
/// When `x.len() != rows * cols`.
pub fn softmax_rows_ref(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(x.len(), rows * cols, "softmax: x has {} elements, expected rows·cols = {rows}·{cols}", x.len());
    let mut out = vec![0.0f32; x.len()];
    if cols == 0 {
        return out;
    }
    for (row_in, row_out) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let max = row_in.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        if max == f64::NEG_INFINITY {
            continue;
        }
        let sum: f64 = row_in.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        for (o, &v) in row_out.iter_mut().zip(row_in) {
            *o = ((f64::from(v) - max).exp() / sum) as f32;
        }
    }
    out
}

/// Replaces each row of `x` by its softmax in place, in parallel over rows when large.
///
/// # Panics
/// When `x.len() != rows * cols`.
pub fn softmax_rows(x: &mut [f32], rows: usize, cols: usize) {
    assert_eq!(x.len(), rows * cols, "softmax: x has {} elements, expected rows·cols = {rows}·{cols}", x.len());
    if cols == 0 {
        return;
    }
    if x.len() >= PARALLEL_MIN_ELEMENTS && rows > 1 {
        x.par_chunks_mut(cols).for_each(softmax_row_in_place);
    } else {
        x.chunks_mut(cols).for_each(softmax_row_in_place);
    }
}

/// Softmax of one row in place, in `f32`.
pub(crate) fn softmax_row_in_place(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::{assert_close, random_vec};

    #[test]
    fn ref_known_values() {
        let out = softmax_rows_ref(&[0.0, 0.0, 1.0, 3.0], 2, 2);
        assert_eq!(out[0], 0.5);
        assert_eq!(out[1], 0.5);
        let e = (2.0f64).exp();
        assert!((f64::from(out[3]) - e / (1.0 + e)).abs() < 1e-7);
    }

    #[test]
    fn fast_matches_ref_ragged() {
        for (i, &rows) in [1usize, 7, 33, 130].iter().enumerate() {
            for (j, &cols) in [1usize, 7, 33, 67, 130, 1000].iter().enumerate() {
                let x = random_vec(rows * cols, 5.0, (i * 10 + j) as u64);
                let want = softmax_rows_ref(&x, rows, cols);
                let mut got = x.clone();
                softmax_rows(&mut got, rows, cols);
                // f32 exp and a sum of up to 1000 terms: a few ulps relative.
                assert_close(&got, &want, 1e-5, 1e-7, &format!("rows={rows} cols={cols}"));
            }
        }
    }

    #[test]
    fn stable_for_large_magnitude() {
        let (rows, cols) = (33, 67);
        let x = random_vec(rows * cols, 1e4, 99);
        let want = softmax_rows_ref(&x, rows, cols);
        let mut got = x.clone();
        softmax_rows(&mut got, rows, cols);
        assert!(got.iter().all(|v| v.is_finite()), "softmax of |x| ~ 1e4 produced a non-finite value");
        // Subtracting the max is exact for entries within a factor 2 of it (Sterbenz lemma), and
        // the others underflow to 0 after exp, so only exp and the sum round.
        assert_close(&got, &want, 1e-5, 1e-7, "large magnitude");
        for row in got.chunks_exact(cols) {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "row sums to {sum}");
        }
    }

    #[test]
    fn parallel_path_matches_ref() {
        let (rows, cols) = (64, 1024);
        let x = random_vec(rows * cols, 10.0, 3);
        let want = softmax_rows_ref(&x, rows, cols);
        let mut got = x.clone();
        softmax_rows(&mut got, rows, cols);
        assert_close(&got, &want, 1e-5, 1e-7, "parallel");
    }

    #[test]
    fn masked_row_becomes_zeros() {
        let x = [f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY];
        let want = softmax_rows_ref(&x, 2, 2);
        assert_eq!(want, vec![0.0, 0.0, 1.0, 0.0]);
        let mut got = x;
        softmax_rows(&mut got, 2, 2);
        assert_eq!(got.to_vec(), want);
    }
}
