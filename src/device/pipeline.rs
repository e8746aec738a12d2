//! Compute pipelines: WGSL specialisation (element type, constants) and a cache that builds
//! each pipeline once per device.
//!
//! Every kernel shader declares its element type as the line `alias T = f32;` and works on
//! `T` in storage, converting to `f32` for accumulation. The f16 variant is the same source
//! with that line replaced by `alias T = f16;` and `enable f16;` prepended, so both variants
//! can never drift apart. Tile sizes and similar constants are specialised the same way: a
//! line `const NAME: u32 = ...;` is replaced by the requested value.

use super::{DType, DeviceError, GpuContext};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The line every kernel shader uses to declare its element type.
pub const ELEMENT_ALIAS_LINE: &str = "alias T = f32;";

/// How a kernel accesses one storage binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`.
    ReadWrite,
}

/// What identifies one pipeline: shader, entry point and specialisation.
///
/// The bind group layout is always: binding 0 a uniform parameter struct, then bindings
/// 1..=N the storage buffers in `storage`, all in group 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelSpec {
    /// Shader name, used for the cache key and in error messages (for example `matmul`).
    pub shader: &'static str,
    /// The WGSL source with the `alias T = f32;` line.
    pub source: &'static str,
    pub entry_point: &'static str,
    /// Element type of the storage buffers: `F32` or `F16` (`U32` buffers are declared
    /// explicitly in the shader and do not change with this).
    pub dtype: DType,
    /// Access of storage bindings 1..=N.
    pub storage: &'static [Access],
    /// `const NAME: u32 = ...;` values to substitute, for example tile sizes.
    pub constants: Vec<(&'static str, u32)>,
}

impl KernelSpec {
    /// A specification without constant overrides.
    pub fn new(shader: &'static str, source: &'static str, entry_point: &'static str, dtype: DType, storage: &'static [Access]) -> Self {
        KernelSpec { shader, source, entry_point, dtype, storage, constants: Vec::new() }
    }
}

/// A built pipeline with its bind group layout.
#[derive(Debug)]
pub struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    /// Number of storage bindings after the uniform at binding 0.
    pub storage_bindings: usize,
    /// `shader::entry_point[dtype]`, for labels and messages.
    pub name: String,
}

/// Pipelines built on one device, keyed by their [`KernelSpec`].
#[derive(Debug, Default)]
pub(crate) struct PipelineCache {
    kernels: Mutex<HashMap<KernelSpec, Arc<Kernel>>>,
}

impl PipelineCache {
    pub(crate) fn len(&self) -> usize {
        self.kernels.lock().unwrap().len()
    }
}

/// Rewrites `source` for `dtype` and `constants` (see the module docs).
///
/// Fails when the f16 variant is requested from a source without the alias line, or when a
/// constant to substitute is not declared, because either would silently build the wrong
/// kernel.
pub fn specialize_wgsl(source: &str, dtype: DType, constants: &[(&str, u32)]) -> Result<String, String> {
    let mut text = source.to_string();

    if dtype == DType::F16 {
        if !text.contains(ELEMENT_ALIAS_LINE) {
            return Err(format!("the shader has no `{ELEMENT_ALIAS_LINE}` line, so it has no f16 variant"));
        }
        text = text.replacen(ELEMENT_ALIAS_LINE, "alias T = f16;", 1);
        text.insert_str(0, "enable f16;\n");
    }

    for (name, value) in constants {
        let prefix = format!("const {name}: u32 = ");
        let Some(start) = text.find(&prefix) else {
            return Err(format!("the shader declares no `{prefix}...;` to specialise"));
        };
        let Some(len) = text[start..].find(';') else {
            return Err(format!("the declaration `{prefix}` has no closing `;`"));
        };
        text.replace_range(start..start + len + 1, &format!("{prefix}{value}u;"));
    }
    Ok(text)
}

fn layout_entries(storage: &[Access]) -> Vec<wgpu::BindGroupLayoutEntry> {
    let uniform = wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let storage_entries = storage.iter().enumerate().map(|(i, access)| wgpu::BindGroupLayoutEntry {
        binding: i as u32 + 1,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only: *access == Access::Read },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    });
    std::iter::once(uniform).chain(storage_entries).collect()
}

impl GpuContext {
    /// Returns the pipeline for `spec`, building it on first use.
    ///
    /// Building runs inside a validation error scope, so a shader that the device rejects
    /// becomes a [`DeviceError::Uncaptured`] naming the kernel rather than a panic.
    pub fn kernel(&self, spec: &KernelSpec) -> Result<Arc<Kernel>, DeviceError> {
        if let Some(kernel) = self.pipelines.kernels.lock().unwrap().get(spec) {
            return Ok(Arc::clone(kernel));
        }

        let name = format!("{}::{}[{}]", spec.shader, spec.entry_point, spec.dtype.name());
        if spec.dtype == DType::F16 && !self.has_f16() {
            return Err(DeviceError::MissingFeature {
                adapter: self.info.name.clone(),
                feature: "SHADER_F16",
                fix: "use --dtype f32",
            });
        }
        let source = specialize_wgsl(spec.source, spec.dtype, &spec.constants)
            .map_err(|e| DeviceError::Uncaptured(format!("cannot specialise {name}: {e}")))?;

        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&name),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&name),
            entries: &layout_entries(spec.storage),
        });
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(spec.entry_point),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
        if let Some(error) = pollster::block_on(scope.pop()) {
            let text = error.to_string().replace('\n', " ");
            return Err(DeviceError::Uncaptured(format!("cannot build the pipeline {name}: {text}")));
        }
        log::debug!("built pipeline {name}");

        let kernel = Arc::new(Kernel { pipeline, layout, storage_bindings: spec.storage.len(), name });
        self.pipelines.kernels.lock().unwrap().insert(spec.clone(), Arc::clone(&kernel));
        Ok(kernel)
    }

    /// Number of pipelines built so far on this device.
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specialize_f16_rewrites_alias() {
        let source = "alias T = f32;\nconst TILE: u32 = 64u;\n";
        let text = specialize_wgsl(source, DType::F16, &[("TILE", 32)]).unwrap();
        assert!(text.starts_with("enable f16;\n"));
        assert!(text.contains("alias T = f16;"));
        assert!(text.contains("const TILE: u32 = 32u;"));
        assert!(!text.contains("64u"));
    }

    #[test]
    fn specialize_rejects_missing_names() {
        assert!(specialize_wgsl("const A: u32 = 1u;", DType::F16, &[]).is_err());
        assert!(specialize_wgsl("alias T = f32;", DType::F32, &[("TILE", 8)]).is_err());
        assert_eq!(specialize_wgsl("x", DType::F32, &[]).unwrap(), "x");
    }
}
