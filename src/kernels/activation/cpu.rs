//! CPU activations: GELU (tanh form), SwiGLU and ReLU, element-wise on `f32` slices.
//!
//! - GELU, tanh form (Hendrycks and Gimpel, "Gaussian Error Linear Units", 2016, and GPT-2):
//!   `0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))`.
//! - SwiGLU (Shazeer, "GLU Variants Improve Transformer", 2020): `silu(gate)·up`, with
//!   `silu(g) = g·sigmoid(g)`.
//!
//! Every function returns finite values for finite inputs up to `f32::MAX`: for large |x|
//! GELU tends to x or 0 and SiLU to g or 0, never NaN. The references compute in `f64`.
//! The fast paths use the identity `0.5·(1 + tanh(u)) = 1 / (1 + exp(-2u))`, where an
//! overflowing `exp` gives a clean 0 instead of the `inf·0` a literal tanh form can hit.

use rayon::prelude::*;

/// `sqrt(2/π)`, the GELU tanh-form coefficient.
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
/// Cubic coefficient of the GELU tanh form.
const GELU_CUBIC: f64 = 0.044_715;

/// Below this many elements an activation runs on the calling thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// Chunk of elements one rayon task handles.
const PARALLEL_CHUNK: usize = 1 << 13;

/// Computes GELU (tanh form) of each element in `f64`: the plain reference.
pub fn gelu_tanh_ref(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| {
            let v = f64::from(v);
            // In f64, v³ of an f32 value cannot overflow (f32::MAX³ ≈ 4e115), and tanh
            // saturates to ±1, so the result is v or 0 for large |v|.
            let u = SQRT_2_OVER_PI * (v + GELU_CUBIC * v * v * v);
            (0.5 * v * (1.0 + u.tanh())) as f32
        })
        .collect()
}

/// Computes `silu(gate)·up` element-wise in `f64`: the plain reference.
///
/// # Panics
/// When `gate` and `up` differ in length.
pub fn swiglu_ref(gate: &[f32], up: &[f32]) -> Vec<f32> {
    assert_eq!(gate.len(), up.len(), "swiglu: gate has {} elements but up has {}", gate.len(), up.len());
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| {
            let g = f64::from(g);
            let silu = g / (1.0 + (-g).exp());
            (silu * f64::from(u)) as f32
        })
        .collect()
}

/// Computes `max(x, 0)` of each element: the plain reference.
pub fn relu_ref(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| v.max(0.0)).collect()
}

#[inline]
fn gelu_tanh_scalar(v: f32) -> f32 {
    // v·v·v may overflow to ±inf for |v| > 7e12; u is then ±inf and the quotient is v or -0.
    let u = (SQRT_2_OVER_PI as f32) * (v + (GELU_CUBIC as f32) * v * v * v);
    v / (1.0 + (-2.0 * u).exp())
}

#[inline]
fn silu_scalar(g: f32) -> f32 {
    g / (1.0 + (-g).exp())
}

/// Replaces each element of `x` by its GELU (tanh form), in parallel when large.
pub fn gelu_tanh(x: &mut [f32]) {
    let apply = |chunk: &mut [f32]| chunk.iter_mut().for_each(|v| *v = gelu_tanh_scalar(*v));
    if x.len() >= PARALLEL_MIN_ELEMENTS {
        x.par_chunks_mut(PARALLEL_CHUNK).for_each(apply);
    } else {
        apply(x);
    }
}

/// Writes `silu(gate)·up` into `out`, in parallel when large.
///
/// # Panics
/// When the three slices differ in length.
pub fn swiglu(out: &mut [f32], gate: &[f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: gate has {} elements but up has {}", gate.len(), up.len());
    assert_eq!(out.len(), gate.len(), "swiglu: out has {} elements, expected {}", out.len(), gate.len());
    let apply = |((o, g), u): ((&mut [f32], &[f32]), &[f32])| {
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = silu_scalar(g) * u;
        }
    };
    if out.len() >= PARALLEL_MIN_ELEMENTS {
        out.par_chunks_mut(PARALLEL_CHUNK)
            .zip(gate.par_chunks(PARALLEL_CHUNK))
            .zip(up.par_chunks(PARALLEL_CHUNK))
            .for_each(apply);
    } else {
        apply(((out, gate), up));
    }
}

