// Thin matrix multiply for at most MAX_ROWS rows of A, as in a decode step: C = A · B (+ bias).
// The 64 x 64 tiles of matmul.wgsl would compute 64 rows for every row of A here, so this
// kernel splits K over the invocations of a workgroup instead and adds the partial sums in
// workgroup memory.
//
//   A: [m, k] row-major, m <= MAX_ROWS.  B: [n, k] row-major (matvec_nk, a weight matrix) or
//   [k, n] row-major (matvec_kn).  bias: [n], added when HAS_BIAS is 1.  C: [m, n] row-major.
//
// Bindings (group 0), as in matmul.wgsl:
//   0 uniform Params { m, n, k, groups }
//   1 a:    array<T>, read
//   2 b:    array<T>, read
//   3 bias: array<T>, read (any read-only buffer when HAS_BIAS is 0; it is not read)
//   4 c:    array<T>, read_write (must not alias a, b or bias)
//
// matvec_nk: a workgroup of 64 invocations computes NK_COLS = 4 columns of C for every row.
// Invocation i reads k = i, i + 64, ... of each of the 4 rows of B, so neighbouring
// invocations read neighbouring words. Then invocation (r, c) adds the 64 partial sums of
// output (r, c).
// matvec_kn: a workgroup of 64 invocations computes KN_COLS = 16 columns. Invocation
// (x, y) = (i % 16, i / 16) reads column x of B rows y, y + 4, ..., so 16 neighbouring
// invocations read 16 neighbouring words of one row; then 4 partial sums are added.
// Products accumulate in f32; C is rounded to T once. The linear workgroup index is folded
// over x and y by the host and rebuilt as wid.x + wid.y * nwg.x.
// Host invariants: m <= MAX_ROWS; m * k, k * n and m * n fit in u32; every binding fits
// max_storage_buffer_binding_size.

alias T = f32;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    groups: u32,
}

const HAS_BIAS: u32 = 0u;

const MAX_ROWS: u32 = 8u;
const THREADS: u32 = 64u;
const NK_COLS: u32 = 4u;
const KN_COLS: u32 = 16u;
const KN_SLICES: u32 = 4u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> c: array<T>;

// matvec_nk: partial[(r * NK_COLS + col) * THREADS + i].
// matvec_kn: partial[(slice * MAX_ROWS + r) * KN_COLS + col].
var<workgroup> partial: array<f32, 2048>;

fn finish(row: u32, col: u32, sum: f32) {
    var value = sum;
    if (HAS_BIAS == 1u) {
        value += f32(bias[col]);
    }
    c[row * params.n + col] = T(value);
}

@compute @workgroup_size(64)
fn matvec_nk(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    // The whole workgroup leaves together, so the barrier below stays in uniform control flow.
    if (group >= params.groups) {
        return;
    }
    let col0 = group * NK_COLS;

    var acc: array<array<f32, 4>, 8>;
    for (var r = 0u; r < MAX_ROWS; r++) {
        for (var j = 0u; j < NK_COLS; j++) {
            acc[r][j] = 0.0;
        }
    }
    for (var kk = lid; kk < params.k; kk += THREADS) {
        var w: array<f32, 4>;
        for (var j = 0u; j < NK_COLS; j++) {
            let col = col0 + j;
            w[j] = 0.0;
            if (col < params.n) {
                w[j] = f32(b[col * params.k + kk]);
            }
        }
        for (var r = 0u; r < params.m; r++) {
            let x = f32(a[r * params.k + kk]);
            for (var j = 0u; j < NK_COLS; j++) {
                acc[r][j] = fma(x, w[j], acc[r][j]);
            }
        }
    }
    for (var r = 0u; r < MAX_ROWS; r++) {
        for (var j = 0u; j < NK_COLS; j++) {
            partial[(r * NK_COLS + j) * THREADS + lid] = acc[r][j];
        }
    }
    workgroupBarrier();

    let r = lid / NK_COLS;
    let j = lid % NK_COLS;
    let col = col0 + j;
    if (r < params.m && col < params.n) {
        var sum = 0.0;
        for (var t = 0u; t < THREADS; t++) {
            sum += partial[(r * NK_COLS + j) * THREADS + t];
        }
        finish(r, col, sum);
    }
}

@compute @workgroup_size(64)
fn matvec_kn(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    if (group >= params.groups) {
        return;
    }
    let x = lid % KN_COLS;
    let slice = lid / KN_COLS;
    let col = group * KN_COLS + x;

    var acc: array<f32, 8>;
    for (var r = 0u; r < MAX_ROWS; r++) {
        acc[r] = 0.0;
    }
    if (col < params.n) {
        for (var kk = slice; kk < params.k; kk += KN_SLICES) {
            let w = f32(b[kk * params.n + col]);
            for (var r = 0u; r < params.m; r++) {
                acc[r] = fma(f32(a[r * params.k + kk]), w, acc[r]);
            }
        }
    }
    for (var r = 0u; r < MAX_ROWS; r++) {
        partial[(slice * MAX_ROWS + r) * KN_COLS + x] = acc[r];
    }
    workgroupBarrier();

    // 64 invocations cover (row, column) pairs 0..128 in two rounds.
    for (var e = lid; e < MAX_ROWS * KN_COLS; e += THREADS) {
        let r = e / KN_COLS;
        let cx = e % KN_COLS;
        let out_col = group * KN_COLS + cx;
        if (r < params.m && out_col < params.n) {
            var sum = 0.0;
            for (var s = 0u; s < KN_SLICES; s++) {
                sum += partial[(s * MAX_ROWS + r) * KN_COLS + cx];
            }
            finish(r, out_col, sum);
        }
    }
}
