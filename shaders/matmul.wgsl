// Tiled, register-blocked matrix multiply: C = A · B (+ bias), with B optionally transposed.
//
//   A: [m, k] row-major.  B: [k, n] row-major, or [n, k] when TRANSPOSE_B is 1.
//   bias: [n], added to every row of C when HAS_BIAS is 1.  C: [m, n] row-major.
//
// Bindings (group 0):
//   0 uniform Params { m, n, k, tiles_n, tiles_total }
//   1 a:    array<T>, read
//   2 b:    array<T>, read
//   3 bias: array<T>, read (any read-only buffer when HAS_BIAS is 0; it is not read)
//   4 c:    array<T>, read_write (must not alias a, b or bias)
// Workgroup: 16 x 16 invocations compute a 64 x 64 tile of C; each invocation owns a 4 x 4
// block of outputs at rows ty + 16 i and columns tx + 16 j (strided, so that neighbouring
// invocations read neighbouring workgroup-memory words and write neighbouring columns of C).
// K advances in steps of 16: each step stages a 64 x 16 tile of A and a 16 x 64 tile of B in
// workgroup memory (f32, 8 KiB), zero-padded past m, n and k, so ragged sizes need no special
// case. Products accumulate in f32 in registers; C is rounded to T once at the end.
// The tiles of C are numbered linearly (tile_row * tiles_n + tile_col) and the linear
// workgroup index is folded over x and y by the host; it is rebuilt as wid.x + wid.y * nwg.x.
// TRANSPOSE_B and HAS_BIAS are specialisation constants substituted by the host.
// Host invariants: m * k, k * n and m * n fit in u32; every binding fits
// max_storage_buffer_binding_size (the host splits A and C into blocks of rows otherwise).

alias T = f32;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    tiles_n: u32,
    tiles_total: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const TRANSPOSE_B: u32 = 0u;
const HAS_BIAS: u32 = 0u;

const TILE: u32 = 64u;
const TILE_K: u32 = 16u;
const THREADS: u32 = 16u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> c: array<T>;

// a_tile[kk * TILE + row], b_tile[kk * TILE + col].
var<workgroup> a_tile: array<f32, 1024>;
var<workgroup> b_tile: array<f32, 1024>;

@compute @workgroup_size(16, 16)
fn matmul(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    if (group >= params.tiles_total) {
        return;
    }
    let row0 = (group / params.tiles_n) * TILE;
    let col0 = (group % params.tiles_n) * TILE;
    let tx = local.x;
    let ty = local.y;

    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            acc[i][j] = 0.0;
        }
    }

    let k_steps = (params.k + TILE_K - 1u) / TILE_K;
    for (var step = 0u; step < k_steps; step++) {
        let k0 = step * TILE_K;

        // Stage A: 1024 elements, 4 per invocation; consecutive invocations read along k.
        for (var r = 0u; r < 4u; r++) {
            let e = lid + r * 256u;
            let row = e / TILE_K;
            let kk = e % TILE_K;
            let gr = row0 + row;
            let gk = k0 + kk;
            var value = 0.0;
            if (gr < params.m && gk < params.k) {
                value = f32(a[gr * params.k + gk]);
            }
            a_tile[kk * TILE + row] = value;
        }

        // Stage B: read along n for [k, n], along k for the transposed [n, k] layout.
        for (var r = 0u; r < 4u; r++) {
            let e = lid + r * 256u;
            var kk: u32;
            var col: u32;
            if (TRANSPOSE_B == 1u) {
                col = e / TILE_K;
                kk = e % TILE_K;
            } else {
                kk = e / TILE;
                col = e % TILE;
            }
            let gk = k0 + kk;
            let gc = col0 + col;
            var value = 0.0;
            if (gk < params.k && gc < params.n) {
                if (TRANSPOSE_B == 1u) {
                    value = f32(b[gc * params.k + gk]);
                } else {
                    value = f32(b[gk * params.n + gc]);
                }
            }
            b_tile[kk * TILE + col] = value;
        }
        workgroupBarrier();

        for (var kk = 0u; kk < TILE_K; kk++) {
            var a_reg: array<f32, 4>;
            var b_reg: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a_reg[i] = a_tile[kk * TILE + ty + i * THREADS];
                b_reg[i] = b_tile[kk * TILE + tx + i * THREADS];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(a_reg[i], b_reg[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let gr = row0 + ty + i * THREADS;
        if (gr >= params.m) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let gc = col0 + tx + j * THREADS;
            if (gc < params.n) {
                var value = acc[i][j];
                if (HAS_BIAS == 1u) {
                    value += f32(bias[gc]);
                }
                c[gr * params.n + gc] = T(value);
            }
        }
    }
}