/// Multiplies `gate` in place by `silu(gate)·up`, for callers that reuse the gate buffer.
///
/// # Panics
/// When `gate` and `up` differ in length.
pub fn swiglu_in_place(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: gate has {} elements but up has {}", gate.len(), up.len());
    let apply = |(g, u): (&mut [f32], &[f32])| {
        for (g, &u) in g.iter_mut().zip(u) {
            *g = silu_scalar(*g) * u;
        }
    };
    if gate.len() >= PARALLEL_MIN_ELEMENTS {
        gate.par_chunks_mut(PARALLEL_CHUNK).zip(up.par_chunks(PARALLEL_CHUNK)).for_each(apply);
    } else {
        apply((gate, up));
    }
}

/// Replaces each element of `x` by `max(x, 0)`.
pub fn relu(x: &mut [f32]) {
    let apply = |chunk: &mut [f32]| chunk.iter_mut().for_each(|v| *v = v.max(0.0));
    if x.len() >= PARALLEL_MIN_ELEMENTS {
        x.par_chunks_mut(PARALLEL_CHUNK).for_each(apply);
    } else {
        apply(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::{assert_close, random_vec};

    #[test]
    fn gelu_ref_known_values() {
        let out = gelu_tanh_ref(&[0.0, 1.0, -1.0]);
        assert_eq!(out[0], 0.0);
        // PyTorch gelu(1.0, approximate="tanh") = 0.8411920
        assert!((out[1] - 0.841_192).abs() < 1e-6, "gelu(1) = {}", out[1]);
        assert!((out[2] + 0.158_808).abs() < 1e-6, "gelu(-1) = {}", out[2]);
    }

    #[test]
    fn fast_matches_ref_ragged() {
        for &len in &[1usize, 7, 33, 67, 130, 40_000] {
            let x = random_vec(len, 6.0, len as u64);
            let up = random_vec(len, 3.0, len as u64 + 1);

            let mut got = x.clone();
            gelu_tanh(&mut got);
            // The sigmoid identity and f32 exp differ from f64 tanh by a few ulps.
            assert_close(&got, &gelu_tanh_ref(&x), 1e-5, 1e-6, &format!("gelu len={len}"));

            let mut got = vec![0.0; len];
            swiglu(&mut got, &x, &up);
            let want = swiglu_ref(&x, &up);
            assert_close(&got, &want, 1e-5, 1e-6, &format!("swiglu len={len}"));
            let mut in_place = x.clone();
            swiglu_in_place(&mut in_place, &up);
            assert_eq!(in_place, got, "swiglu_in_place differs from swiglu at len={len}");

            let mut got = x.clone();
            relu(&mut got);
            assert_eq!(got, relu_ref(&x), "relu len={len}");
        }
    }

    #[test]
    fn fast_matches_ref_at_80() {
        let x: Vec<f32> = (-160..=160).map(|i| i as f32 * 0.5).collect();
        let mut got = x.clone();
        gelu_tanh(&mut got);
        assert_close(&got, &gelu_tanh_ref(&x), 1e-5, 1e-6, "gelu ±80");
        let ones = vec![1.0; x.len()];
        let mut got = vec![0.0; x.len()];
        swiglu(&mut got, &x, &ones);
        assert_close(&got, &swiglu_ref(&x, &ones), 1e-5, 1e-6, "swiglu ±80");
    }

    #[test]
    fn finite_for_huge_inputs() {
        let x = [1e30f32, -1e30, f32::MAX, -f32::MAX, 80.0, -80.0];
        let expected_gelu = [1e30f32, 0.0, f32::MAX, 0.0, 80.0, 0.0];
        let want = gelu_tanh_ref(&x);
        let mut got = x;
        gelu_tanh(&mut got);
        for i in 0..x.len() {
            assert_eq!(want[i], expected_gelu[i], "gelu_tanh_ref({})", x[i]);
            assert_eq!(got[i], expected_gelu[i], "gelu_tanh({})", x[i]);
        }

        let up = [1.0f32; 6];
        let want = swiglu_ref(&x, &up);
        let mut got = [0.0f32; 6];
        swiglu(&mut got, &x, &up);
        for i in 0..x.len() {
            assert!(want[i].is_finite(), "swiglu_ref({}) = {}", x[i], want[i]);
            assert!(got[i].is_finite(), "swiglu({}) = {}", x[i], got[i]);
            assert_eq!(got[i], want[i], "swiglu({})", x[i]);
        }
    }
}
