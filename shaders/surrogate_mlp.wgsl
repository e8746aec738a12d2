// Surrogate ensemble inference: one dispatch scores a batch of raw feature rows through every
// member MLP and writes, per row and target, the mean and the standard deviation over members
// in the target's original units.
//
// Per row: standardise the features, run each member (dense layers, activation between them,
// linear output), map each output back (times target std, plus target mean, then exp for log
// targets), then take the mean and the population standard deviation over members (two passes,
// like the CPU path in src/surrogate/ensemble.rs).
//
// Bindings (group 0):
//   0 uniform            params: Params (below)
//   1 storage, read      layers: array<u32>, 4 per layer: n_in, n_out, weight offset, bias
//                        offset (offsets in f32 elements from the start of a member's block)
//   2 storage, read      weights: array<u32>, member m's block starts at m * member_stride;
//                        a layer's weight is n_in × n_out row-major, its bias n_out values.
//                        Element i is the f32 with bits weights[i], or with WEIGHTS_F16 = 1 the
//                        IEEE half in the low (even i) or high (odd i) 16 bits of weights[i >> 1].
//   3 storage, read      scales: array<f32>: feature mean [n_features], feature 1/std
//                        [n_features], target mean [n_targets], target std [n_targets], log flag
//                        [n_targets] (1.0 for a log target, else 0.0)
//   4 storage, read      x: array<f32>, n_rows × n_features row-major
//   5 storage, read_write out: array<f32>, means [n_rows × n_targets] then stds [n_rows × n_targets]
//
// Sizes: WORKGROUP_SIZE threads per workgroup; each workgroup scores TILE_ROWS consecutive rows.
// The host substitutes TILE_ROWS, MAX_WIDTH and MEMBER_OUTPUTS below before compiling, because
// workgroup arrays need sizes known at pipeline creation, and WEIGHTS_F16 for the weight storage.
//
// Invariants the host keeps:
//   - MAX_WIDTH >= every layer's n_in and n_out; MEMBER_OUTPUTS >= n_members × n_targets.
//   - Workgroup memory (4 × TILE_ROWS × (2 × MAX_WIDTH + MEMBER_OUTPUTS) bytes) is within the
//     device's max_compute_workgroup_storage_size.
//   - The grid is (groups_x, groups_y, 1) with groups_x <= 65,535; the tile index is
//     wg.y × groups_x + wg.x, and tiles at or past ceil(n_rows / TILE_ROWS) return at once.
//   - Every binding holds at least the elements the formulas above index.

const WORKGROUP_SIZE: u32 = 64u;
const TILE_ROWS: u32 = 16u;
const MAX_WIDTH: u32 = 64u;
const MEMBER_OUTPUTS: u32 = 5u;
const WEIGHTS_F16: u32 = 0u;

