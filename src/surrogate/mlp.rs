//! One multilayer perceptron of the ensemble: dense layers, activations, the batched forward
//! pass and its gradient. Matrices are row-major `f32`, and products go through the `gemm`
//! crate on one thread, so a member's arithmetic never depends on the thread count.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Nonlinearity applied after every hidden layer (the output layer is linear).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    /// GELU in its tanh approximation (Hendrycks and Gimpel 2016, as used by GPT-2).
    Gelu,
    /// SiLU, also called swish: `z · sigmoid(z)`.
    #[default]
    Silu,
    Tanh,
}

/// sqrt(2 / π), the scale inside the tanh approximation of GELU.
const GELU_SCALE: f32 = 0.797_884_6;
/// Cubic coefficient of the tanh approximation of GELU.
const GELU_CUBIC: f32 = 0.044_715;

impl Activation {
    /// Code the WGSL shader switches on; keep in step with `shaders/surrogate_mlp.wgsl`.
    pub fn shader_code(self) -> u32 {
        match self {
            Activation::Relu => 0,
            Activation::Gelu => 1,
            Activation::Silu => 2,
            Activation::Tanh => 3,
        }
    }

    /// Applies the activation to one value.
    #[inline]
    pub fn apply(self, z: f32) -> f32 {
        match self {
            Activation::Relu => z.max(0.0),
            Activation::Gelu => 0.5 * z * (1.0 + (GELU_SCALE * (z + GELU_CUBIC * z * z * z)).tanh()),
            Activation::Silu => z / (1.0 + (-z).exp()),
            Activation::Tanh => z.tanh(),
        }
    }

    /// Applies the activation to every value of `values`, the inference path. SiLU, GELU and
    /// tanh use `exp_approx` instead of the C library's `expf` and `tanhf`, so the loop has no
    /// calls and the compiler vectorises it. The results stay within 1e-6 relative (1e-7
    /// absolute near zero) of [`Activation::apply`], as `applied_slices_match_scalar` checks.
    pub fn apply_slice(self, values: &mut [f32]) {
        match self {
            Activation::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Gelu => values.iter_mut().for_each(|v| {
                let z = *v;
                *v = 0.5 * z * (1.0 + tanh_approx(GELU_SCALE * (z + GELU_CUBIC * z * z * z)));
            }),
            Activation::Silu => values.iter_mut().for_each(|v| *v /= 1.0 + exp_approx(-*v)),
            Activation::Tanh => values.iter_mut().for_each(|v| *v = tanh_approx(*v)),
        }
    }

    /// Derivative of the activation at pre-activation `z`.
    #[inline]
    pub fn derivative(self, z: f32) -> f32 {
        match self {
            Activation::Relu => {
                if z > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Gelu => {
                let inner = GELU_SCALE * (z + GELU_CUBIC * z * z * z);
                let t = inner.tanh();
                let d_inner = GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * z * z);
                0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * d_inner
            }
            Activation::Silu => {
                let s = 1.0 / (1.0 + (-z).exp());
                s * (1.0 + z * (1.0 - s))
            }
            Activation::Tanh => {
                let t = z.tanh();
                1.0 - t * t
            }
        }
    }
}

/// `e^x` in f32, written without calls or branches so that loops over slices vectorise. On
/// [−87, 88] the relative error is below 3e-7 (checked on a fine grid by the test below).
/// Inputs are clamped to that range, where `e^x` is a normal f32. Beyond it the result
/// saturates instead of reaching 0 or ∞, which the callers (sigmoid and tanh) absorb.
///
/// Method: `x = n·ln 2 + r` with `n` the nearest integer to `x / ln 2` (found by adding and
/// subtracting 1.5·2²³) and `|r| ≤ ln 2 / 2`, `e^r` by its degree-6 Taylor polynomial, and
/// `2^n` written directly into the exponent bits.
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 · 2^23
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let exponent = (shifted.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    p * f32::from_bits(((exponent + 127) << 23) as u32)
}

/// `tanh(x)` through [`exp_approx`]: `1 − 2 / (e^{2x} + 1)`, odd-symmetrised so that small
/// |x| keeps its relative accuracy.
#[inline(always)]
fn tanh_approx(x: f32) -> f32 {
    let a = x.abs();
    // For |x| below 2^-12, tanh(x) = x to f32 precision, and the subtraction below would lose it.
    let t = if a < 2.441_406_3e-4 { a } else { 1.0 - 2.0 / (exp_approx(2.0 * a) + 1.0) };
    t.copysign(x)
}

