//! GPU scoring: the whole ensemble in one compute dispatch per batch
//! (`shaders/surrogate_mlp.wgsl`), with buffers and the pipeline reused across calls.

use std::borrow::Cow;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use wgpu::util::DeviceExt;

use super::ensemble::Ensemble;
use super::scorer::{check_batch, Prediction, Scorer};
use super::SurrogateError;
use crate::device::GpuContext;

const SHADER_SOURCE: &str = include_str!("../../shaders/surrogate_mlp.wgsl");

/// Threads per workgroup; keep equal to `WORKGROUP_SIZE` in the shader.
const WORKGROUP_SIZE: u32 = 64;

/// Largest number of rows a workgroup scores. Fewer are used when workgroup memory is short.
const MAX_TILE_ROWS: u32 = 16;

/// WebGPU caps every grid dimension at 65,535 workgroups, so larger grids are folded into a
/// second dimension (the shader rebuilds the tile index as wg.y × groups_x + wg.x).
const MAX_GROUPS_PER_DIMENSION: u32 = 65_535;

/// Upper bound on rows per dispatch, independent of device limits, so one call never
/// allocates more than a few hundred MiB of staging memory.
const MAX_ROWS_PER_DISPATCH: usize = 1 << 22;

/// Storage precision of the ensemble's weights on the GPU. Activations and sums stay f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WeightPrecision {
    #[default]
    F32,
    /// IEEE half precision, packed two per 32-bit word and decoded with integer operations in
    /// the shader, so it needs no `SHADER_F16` and halves the weight bytes.
    F16,
}

impl WeightPrecision {
    pub fn name(self) -> &'static str {
        match self {
            WeightPrecision::F32 => "f32",
            WeightPrecision::F16 => "f16",
        }
    }
}

/// Opens the crate's shared GPU device for scoring (see [`crate::device::shared_gpu`] for the
/// adapter order and `WGPU_BACKEND`, `WGPU_ADAPTER_NAME`).
pub fn open_gpu() -> Result<Arc<GpuContext>, SurrogateError> {
    crate::device::shared_gpu().map_err(|e| SurrogateError::NoGpu(format!("no usable GPU adapter ({e})")))
}

/// Shader parameters; the layout matches `Params` in the shader (8 × u32, 32 bytes, a
/// multiple of the 16-byte uniform alignment).
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
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

/// Buffers sized for a number of rows, regrown when a larger batch arrives.
struct BatchBuffers {
    rows: usize,
    x: wgpu::Buffer,
    out: wgpu::Buffer,
    staging: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
}

/// Scores on the GPU: one compute dispatch per [`Scorer::score`] call while the batch fits
/// the device's buffer limits, otherwise one per slice of the batch.
pub struct GpuScorer {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    params_buffer: wgpu::Buffer,
    layers_buffer: wgpu::Buffer,
    weights_buffer: wgpu::Buffer,
    scales_buffer: wgpu::Buffer,
    batch: Option<BatchBuffers>,
    base_params: Params,
    tile_rows: u32,
    max_rows_per_dispatch: usize,
    /// Maximum rows per dispatch that the device's limits allow.
    device_max_rows: usize,
    dispatches: u64,
    last_dispatch: Option<DispatchTimes>,
    /// Factor per target applied to the spread after read-back, as on the CPU.
    spread_scale: Vec<f32>,
}

/// The parts of one dispatch's wall time, measured on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DispatchTimes {
    /// Writing the parameters and inputs, encoding and submitting: host work.
    pub prepare: Duration,
    /// Waiting for the device to finish and the output to be mapped: device work plus the
    /// driver's completion path.
    pub wait: Duration,
    /// Copying the mapped output into the prediction and unmapping: host work.
    pub read_back: Duration,
}

impl DispatchTimes {
    /// Returns the host's own share: preparing plus reading back, without the wait.
    pub fn host(&self) -> Duration {
        self.prepare + self.read_back
    }
}

impl std::fmt::Debug for GpuScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuScorer").field("tile_rows", &self.tile_rows).field("max_rows_per_dispatch", &self.max_rows_per_dispatch).field("dispatches", &self.dispatches).finish()
    }
}