struct Params {
    n_rows: u32,
    n_features: u32,
    n_targets: u32,
    n_members: u32,
    n_layers: u32,
    member_stride: u32,
    activation: u32,
    groups_x: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> layers: array<u32>;
@group(0) @binding(2) var<storage, read> weights: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

// Ping-pong activations: buffer b of tile row r, unit j is at (b × TILE_ROWS + r) × MAX_WIDTH + j.
var<workgroup> activations: array<f32, 2u * TILE_ROWS * MAX_WIDTH>;
// Back-transformed output of member m, target t, tile row r at (r × MEMBER_OUTPUTS + m × n_targets + t).
var<workgroup> member_out: array<f32, TILE_ROWS * MEMBER_OUTPUTS>;

// Decodes an IEEE half in the low 16 bits of `h` with integer operations, because
// `unpack2x16float` needs a capability that some Vulkan drivers without SHADER_F16 lack.
fn half_to_f32(h: u32) -> f32 {
    let exponent = (h >> 10u) & 0x1fu;
    let mantissa = h & 0x3ffu;
    var magnitude: f32;
    if exponent == 0u {
        // Zero or subnormal: mantissa × 2^-24.
        magnitude = f32(mantissa) * 5.9604645e-8;
    } else if exponent == 31u {
        magnitude = bitcast<f32>(0x7f800000u | (mantissa << 13u));
    } else {
        // Rebias the exponent from 15 to 127.
        magnitude = bitcast<f32>(((exponent + 112u) << 23u) | (mantissa << 13u));
    }
    return select(magnitude, -magnitude, (h & 0x8000u) != 0u);
}

fn weight(i: u32) -> f32 {
    if WEIGHTS_F16 == 1u {
        return half_to_f32(weights[i >> 1u] >> (16u * (i & 1u)));
    }
    return bitcast<f32>(weights[i]);
}

// Activation codes match `Activation::shader_code` in src/surrogate/mlp.rs.
fn activate(z: f32, code: u32) -> f32 {
    switch code {
        case 0u: { return max(z, 0.0); }
        case 1u: {
            // GELU, tanh approximation.
            let inner = 0.7978846 * (z + 0.044715 * z * z * z);
            return 0.5 * z * (1.0 + tanh(inner));
        }
        case 2u: { return z / (1.0 + exp(-z)); }
        default: { return tanh(z); }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tile = wg.y * params.groups_x + wg.x;
    let first_row = tile * TILE_ROWS;
    // Uniform across the workgroup, so returning here leaves no barrier half-reached.
    if first_row >= params.n_rows {
        return;
    }
    let rows = min(TILE_ROWS, params.n_rows - first_row);
    let n_features = params.n_features;
    let n_targets = params.n_targets;
    let target_mean_at = 2u * n_features;
    let target_std_at = target_mean_at + n_targets;
    let target_log_at = target_std_at + n_targets;
    let last_layer = params.n_layers - 1u;

    for (var m = 0u; m < params.n_members; m++) {
        // Standardised input into buffer 0 (reloaded per member, because layers overwrite it).
        for (var i = lid; i < rows * n_features; i += WORKGROUP_SIZE) {
            let r = i / n_features;
            let j = i % n_features;
            let raw = x[(first_row + r) * n_features + j];
            activations[r * MAX_WIDTH + j] = (raw - scales[j]) * scales[n_features + j];
        }
        workgroupBarrier();

        let member_base = m * params.member_stride;
        for (var l = 0u; l < params.n_layers; l++) {
            let n_in = layers[4u * l];
            let n_out = layers[4u * l + 1u];
            let w_at = member_base + layers[4u * l + 2u];
            let b_at = member_base + layers[4u * l + 3u];
            let src = (l % 2u) * TILE_ROWS * MAX_WIDTH;
            let dst = ((l + 1u) % 2u) * TILE_ROWS * MAX_WIDTH;

            for (var i = lid; i < rows * n_out; i += WORKGROUP_SIZE) {
                let r = i / n_out;
                let o = i % n_out;
                var acc = weight(b_at + o);
                for (var j = 0u; j < n_in; j++) {
                    acc += activations[src + r * MAX_WIDTH + j] * weight(w_at + j * n_out + o);
                }
                if l == last_layer {
                    // Back to the target's units.
                    var v = acc * scales[target_std_at + o] + scales[target_mean_at + o];
                    if scales[target_log_at + o] != 0.0 {
                        v = exp(v);
                    }
                    member_out[r * MEMBER_OUTPUTS + m * n_targets + o] = v;
                } else {
                    activations[dst + r * MAX_WIDTH + o] = activate(acc, params.activation);
                }
            }
            workgroupBarrier();
        }
    }

    // Mean, then population standard deviation over members, per (row, target).
    let inv_k = 1.0 / f32(params.n_members);
    for (var i = lid; i < rows * n_targets; i += WORKGROUP_SIZE) {
        let r = i / n_targets;
        let t = i % n_targets;
        var sum = 0.0;
        for (var m = 0u; m < params.n_members; m++) {
            sum += member_out[r * MEMBER_OUTPUTS + m * n_targets + t];
        }
        let mean = sum * inv_k;
        var squares = 0.0;
        for (var m = 0u; m < params.n_members; m++) {
            let d = member_out[r * MEMBER_OUTPUTS + m * n_targets + t] - mean;
            squares += d * d;
        }
        let row = first_row + r;
        out[row * n_targets + t] = mean;
        out[params.n_rows * n_targets + row * n_targets + t] = sqrt(squares * inv_k);
    }
}
