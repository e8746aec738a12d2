// Elementwise activations.
//
//   gelu_tanh: out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
//   swiglu:    out = silu(gate) * up, silu(g) = g * sigmoid(g).
//   relu:      out = max(x, 0).
//
// Bindings (group 0):
//   0 uniform Params { n: elements in this dispatch }
//   1 x:   array<T>, read: the input of gelu_tanh, the gate of swiglu
//   2 out: array<T>, read_write (must not alias the inputs)
//   3 up:  array<T>, read (swiglu only; the gelu_tanh and relu layouts stop at 2)
// Workgroup: 256 invocations, one element each; the linear workgroup index is folded over
// x and y by the host and rebuilt as wid.x + wid.y * nwg.x.
// Stability: tanh is computed as sign(y) (1 - e) / (1 + e) with e = exp(-2|y|) <= 1, so it
// never forms inf/inf; when x^3 overflows, y = +-inf, e = 0 and gelu(x) = x or -0 as in the
// limit. The sigmoid uses exp(-|g|) <= 1 on both branches, so silu is finite for any finite
// gate (silu(-1e30) = -0). Arithmetic is f32 in both variants, rounded to T once.
// Host invariants: n fits in u32; bindings fit max_storage_buffer_binding_size.

alias T = f32;

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WORKGROUP_SIZE: u32 = 256u;
// sqrt(2 / pi)
const GELU_SCALE: f32 = 0.7978845608028654;
const GELU_CUBIC: f32 = 0.044715;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<storage, read> up: array<T>;

fn stable_tanh(y: f32) -> f32 {
    let e = exp(-2.0 * abs(y));
    return sign(y) * (1.0 - e) / (1.0 + e);
}

fn sigmoid(g: f32) -> f32 {
    let e = exp(-abs(g));
    if (g >= 0.0) {
        return 1.0 / (1.0 + e);
    }
    return e / (1.0 + e);
}

fn element_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid;
}

@compute @workgroup_size(256)
fn gelu_tanh(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element_index(wid, nwg, lid);
    if (i >= params.n) {
        return;
    }
    let v = f32(x[i]);
    let y = GELU_SCALE * (v + GELU_CUBIC * v * v * v);
    out[i] = T(0.5 * v * (1.0 + stable_tanh(y)));
}

@compute @workgroup_size(256)
fn swiglu(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element_index(wid, nwg, lid);
    if (i >= params.n) {
        return;
    }
    let g = f32(x[i]);
    out[i] = T(g * sigmoid(g) * f32(up[i]));
}

@compute @workgroup_size(256)
fn relu(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element_index(wid, nwg, lid);
    if (i >= params.n) {
        return;
    }
    out[i] = max(x[i], T(0.0));
}
