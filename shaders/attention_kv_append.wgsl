// Appends the keys and values of new tokens to a KV cache.
//
// Computes, for every batch b, new token t, KV head g and feature c,
//   k_cache[b, offset + t, g, c] = k_new[b, t, g, c]
//   v_cache[b, offset + t, g, c] = v_new[b, t, g, c]
// so a prefill chunk or a decode step writes its K/V rows after the `offset` rows already
// cached, without one buffer copy per sequence.
//
// Bindings (group 0):
//   0 uniform Params
//   1 storage read  k_new   [batch, n_new, n_kv_heads * head_dim]       (T)
//   2 storage read  v_new   [batch, n_new, n_kv_heads * head_dim]       (T)
//   3 storage write k_cache [batch, capacity, n_kv_heads * head_dim]    (T)
//   4 storage write v_cache [batch, capacity, n_kv_heads * head_dim]    (T)
//
// Workgroup: 256 threads, one element each. Grid: ceil(batch * n_new * row / 256) workgroups,
// folded into (x, y) above 65,535 per dimension; the linear index is rebuilt from wid and
// num_workgroups and elements past `total` are skipped.
//
// Host invariants: offset + n_new <= capacity; row = n_kv_heads * head_dim; total = batch *
// n_new * row; each binding fits max_storage_buffer_binding_size.

alias T = f32;

const WG: u32 = 256u;

struct Params {
    n_new: u32,
    capacity: u32,
    row: u32,
    offset: u32,
    total: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> k_new: array<T>;
@group(0) @binding(2) var<storage, read> v_new: array<T>;
@group(0) @binding(3) var<storage, read_write> k_cache: array<T>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<T>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = (wid.x + wid.y * nwg.x) * WG + lid;
    if (index >= params.total) {
        return;
    }
    let c = index % params.row;
    let token = index / params.row;
    let t = token % params.n_new;
    let b = token / params.n_new;
    let dst = (b * params.capacity + params.offset + t) * params.row + c;
    k_cache[dst] = k_new[index];
    v_cache[dst] = v_new[index];
}