impl Ensemble {
    /// Builds a GPU scorer for this ensemble on `ctx` with f32 weights: uploads the weights and
    /// compiles the pipeline once.
    pub fn gpu_scorer(&self, ctx: &GpuContext) -> crate::Result<GpuScorer> {
        self.gpu_scorer_with(ctx, WeightPrecision::F32)
    }

    /// Builds a GPU scorer that stores the weights in `precision`.
    pub fn gpu_scorer_with(&self, ctx: &GpuContext, precision: WeightPrecision) -> crate::Result<GpuScorer> {
        Ok(GpuScorer::new(self, ctx, precision)?)
    }

}

impl GpuScorer {
    fn new(ensemble: &Ensemble, ctx: &GpuContext, precision: WeightPrecision) -> Result<GpuScorer, SurrogateError> {
        let device = ctx.device.clone();
        let limits = ctx.limits.clone();
        let plan = ensemble.inference_plan();
        let members = ensemble.members();
        let n_targets = ensemble.n_targets() as u32;

        // Pack the members' layers back to back; all members share one shape.
        let mut layer_table = Vec::new();
        let mut offset = 0u32;
        let mut max_width = ensemble.n_features() as u32;
        for layer in &members[0].layers {
            let weight_at = offset;
            let bias_at = weight_at + (layer.n_in * layer.n_out) as u32;
            offset = bias_at + layer.n_out as u32;
            layer_table.extend_from_slice(&[layer.n_in as u32, layer.n_out as u32, weight_at, bias_at]);
            max_width = max_width.max(layer.n_in as u32).max(layer.n_out as u32);
        }
        let member_stride = offset;
        let mut weights: Vec<f32> = Vec::with_capacity(member_stride as usize * members.len());
        for member in members {
            for layer in &member.layers {
                weights.extend_from_slice(&layer.weight);
                weights.extend_from_slice(&layer.bias);
            }
        }
        let mut scales = Vec::new();
        scales.extend_from_slice(&plan.feature_mean);
        scales.extend_from_slice(&plan.feature_inv_std);
        scales.extend_from_slice(&plan.target_mean);
        scales.extend_from_slice(&plan.target_std);
        scales.extend(plan.target_log.iter().map(|&log| if log { 1.0f32 } else { 0.0 }));

        // Workgroup memory contains two activation buffers and every member's outputs per row.
        let member_outputs = members.len() as u32 * n_targets;
        let bytes_per_row = 4 * (2 * max_width + member_outputs);
        let tile_rows = (limits.max_compute_workgroup_storage_size / bytes_per_row).min(MAX_TILE_ROWS);
        if tile_rows == 0 {
            return Err(SurrogateError::Gpu(format!(
                "the ensemble needs {bytes_per_row} bytes of workgroup memory per row (widest layer {max_width}, {member_outputs} member outputs) but the device offers {}; use the CPU scorer or narrower layers",
                limits.max_compute_workgroup_storage_size
            )));
        }
        // Loop iterations of one invocation. Per member it loads the inputs, then computes its
        // share of each layer's outputs, each output a loop over the layer's inputs. The
        // reduction over members comes last.
        let share = |values: u32| values.div_ceil(WORKGROUP_SIZE) as usize;
        let per_member: usize = share(tile_rows * ensemble.n_features() as u32)
            + members[0].layers.iter().map(|l| share(tile_rows * l.n_out as u32) * (l.n_in + 1) + 1).sum::<usize>();
        let iterations = members.len() * (per_member + 1) + share(tile_rows * n_targets) * (2 * members.len() + 2);
        ctx.check_loop_budget(
            &format!("scoring {} members of hidden widths up to {max_width} in one invocation", members.len()),
            iterations,
            "score on the CPU (--backend cpu) or fit narrower or fewer members",
        )
        .map_err(|e| SurrogateError::Gpu(e.to_string()))?;
        let weight_words = pack_weights(&weights, precision);
        let weight_bytes = 4 * weight_words.len() as u64;
        if weight_bytes > limits.max_storage_buffer_binding_size {
            return Err(SurrogateError::Gpu(format!("the weights take {weight_bytes} bytes but a storage binding is limited to {} on this device; use the CPU scorer", limits.max_storage_buffer_binding_size)));
        }

        let source = specialise_shader(tile_rows, max_width, member_outputs, precision);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some("surrogate_mlp.wgsl"), source: wgpu::ShaderSource::Wgsl(Cow::Owned(source)) });
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("surrogate bindings"),
            entries: &[
                layout_entry(0, wgpu::BufferBindingType::Uniform),
                layout_entry(1, wgpu::BufferBindingType::Storage { read_only: true }),
                layout_entry(2, wgpu::BufferBindingType::Storage { read_only: true }),
                layout_entry(3, wgpu::BufferBindingType::Storage { read_only: true }),
                layout_entry(4, wgpu::BufferBindingType::Storage { read_only: true }),
                layout_entry(5, wgpu::BufferBindingType::Storage { read_only: false }),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor { label: Some("surrogate"), bind_group_layouts: &[Some(&layout)], immediate_size: 0 });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("surrogate_mlp"),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });

        let storage = |label: &str, contents: &[u8]| device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(label), contents, usage: wgpu::BufferUsages::STORAGE });
        let layers_buffer = storage("surrogate layers", bytemuck::cast_slice(&layer_table));
        let weights_buffer = storage("surrogate weights", bytemuck::cast_slice(&weight_words));
        let scales_buffer = storage("surrogate scales", bytemuck::cast_slice(&scales));
        let params_buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("surrogate params"),
            size: std::mem::size_of::<Params>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });

        // Rows per dispatch: input and output must each fit one storage binding and one buffer.
        let binding_limit = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let bytes_per_row_io = 4 * (ensemble.n_features() as u64).max(2 * u64::from(n_targets));
        let max_rows_per_dispatch = ((binding_limit / bytes_per_row_io) as usize).min(MAX_ROWS_PER_DISPATCH);

        let base_params = Params {
            n_rows: 0,
            n_features: ensemble.n_features() as u32,
            n_targets,
            n_members: members.len() as u32,
            n_layers: members[0].layers.len() as u32,
            member_stride,
            activation: plan.activation.shader_code(),
            groups_x: 0,
        };
        log::debug!(
            "surrogate GPU scorer: {} weights, {tile_rows} rows per workgroup, at most {max_rows_per_dispatch} rows per dispatch",
            precision.name()
        );
        Ok(GpuScorer {
            device,
            queue: ctx.queue.clone(),
            pipeline,
            layout,
            params_buffer,
            layers_buffer,
            weights_buffer,
            scales_buffer,
            batch: None,
            base_params,
            tile_rows,
            max_rows_per_dispatch,
            device_max_rows: max_rows_per_dispatch,
            dispatches: 0,
            last_dispatch: None,
            spread_scale: plan.spread_scale.clone(),
        })
    }

    /// Rows one dispatch can score on this device; larger batches are split.
    pub fn max_rows_per_dispatch(&self) -> usize {
        self.max_rows_per_dispatch
    }

    /// Lowers the rows per dispatch to `rows` (at least 1, at most what the device allows), to
    /// bound the staging memory of one call.
    pub fn set_max_rows_per_dispatch(&mut self, rows: usize) {
        let device_max = self.device_max_rows;
        self.max_rows_per_dispatch = rows.clamp(1, device_max);
        if self.batch.as_ref().is_some_and(|b| b.rows > self.max_rows_per_dispatch) {
            self.batch = None;
        }
    }

    /// Makes sure the batch buffers hold at least `rows` rows, growing them to the next power
    /// of two so a run of growing batches reallocates rarely.
    fn ensure_capacity(&mut self, rows: usize) {
        if self.batch.as_ref().is_some_and(|b| b.rows >= rows) {
            return;
        }
        let rows = rows.next_power_of_two().min(self.max_rows_per_dispatch).max(rows);
        let d = self.base_params.n_features as u64;
        let t = self.base_params.n_targets as u64;
        let out_bytes = 4 * 2 * t * rows as u64;
        let x = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("surrogate x"),
            size: 4 * d * rows as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let out = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("surrogate out"),
            size: out_bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("surrogate staging"),
            size: out_bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("surrogate"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: self.params_buffer.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: self.layers_buffer.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 2, resource: self.weights_buffer.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 3, resource: self.scales_buffer.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 4, resource: x.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 5, resource: out.as_entire_binding() },
            ],
        });
        log::debug!("surrogate GPU buffers sized for {rows} rows");
        self.batch = Some(BatchBuffers { rows, x, out, staging, bind_group });
    }

    /// Scores `n` rows (at most `max_rows_per_dispatch`) in one dispatch into `mean` and `std`.
    fn dispatch(&mut self, x: &[f32], n: usize, mean: &mut [f32], std: &mut [f32]) -> Result<(), SurrogateError> {
        self.ensure_capacity(n);
        let started = Instant::now();
        let batch = self.batch.as_ref().expect("ensure_capacity created the buffers");
        let t = self.base_params.n_targets as usize;

        let groups = (n as u64).div_ceil(u64::from(self.tile_rows));
        let groups_x = groups.min(u64::from(MAX_GROUPS_PER_DIMENSION)) as u32;
        let groups_y = groups.div_ceil(u64::from(groups_x)) as u32;
        let params = Params { n_rows: n as u32, groups_x, ..self.base_params };
        self.queue.write_buffer(&self.params_buffer, 0, bytemuck::bytes_of(&params));
        self.queue.write_buffer(&batch.x, 0, bytemuck::cast_slice(x));

        let out_bytes = (4 * 2 * t * n) as u64;
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("surrogate score") });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("surrogate score"), timestamp_writes: None });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &batch.bind_group, &[]);
            pass.dispatch_workgroups(groups_x, groups_y, 1);
        }
        encoder.copy_buffer_to_buffer(&batch.out, 0, &batch.staging, 0, out_bytes);
        let submission = self.queue.submit(Some(encoder.finish()));
        self.dispatches += 1;
        let submitted = Instant::now();

        let slice = batch.staging.slice(..out_bytes);
        let (sender, receiver) = mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |result| {
            let _ = sender.send(result);
        });
        self.device
            .poll(wgpu::PollType::Wait { submission_index: Some(submission), timeout: None })
            .map_err(|e| SurrogateError::Gpu(format!("waiting for the surrogate dispatch failed: {e}")))?;
        receiver
            .recv()
            .map_err(|_| SurrogateError::Gpu("the GPU read-back callback never ran".into()))?
            .map_err(|e| SurrogateError::Gpu(format!("cannot map the surrogate output for reading: {e}")))?;
        let mapped = Instant::now();
        {
            let view = slice.get_mapped_range().map_err(|e| SurrogateError::Gpu(format!("cannot read the surrogate output: {e}")))?;
            let values: &[f32] = bytemuck::cast_slice(&view);
            mean.copy_from_slice(&values[..n * t]);
            std.copy_from_slice(&values[n * t..2 * n * t]);
        }
        batch.staging.unmap();
        self.last_dispatch = Some(DispatchTimes { prepare: submitted - started, wait: mapped - submitted, read_back: mapped.elapsed() });
        Ok(())
    }

    /// Returns where the time of the last dispatch went, or `None` before the first one. A
    /// batch split over several dispatches reports its last part.
    pub fn last_dispatch(&self) -> Option<DispatchTimes> {
        self.last_dispatch
    }
}

