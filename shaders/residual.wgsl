// Residual add: out[i] = a[i] + b[i].
//
// Bindings (group 0):
//   0 uniform Params { n: number of elements in this dispatch }
//   1 a:   array<T>, read, n elements
//   2 b:   array<T>, read, n elements
//   3 out: array<T>, read_write, n elements (must not alias a or b)
// Workgroup: 256 invocations, one element each. The linear workgroup index is folded over
// x and y when it exceeds the per-dimension limit, and rebuilt here as wid.x + wid.y * nwg.x.
// The sum is computed in f32 and rounded once to T (f32, or f16 in the f16 variant).
// Host invariants: n fits in u32; each binding fits max_storage_buffer_binding_size (larger
// tensors are processed in blocks bound at offsets).

alias T = f32;

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WORKGROUP_SIZE: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

@compute @workgroup_size(256)
fn residual_add(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    let i = group * WORKGROUP_SIZE + lid;
    if (i >= params.n) {
        return;
    }
    out[i] = T(f32(a[i]) + f32(b[i]));
}