/// A fully connected layer `y = x · weight + bias`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dense {
    pub n_in: usize,
    pub n_out: usize,
    /// `n_in × n_out`, row-major.
    pub weight: Vec<f32>,
    /// `n_out` values.
    pub bias: Vec<f32>,
}

impl Dense {
    /// Creates a layer with Glorot-uniform weights (bound `sqrt(6 / (n_in + n_out))`) and zero
    /// bias.
    fn init(n_in: usize, n_out: usize, rng: &mut impl Rng) -> Self {
        let bound = (6.0 / (n_in + n_out) as f32).sqrt();
        let weight = (0..n_in * n_out).map(|_| rng.random_range(-bound..bound)).collect();
        Dense { n_in, n_out, weight, bias: vec![0.0; n_out] }
    }
}

/// A stack of dense layers with `activation` between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mlp {
    pub layers: Vec<Dense>,
}

/// Values kept from a forward pass for the backward pass: the input of every layer and the
/// pre-activation of every hidden layer.
#[derive(Debug, Default)]
pub struct ForwardCache {
    inputs: Vec<Vec<f32>>,
    pre_activations: Vec<Vec<f32>>,
}

/// Gradients of the loss with respect to every weight and bias, shaped like the layers.
#[derive(Debug, Clone)]
pub struct Gradients {
    pub weight: Vec<Vec<f32>>,
    pub bias: Vec<Vec<f32>>,
}

impl Mlp {
    /// Creates an MLP with widths `n_in → hidden… → n_out`, randomly initialised.
    pub fn new(n_in: usize, hidden: &[usize], n_out: usize, rng: &mut impl Rng) -> Self {
        let mut widths = vec![n_in];
        widths.extend_from_slice(hidden);
        widths.push(n_out);
        let layers = widths.windows(2).map(|w| Dense::init(w[0], w[1], rng)).collect();
        Mlp { layers }
    }

    pub fn n_in(&self) -> usize {
        self.layers[0].n_in
    }

    pub fn n_out(&self) -> usize {
        self.layers[self.layers.len() - 1].n_out
    }

    /// Widest layer output, which sizes scratch buffers.
    pub fn max_width(&self) -> usize {
        self.layers.iter().map(|l| l.n_out.max(l.n_in)).max().unwrap_or(0)
    }

    /// Runs `n` rows of `x` (`n × n_in`) through the network into `out` (`n × n_out`), using
    /// `scratch` (two buffers grown as needed) for hidden activations.
    pub fn forward_into(&self, activation: Activation, x: &[f32], n: usize, out: &mut [f32], scratch: &mut [Vec<f32>; 2]) {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            // Layer i writes buffer i % 2 and reads the other one, which layer i - 1 wrote.
            let (first, second) = scratch.split_at_mut(1);
            let (previous, target) = if i % 2 == 0 { (&second[0], &mut first[0]) } else { (&first[0], &mut second[0]) };
            let input: &[f32] = if i == 0 { x } else { previous };
            if i == last {
                dense_forward(layer, input, n, out);
                break;
            }
            target.resize(n * layer.n_out, 0.0);
            dense_forward(layer, input, n, target);
            activation.apply_slice(target);
        }
    }

    /// Forward pass that keeps what [`Mlp::backward`] needs. Returns the `n × n_out` output.
    pub fn forward_train(&self, activation: Activation, x: &[f32], n: usize, cache: &mut ForwardCache) -> Vec<f32> {
        cache.inputs.clear();
        cache.pre_activations.clear();
        let last = self.layers.len() - 1;
        let mut current = x.to_vec();
        for (i, layer) in self.layers.iter().enumerate() {
            let mut z = vec![0.0; n * layer.n_out];
            dense_forward(layer, &current, n, &mut z);
            cache.inputs.push(std::mem::take(&mut current));
            if i == last {
                return z;
            }
            current = z.iter().map(|&v| activation.apply(v)).collect();
            cache.pre_activations.push(z);
        }
        unreachable!("an MLP has at least one layer")
    }

    /// Back-propagates `d_out` (gradient of the loss with respect to the `n × n_out` output)
    /// through the pass recorded in `cache`.
    pub fn backward(&self, activation: Activation, cache: &ForwardCache, d_out: Vec<f32>, n: usize) -> Gradients {
        let n_layers = self.layers.len();
        let mut weight_grads = vec![Vec::new(); n_layers];
        let mut bias_grads = vec![Vec::new(); n_layers];
        let mut dz = d_out;

        for i in (0..n_layers).rev() {
            let layer = &self.layers[i];
            let input = &cache.inputs[i];

            // dW = inputᵀ · dz, a (n_in × n) by (n × n_out) product.
            let mut dw = vec![0.0; layer.n_in * layer.n_out];
            matmul(layer.n_in, layer.n_out, n, &mut dw, input, 1, layer.n_in, &dz, layer.n_out, 1);
            let mut db = vec![0.0; layer.n_out];
            for row in dz.chunks_exact(layer.n_out) {
                for (acc, v) in db.iter_mut().zip(row) {
                    *acc += v;
                }
            }
            weight_grads[i] = dw;
            bias_grads[i] = db;

            if i == 0 {
                break;
            }

            // d_input = dz · Wᵀ, then through the previous layer's activation.
            let mut d_input = vec![0.0; n * layer.n_in];
            matmul(n, layer.n_in, layer.n_out, &mut d_input, &dz, layer.n_out, 1, &layer.weight, 1, layer.n_out);
            for (d, &z) in d_input.iter_mut().zip(&cache.pre_activations[i - 1]) {
                *d *= activation.derivative(z);
            }
            dz = d_input;
        }
        Gradients { weight: weight_grads, bias: bias_grads }
    }
}