impl Scorer for GpuScorer {
    fn score(&mut self, x: &[f32], n: usize) -> crate::Result<Prediction> {
        let d = self.base_params.n_features as usize;
        let t = self.base_params.n_targets as usize;
        check_batch(x, n, d)?;
        let mut prediction = Prediction { n, n_targets: t, mean: vec![0.0; n * t], std: vec![0.0; n * t] };
        let step = self.max_rows_per_dispatch;
        let mut start = 0;
        while start < n {
            let rows = step.min(n - start);
            let (mean, std) = (&mut prediction.mean[start * t..(start + rows) * t], &mut prediction.std[start * t..(start + rows) * t]);
            self.dispatch(&x[start * d..(start + rows) * d], rows, mean, std)?;
            start += rows;
        }
        if self.spread_scale.iter().any(|&s| s != 1.0) {
            for (i, v) in prediction.std.iter_mut().enumerate() {
                *v *= self.spread_scale[i % t];
            }
        }
        Ok(prediction)
    }

    fn dispatches(&self) -> u64 {
        self.dispatches
    }
}

fn layout_entry(binding: u32, ty: wgpu::BufferBindingType) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
        count: None,
    }
}

/// Returns the weights as the shader's `array<u32>`: f32 bit patterns, or two f16 values per
/// word (element `2i` in the low half), zero-padded to an even count.
fn pack_weights(weights: &[f32], precision: WeightPrecision) -> Vec<u32> {
    match precision {
        WeightPrecision::F32 => weights.iter().map(|w| w.to_bits()).collect(),
        WeightPrecision::F16 => weights
            .chunks(2)
            .map(|pair| {
                let low = half::f16::from_f32(pair[0]).to_bits() as u32;
                let high = pair.get(1).map_or(0, |&w| half::f16::from_f32(w).to_bits() as u32);
                low | (high << 16)
            })
            .collect(),
    }
}

