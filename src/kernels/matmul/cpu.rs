//! CPU matrix multiply `C = A·B (+ bias)`, dense row-major `f32`.
//!
//! Shapes: A is `m × k`; B is `k × n`, or `n × k` when `transpose_b` (the layout of a
//! PyTorch `nn.Linear` weight, `[out_features, in_features]`); the optional bias has `n`
//! entries and is added to every row; C is `m × n`.
//!
//! [`matmul_ref`] accumulates in `f64` and is the oracle for the GPU parity tests.
//! [`matmul`] and [`matmul_into`] go through the `gemm` crate, which picks AVX2/FMA or
//! AVX-512 micro-kernels at run time.

use rayon::prelude::*;

/// Below this many multiply-adds a product runs on the calling thread, because handing
/// work to rayon costs more than it saves.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// Up to this many rows of A, a large product is split over column blocks of B instead of
/// relying on `gemm`'s own threading. The reason is that gemm 0.19 sends products with one row
/// (decode with batch 1) to a single-threaded matrix-vector kernel, which leaves the other
/// cores idle.
const SPLIT_COLUMNS_MAX_M: usize = 4;

/// Smallest column block of the split path, so each task streams a useful amount of B.
const MIN_COLUMN_BLOCK: usize = 64;

/// Panics with a message naming the operand when a slice does not match its shape.
fn check_shapes(a: &[f32], b: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize) {
    assert_eq!(a.len(), m * k, "matmul: A has {} elements, expected m·k = {m}·{k}", a.len());
    assert_eq!(b.len(), k * n, "matmul: B has {} elements, expected k·n = {k}·{n}", b.len());
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "matmul: bias has {} elements, expected n = {n}", bias.len());
    }
}

/// Computes `A·B (+ bias)` with `f64` accumulation: the plain reference.
///
/// # Panics
/// When a slice length does not match `m`, `n` and `k`.
pub fn matmul_ref(a: &[f32], b: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize, transpose_b: bool) -> Vec<f32> {
    check_shapes(a, b, bias, m, n, k);
    let mut out = vec![0.0f32; m * n];
    for i in 0..m {
        let a_row = &a[i * k..(i + 1) * k];
        for j in 0..n {
            let mut acc = bias.map_or(0.0, |bias| f64::from(bias[j]));
            for (p, &a_ip) in a_row.iter().enumerate() {
                let b_pj = if transpose_b { b[j * k + p] } else { b[p * n + j] };
                acc += f64::from(a_ip) * f64::from(b_pj);
            }
            out[i * n + j] = acc as f32;
        }
    }
    out
}

/// Computes `A·B (+ bias)` with the fast path and returns C.
///
/// # Panics
/// When a slice length does not match `m`, `n` and `k`.
pub fn matmul(a: &[f32], b: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize, transpose_b: bool) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    matmul_into(&mut out, a, b, bias, m, n, k, transpose_b);
    out
}