/// `out = x · weight + bias` for `n` rows.
fn dense_forward(layer: &Dense, x: &[f32], n: usize, out: &mut [f32]) {
    let out = &mut out[..n * layer.n_out];
    for row in out.chunks_exact_mut(layer.n_out) {
        row.copy_from_slice(&layer.bias);
    }
    matmul_accumulate(n, layer.n_out, layer.n_in, out, x, layer.n_in, 1, &layer.weight, layer.n_out, 1);
}

/// `dst (m × n, row-major) = lhs (m × k) · rhs (k × n)`, where each operand is given with its
/// row and column strides so transposes need no copy.
#[allow(clippy::too_many_arguments)]
fn matmul(m: usize, n: usize, k: usize, dst: &mut [f32], lhs: &[f32], lhs_rs: usize, lhs_cs: usize, rhs: &[f32], rhs_rs: usize, rhs_cs: usize) {
    gemm_checked(m, n, k, dst, false, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs);
}

/// `dst += lhs · rhs`, with the same conventions as [`matmul`].
#[allow(clippy::too_many_arguments)]
fn matmul_accumulate(m: usize, n: usize, k: usize, dst: &mut [f32], lhs: &[f32], lhs_rs: usize, lhs_cs: usize, rhs: &[f32], rhs_rs: usize, rhs_cs: usize) {
    gemm_checked(m, n, k, dst, true, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs);
}

