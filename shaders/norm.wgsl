// Row-wise LayerNorm and RMSNorm over rows of `cols` elements.
//
//   layer_norm: out = (x - mean) / sqrt(var + eps) * weight + bias, var the biased variance.
//   rms_norm:   out = x / sqrt(mean(x^2) + eps) * weight.
//
// Bindings (group 0):
//   0 uniform Params { rows, cols, eps }
//   1 x:      array<T>, read, rows * cols elements
//   2 out:    array<T>, read_write, rows * cols elements (must not alias x)
//   3 weight: array<T>, read, cols elements
//   4 bias:   array<T>, read, cols elements (layer_norm only; rms_norm's layout stops at 3)
// Workgroup: 256 invocations per row, strided over the row, with tree reductions in
// workgroup memory. LayerNorm is two-pass (the mean, then the sum of squared deviations), which
// avoids the cancellation of E[x^2] - E[x]^2 when |mean| is large against the spread. Both
// passes work on x - x[row, 0], so a large common offset does not cost the mean its precision
// (values near the offset subtract exactly).
// Arithmetic is f32 in both variants. Squares overflow f32 only for |x| beyond about 1e19.
// Rows are numbered by the folded linear workgroup index (wid.x + wid.y * nwg.x).
// Host invariants: rows * cols fits in u32; bindings fit max_storage_buffer_binding_size.

alias T = f32;

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    _pad0: u32,
}

const WORKGROUP_SIZE: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<storage, read> weight: array<T>;
@group(0) @binding(4) var<storage, read> bias: array<T>;

var<workgroup> scratch: array<f32, 256>;

// Sum of scratch[0..256] by a tree reduction, returned to every invocation.
fn reduce_sum(lid: u32) -> f32 {
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if (lid < stride) {
            scratch[lid] = scratch[lid] + scratch[lid + stride];
        }
    }
    workgroupBarrier();
    let result = scratch[0];
    workgroupBarrier();
    return result;
}

@compute @workgroup_size(256)
fn layer_norm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.cols;
    let n = f32(params.cols);
    let shift = f32(x[base]);

    var local_sum = 0.0;
    for (var c = lid; c < params.cols; c += WORKGROUP_SIZE) {
        local_sum += f32(x[base + c]) - shift;
    }
    scratch[lid] = local_sum;
    // The mean of x - shift; the mean of x is shift + shifted_mean.
    let shifted_mean = reduce_sum(lid) / n;

    var local_sq = 0.0;
    for (var c = lid; c < params.cols; c += WORKGROUP_SIZE) {
        let d = (f32(x[base + c]) - shift) - shifted_mean;
        local_sq += d * d;
    }
    scratch[lid] = local_sq;
    let inv_std = 1.0 / sqrt(reduce_sum(lid) / n + params.eps);

    for (var c = lid; c < params.cols; c += WORKGROUP_SIZE) {
        let normed = ((f32(x[base + c]) - shift) - shifted_mean) * inv_std;
        out[base + c] = T(normed * f32(weight[c]) + f32(bias[c]));
    }
}

@compute @workgroup_size(256)
fn rms_norm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.cols;

    var local_sq = 0.0;
    for (var c = lid; c < params.cols; c += WORKGROUP_SIZE) {
        let v = f32(x[base + c]);
        local_sq += v * v;
    }
    scratch[lid] = local_sq;
    let inv_rms = 1.0 / sqrt(reduce_sum(lid) / f32(params.cols) + params.eps);

    for (var c = lid; c < params.cols; c += WORKGROUP_SIZE) {
        out[base + c] = T(f32(x[base + c]) * inv_rms * f32(weight[c]));
    }
}
