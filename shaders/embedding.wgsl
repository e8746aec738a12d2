// Token-embedding gather: out[t, c] = table[ids[t] - vocab_start, c] for the tokens whose id
// falls in this dispatch's block of vocabulary rows [vocab_start, vocab_start + vocab_rows).
//
// Bindings (group 0):
//   0 uniform Params
//   1 table: array<T>, read, vocab_rows * d elements (a block of the embedding table)
//   2 ids:   array<u32>, read, n_tokens elements
//   3 out:   array<T>, read_write, n_tokens * d elements
// Workgroup: 256 invocations, one output element each; folded grid rebuilt as
// wid.x + wid.y * nwg.x.
// Ids outside the block are skipped. When zero_missing is 1 (the host sets it when the whole
// table is one block) an id outside the block is beyond the vocabulary, and its row of out is
// written as zeros; with several blocks the host clears out first, so such rows stay zero.
// Host invariants: n_tokens * d fits in u32; each binding fits max_storage_buffer_binding_size.

alias T = f32;

struct Params {
    n_tokens: u32,
    d: u32,
    vocab_start: u32,
    vocab_rows: u32,
    zero_missing: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WORKGROUP_SIZE: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> table: array<T>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

@compute @workgroup_size(256)
fn gather(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    let i = group * WORKGROUP_SIZE + lid;
    if (i >= params.n_tokens * params.d) {
        return;
    }
    let token = i / params.d;
    let column = i % params.d;
    let id = ids[token];
    // Unsigned subtraction wraps for id < vocab_start, so one comparison covers both ends.
    let row = id - params.vocab_start;
    if (row < params.vocab_rows) {
        out[i] = table[row * params.d + column];
    } else if (params.zero_missing == 1u) {
        out[i] = T(0.0);
    }
}