/// Writes `A·B (+ bias)` into `out` (`m × n`, overwritten) with the `gemm` crate.
/// Products of at least 2^18 multiply-adds use all threads of the current rayon pool.
///
/// # Panics
/// When a slice length does not match `m`, `n` and `k`.
#[expect(clippy::too_many_arguments, reason = "mirrors the BLAS sgemm parameter list")]
pub fn matmul_into(out: &mut [f32], a: &[f32], b: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize, transpose_b: bool) {
    check_shapes(a, b, bias, m, n, k);
    assert_eq!(out.len(), m * n, "matmul: C has {} elements, expected m·n = {m}·{n}", out.len());
    if m == 0 || n == 0 {
        return;
    }

    // gemm computes dst = alpha·dst + beta·A·B. The bias enters as a pre-filled dst that
    // is read back with alpha = 1, which saves a second pass over C.
    let read_dst = match bias {
        Some(bias) => {
            for row in out.chunks_exact_mut(n) {
                row.copy_from_slice(bias);
            }
            true
        }
        None => {
            out.fill(0.0);
            false
        }
    };
    if k == 0 {
        return;
    }

    if m <= SPLIT_COLUMNS_MAX_M && n >= 2 * MIN_COLUMN_BLOCK && m * n * k >= PARALLEL_MIN_MACS && rayon::current_num_threads() > 1 {
        matmul_split_columns(out, a, b, m, n, k, transpose_b, read_dst);
        return;
    }

    let parallelism = if m * n * k >= PARALLEL_MIN_MACS {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // Strides are in elements: `_cs` steps one column, `_rs` one row.
    let (b_cs, b_rs) = if transpose_b { (k as isize, 1) } else { (1, n as isize) };

    // SAFETY: the asserts above guarantee that every index the strides reach lies inside
    // `a` (m·k), `b` (k·n) and `out` (m·n), and `out` does not alias the inputs because
    // it is borrowed mutably.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            read_dst,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A raw pointer that may cross threads. Tasks write through it to disjoint columns only.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

// SAFETY: the pointer is only dereferenced by `gemm` inside `matmul_split_columns`, where each
// task writes a column range that no other task touches.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// Returns the pointer. Closures call this method instead of reading the field, so that
    /// they capture the whole `Send` wrapper rather than the bare pointer.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Computes a product with few rows as independent `gemm` calls on column blocks of B and C,
/// one rayon task per block. Shapes were checked by the caller, and `out` already contains the
/// bias when `read_dst`.
#[expect(clippy::too_many_arguments, reason = "private helper of matmul_into with the same parameters")]
fn matmul_split_columns(out: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize, transpose_b: bool, read_dst: bool) {
    let tasks = 4 * rayon::current_num_threads();
    let block = n.div_ceil(tasks).max(MIN_COLUMN_BLOCK).next_multiple_of(16);
    let (b_cs, b_rs) = if transpose_b { (k as isize, 1) } else { (1, n as isize) };
    let out_ptr = SendPtr(out.as_mut_ptr());

    (0..n.div_ceil(block)).into_par_iter().for_each(|index| {
        let first = index * block;
        let cols = block.min(n - first);
        // Column `first` of B starts at row `first` of the n×k layout, or element `first` of
        // the first row of the k×n layout.
        let b_offset = if transpose_b { first * k } else { first };
        // SAFETY: `first + cols <= n`, so the block lies inside B and inside every row of C.
        // Blocks are disjoint column ranges, so no two tasks write the same element of C,
        // and `out` stays mutably borrowed (unused elsewhere) until every task has finished.
        unsafe {
            gemm::gemm(
                m,
                cols,
                k,
                out_ptr.get().add(first),
                1,
                n as isize,
                read_dst,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr().add(b_offset),
                b_cs,
                b_rs,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::{assert_close, random_vec};

    #[test]
    fn ref_known_product() {
        // [1 2; 3 4] · [5 6; 7 8] + [1, -1] = [20 21; 44 49]
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let c = matmul_ref(&a, &b, Some(&[1.0, -1.0]), 2, 2, 2, false);
        assert_eq!(c, vec![20.0, 21.0, 44.0, 49.0]);

        let b_t = [5.0, 7.0, 6.0, 8.0];
        let c_t = matmul_ref(&a, &b_t, None, 2, 2, 2, true);
        assert_eq!(c_t, vec![19.0, 22.0, 43.0, 50.0]);
    }

    #[test]
    fn fast_matches_ref_ragged() {
        let sizes = [1usize, 7, 33, 67, 130];
        let mut seed = 1;
        for &m in &sizes {
            for &n in &sizes {
                for &k in &[1usize, 7, 67, 130] {
                    for transpose_b in [false, true] {
                        seed += 1;
                        let a = random_vec(m * k, 1.0, seed);
                        let b = random_vec(k * n, 1.0, seed + 1000);
                        let bias = random_vec(n, 1.0, seed + 2000);
                        let want = matmul_ref(&a, &b, Some(&bias), m, n, k, transpose_b);
                        let got = matmul(&a, &b, Some(&bias), m, n, k, transpose_b);
                        // f32 accumulation over k terms of size ~1: error grows like sqrt(k)·eps.
                        assert_close(&got, &want, 1e-5, 1e-4, &format!("m={m} n={n} k={k} t={transpose_b}"));
                    }
                }
            }
        }
    }

    #[test]
    fn fast_large_parallel_and_magnitude() {
        let (m, n, k) = (130, 257, 300);
        let a = random_vec(m * k, 1e3, 5);
        let b = random_vec(k * n, 1e3, 6);
        let want = matmul_ref(&a, &b, None, m, n, k, true);
        let got = matmul(&a, &b, None, m, n, k, true);
        // Terms reach 1e6 and sums cancel, so the bound is relative to sqrt(k)·1e6.
        assert_close(&got, &want, 1e-4, 1e-4 * 1e6 * (k as f32).sqrt(), "large");
    }

    #[test]
    fn few_rows_split_over_columns() {
        // m <= 4 with a large n·k takes the column-split path; n = 1000 is not a multiple of
        // the block, so the last block is ragged.
        for m in 1..=5 {
            for transpose_b in [false, true] {
                let (n, k) = (1000, 300);
                let a = random_vec(m * k, 1.0, m as u64);
                let b = random_vec(k * n, 1.0, 40 + m as u64);
                let bias = random_vec(n, 1.0, 80);
                let want = matmul_ref(&a, &b, Some(&bias), m, n, k, transpose_b);
                let got = matmul(&a, &b, Some(&bias), m, n, k, transpose_b);
                assert_close(&got, &want, 1e-5, 1e-4, &format!("m={m} t={transpose_b}"));
            }
        }
    }

    #[test]
    fn into_overwrites_and_handles_empty_k() {
        let mut out = vec![7.0f32; 6];
        matmul_into(&mut out, &[], &[], Some(&[1.0, 2.0, 3.0]), 2, 3, 0, false);
        assert_eq!(out, vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);

        let mut out = vec![7.0f32; 1];
        matmul_into(&mut out, &[2.0], &[3.0], None, 1, 1, 1, false);
        assert_eq!(out, vec![6.0]);
    }
}