#[allow(clippy::too_many_arguments)]
fn gemm_checked(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: &[f32], lhs_rs: usize, lhs_cs: usize, rhs: &[f32], rhs_rs: usize, rhs_cs: usize) {
    if m == 0 || n == 0 {
        return;
    }
    // Every index the kernel touches must lie inside the slices, which makes the call sound.
    assert!(dst.len() >= m * n, "gemm destination too small");
    assert!(k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs, "gemm lhs too small");
    assert!(k == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs, "gemm rhs too small");
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above keep every element address inside the three slices, `dst` is
    // borrowed mutably and does not alias `lhs` or `rhs`, and the strides are positive.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn exp_approx_is_accurate_over_the_f32_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let exact = (x as f64).exp();
            worst = worst.max(((exp_approx(x) as f64 - exact) / exact).abs());
            x += 0.001_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        // Saturation instead of 0, ∞ or NaN beyond the clamp.
        assert!(exp_approx(-1e4) > 0.0);
        assert!(exp_approx(-1e4) < 1e-37);
        assert!(exp_approx(1e4).is_finite());
        assert!(exp_approx(1e4) > 1e38);
        assert_eq!(exp_approx(0.0), 1.0);
    }

    #[test]
    fn applied_slices_match_scalar() {
        let inputs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.0123).chain([1e-9, -1e-9, 0.0, 80.0, -80.0, 1e6, -1e6]).collect();
        for activation in [Activation::Relu, Activation::Gelu, Activation::Silu, Activation::Tanh] {
            let mut fast = inputs.clone();
            activation.apply_slice(&mut fast);
            for (&z, &f) in inputs.iter().zip(&fast) {
                let exact = activation.apply(z);
                // Relative 1e-6, or 1e-7 absolute near the zeros of SiLU and GELU.
                assert!((f - exact).abs() <= 1e-6 * exact.abs() + 1e-7, "{activation:?}({z}): {f} vs {exact}");
            }
        }
    }

    fn naive_forward(mlp: &Mlp, activation: Activation, x: &[f32], n: usize) -> Vec<f32> {
        let mut current = x.to_vec();
        for (i, layer) in mlp.layers.iter().enumerate() {
            let mut next = vec![0.0; n * layer.n_out];
            for r in 0..n {
                for o in 0..layer.n_out {
                    let mut acc = layer.bias[o];
                    for j in 0..layer.n_in {
                        acc += current[r * layer.n_in + j] * layer.weight[j * layer.n_out + o];
                    }
                    next[r * layer.n_out + o] = if i + 1 < mlp.layers.len() { activation.apply(acc) } else { acc };
                }
            }
            current = next;
        }
        current
    }

    fn loss(mlp: &Mlp, activation: Activation, x: &[f32], y: &[f32], n: usize) -> f32 {
        let out = naive_forward(mlp, activation, x, n);
        out.iter().zip(y).map(|(o, t)| 0.5 * (o - t) * (o - t)).sum()
    }

    #[test]
    fn forward_matches_naive_loops() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mlp = Mlp::new(5, &[7, 3], 2, &mut rng);
        let n = 9;
        let x: Vec<f32> = (0..n * 5).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut out = vec![0.0; n * 2];
        let mut scratch = [Vec::new(), Vec::new()];
        mlp.forward_into(Activation::Gelu, &x, n, &mut out, &mut scratch);
        let expected = naive_forward(&mlp, Activation::Gelu, &x, n);
        for (a, b) in out.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn activation_derivatives_match_finite_differences() {
        for activation in [Activation::Relu, Activation::Gelu, Activation::Silu, Activation::Tanh] {
            for &z in &[-2.5f32, -0.7, 0.3, 1.9] {
                let h = 1e-3;
                let numeric = (activation.apply(z + h) - activation.apply(z - h)) / (2.0 * h);
                let analytic = activation.derivative(z);
                assert!((numeric - analytic).abs() < 2e-3, "{activation:?} at {z}: {numeric} vs {analytic}");
            }
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let activation = Activation::Tanh;
        let mlp = Mlp::new(3, &[4], 2, &mut rng);
        let n = 5;
        let x: Vec<f32> = (0..n * 3).map(|i| (i as f32 * 0.91).cos()).collect();
        let y: Vec<f32> = (0..n * 2).map(|i| (i as f32 * 0.13).sin()).collect();

        let mut cache = ForwardCache::default();
        let out = mlp.forward_train(activation, &x, n, &mut cache);
        let d_out: Vec<f32> = out.iter().zip(&y).map(|(o, t)| o - t).collect();
        let grads = mlp.backward(activation, &cache, d_out, n);

        for layer_index in 0..mlp.layers.len() {
            for w in 0..mlp.layers[layer_index].weight.len() {
                let h = 1e-2;
                let mut plus = mlp.clone();
                plus.layers[layer_index].weight[w] += h;
                let mut minus = mlp.clone();
                minus.layers[layer_index].weight[w] -= h;
                let numeric = (loss(&plus, activation, &x, &y, n) - loss(&minus, activation, &x, &y, n)) / (2.0 * h);
                let analytic = grads.weight[layer_index][w];
                assert!((numeric - analytic).abs() < 2e-3, "layer {layer_index} weight {w}: {numeric} vs {analytic}");
            }
            for b in 0..mlp.layers[layer_index].bias.len() {
                let h = 1e-2;
                let mut plus = mlp.clone();
                plus.layers[layer_index].bias[b] += h;
                let mut minus = mlp.clone();
                minus.layers[layer_index].bias[b] -= h;
                let numeric = (loss(&plus, activation, &x, &y, n) - loss(&minus, activation, &x, &y, n)) / (2.0 * h);
                let analytic = grads.bias[layer_index][b];
                assert!((numeric - analytic).abs() < 2e-3, "layer {layer_index} bias {b}: {numeric} vs {analytic}");
            }
        }
    }
}