/// Replaces the shader's size constants with this ensemble's values.
fn specialise_shader(tile_rows: u32, max_width: u32, member_outputs: u32, precision: WeightPrecision) -> String {
    let mut text = String::with_capacity(SHADER_SOURCE.len());
    for line in SHADER_SOURCE.lines() {
        let replaced = if line.starts_with("const TILE_ROWS: u32") {
            format!("const TILE_ROWS: u32 = {tile_rows}u;")
        } else if line.starts_with("const MAX_WIDTH: u32") {
            format!("const MAX_WIDTH: u32 = {max_width}u;")
        } else if line.starts_with("const MEMBER_OUTPUTS: u32") {
            format!("const MEMBER_OUTPUTS: u32 = {member_outputs}u;")
        } else if line.starts_with("const WORKGROUP_SIZE: u32") {
            format!("const WORKGROUP_SIZE: u32 = {WORKGROUP_SIZE}u;")
        } else if line.starts_with("const WEIGHTS_F16: u32") {
            format!("const WEIGHTS_F16: u32 = {}u;", (precision == WeightPrecision::F16) as u32)
        } else {
            line.to_string()
        };
        text.push_str(&replaced);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shader_parses_and_validates_after_specialising() {
        for precision in [WeightPrecision::F32, WeightPrecision::F16] {
            let source = specialise_shader(7, 33, 10, precision);
            assert!(source.contains("const TILE_ROWS: u32 = 7u;"));
            assert!(source.contains("const MAX_WIDTH: u32 = 33u;"));
            assert!(source.contains("const MEMBER_OUTPUTS: u32 = 10u;"));
            let flag = format!("const WEIGHTS_F16: u32 = {}u;", (precision == WeightPrecision::F16) as u32);
            assert!(source.contains(&flag), "{flag}");
            let module = naga::front::wgsl::parse_str(&source).expect("the shader parses");
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
                .validate(&module)
                .expect("the shader validates");
        }
    }

    #[test]
    fn f16_weights_pack_low_half_first() {
        let words = pack_weights(&[1.0, -2.0, 0.5], WeightPrecision::F16);
        assert_eq!(words.len(), 2);
        assert_eq!(words[0] & 0xffff, half::f16::from_f32(1.0).to_bits() as u32);
        assert_eq!(words[0] >> 16, half::f16::from_f32(-2.0).to_bits() as u32);
        assert_eq!(words[1], half::f16::from_f32(0.5).to_bits() as u32);
        assert_eq!(pack_weights(&[1.5], WeightPrecision::F32), vec![1.5f32.to_bits()]);
    }
}
