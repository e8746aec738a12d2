// Rotary position embedding, rotate-half form.
//
// x and out are [n_tokens, n_heads * head_dim]. Within each head, element i < head_dim / 2
// pairs with element i + head_dim / 2:
//   out[i]        = x[i] cos(a) - x[i + half] sin(a)
//   out[i + half] = x[i + half] cos(a) + x[i] sin(a)
// with a = pos * theta^(-2 i / head_dim) and pos = positions[t] when use_positions is 1,
// else pos_offset + t (decode steps at a known cache length need no positions buffer).
//
// Bindings (group 0):
//   0 uniform Params
//   1 x:         array<T>, read (rope; rope_in_place does not read it)
//   2 out:       array<T>, read_write; rope_in_place rotates this buffer in place
//   3 positions: array<u32>, read, n_tokens elements (bound but not read when use_positions is 0)
// Workgroup: 256 invocations, one (token, head, pair) each; the linear workgroup index is
// folded over x and y by the host and rebuilt as wid.x + wid.y * nwg.x. Each pair is read and
// written by one invocation only, so the in-place form has no hazards.
// The angle is computed in f32: its rounding error grows with pos (about pos * 6e-8 rad).
// Host invariants: head_dim is even; n_tokens * n_heads * head_dim fits in u32; bindings fit
// max_storage_buffer_binding_size.

alias T = f32;

struct Params {
    n_tokens: u32,
    n_heads: u32,
    head_dim: u32,
    use_positions: u32,
    pos_offset: u32,
    log2_theta: f32,
    _pad0: u32,
    _pad1: u32,
}

const WORKGROUP_SIZE: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<storage, read> positions: array<u32>;

struct Pair {
    first: u32,
    second: u32,
    cos_a: f32,
    sin_a: f32,
}

// The element indices and rotation of pair number `p`, or first = 0xffffffff past the end.
fn pair(p: u32) -> Pair {
    let half = params.head_dim / 2u;
    if (p >= params.n_tokens * params.n_heads * half) {
        return Pair(0xffffffffu, 0u, 0.0, 0.0);
    }
    let i = p % half;
    let head = (p / half) % params.n_heads;
    let token = p / (half * params.n_heads);
    var pos = params.pos_offset + token;
    if (params.use_positions == 1u) {
        pos = positions[token];
    }
    // theta^(-2i/head_dim) = 2^(-(2i/head_dim) log2(theta)).
    let inv_freq = exp2(-(f32(2u * i) / f32(params.head_dim)) * params.log2_theta);
    let angle = f32(pos) * inv_freq;
    let first = (token * params.n_heads + head) * params.head_dim + i;
    return Pair(first, first + half, cos(angle), sin(angle));
}

@compute @workgroup_size(256)
fn rope(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let pr = pair((wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid);
    if (pr.first == 0xffffffffu) {
        return;
    }
    let x1 = f32(x[pr.first]);
    let x2 = f32(x[pr.second]);
    out[pr.first] = T(x1 * pr.cos_a - x2 * pr.sin_a);
    out[pr.second] = T(x2 * pr.cos_a + x1 * pr.sin_a);
}

@compute @workgroup_size(256)
fn rope_in_place(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let pr = pair((wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid);
    if (pr.first == 0xffffffffu) {
        return;
    }
    let x1 = f32(out[pr.first]);
    let x2 = f32(out[pr.second]);
    out[pr.first] = T(x1 * pr.cos_a - x2 * pr.sin_a);
    out[pr.second] = T(x2 * pr.cos_a + x1 * pr.sin_a);
}
