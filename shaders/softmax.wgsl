// Numerically stable row softmax: out[r, c] = exp(x[r, c] - max_r) / sum_c exp(x[r, c] - max_r).
//
// Bindings (group 0):
//   0 uniform Params { rows, cols }
//   1 x:   array<T>, read, rows * cols elements
//   2 out: array<T>, read_write, rows * cols elements (must not alias x)
// Workgroup: 256 invocations per row. Each invocation strides over the row, then a tree
// reduction in workgroup memory (8 halving steps) combines the 256 partial maxima, and again
// the partial sums. Subtracting the row maximum keeps every exp() at or below 1, so large
// inputs cannot overflow; the sum is at least 1. Arithmetic is f32 in both variants.
// Rows are numbered by the linear workgroup index (folded over x and y by the host, rebuilt
// as wid.x + wid.y * nwg.x); a workgroup past the last row returns at once.
// Host invariants: rows * cols fits in u32; bindings fit max_storage_buffer_binding_size
// (the host splits rows into blocks otherwise).

alias T = f32;

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

const WORKGROUP_SIZE: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

var<workgroup> scratch: array<f32, 256>;

// Tree reduction of scratch[0..256] into scratch[0]; `use_max` selects max over sum.
fn reduce(lid: u32, use_max: bool) -> f32 {
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if (lid < stride) {
            if (use_max) {
                scratch[lid] = max(scratch[lid], scratch[lid + stride]);
            } else {
                scratch[lid] = scratch[lid] + scratch[lid + stride];
            }
        }
    }
    workgroupBarrier();
    let result = scratch[0];
    // Nobody may overwrite scratch[0] for the next reduction before every invocation read it.
    workgroupBarrier();
    return result;
}

@compute @workgroup_size(256)
fn softmax_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.cols;

    // -3.4e38 is the lowest finite f32, the identity of max over finite inputs.
    var local_max = -3.4028235e38;
    for (var c = lid; c < params.cols; c += WORKGROUP_SIZE) {
        local_max = max(local_max, f32(x[base + c]));
    }
    scratch[lid] = local_max;
    let row_max = reduce(lid, true);

    var local_sum = 0.0;
    for (var c = lid; c < params.cols; c += WORKGROUP_SIZE) {
        local_sum += exp(f32(x[base + c]) - row_max);
    }
    scratch[lid] = local_sum;
    let inv_sum = 1.0 / reduce(lid, false);

    for (var c = lid; c < params.cols; c += WORKGROUP_SIZE) {
        out[base + c] = T(exp(f32(x[base + c]) - row_max) * inv_sum);
    }
}
