//! Adapter enumeration, ranking and the summaries `alphanas devices` prints.

use super::DeviceError;
use serde::Serialize;

/// A wgpu instance on the backends `WGPU_BACKEND` allows. The default is Vulkan, Metal and
/// DX12; GL is opt-in (`WGPU_BACKEND=gl`) because its compute support is the weakest.
pub(super) fn instance() -> wgpu::Instance {
    let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle();
    descriptor.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
    wgpu::Instance::new(descriptor)
}

/// Lower is better: discrete, integrated, virtual, CPU, then anything else.
fn rank(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// Adapters that can run compute shaders, best first. The GL backend is kept last among
/// equals because its compute support is the weakest.
fn ranked_adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
    let mut adapters: Vec<wgpu::Adapter> = pollster::block_on(instance.enumerate_adapters(backends))
        .into_iter()
        .filter(|a| a.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS))
        .collect();
    adapters.sort_by_key(|a| {
        let info = a.get_info();
        (rank(info.device_type), info.backend == wgpu::Backend::Gl)
    });
    adapters
}

/// Picks the adapter to use, honouring `WGPU_ADAPTER_NAME` (a case-insensitive substring).
pub(super) fn select(instance: &wgpu::Instance) -> Result<wgpu::Adapter, DeviceError> {
    let adapters = ranked_adapters(instance);
    let filter = std::env::var("WGPU_BACKEND")
        .map(|b| format!(" for WGPU_BACKEND={b}"))
        .unwrap_or_default();

    if let Ok(wanted) = std::env::var("WGPU_ADAPTER_NAME") {
        let needle = wanted.to_lowercase();
        let available: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&needle))
            .ok_or(DeviceError::AdapterNotFound {
                wanted,
                available: if available.is_empty() { "none".into() } else { available.join(", ") },
            });
    }
    adapters.into_iter().next().ok_or(DeviceError::NoAdapter { filter })
}

/// Limits that matter for the kernels.
#[derive(Debug, Clone, Serialize)]
pub struct LimitSummary {
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
    pub max_storage_buffers_per_shader_stage: u32,
}

/// One row of `alphanas devices`.
#[derive(Debug, Clone, Serialize)]
pub struct AdapterSummary {
    pub name: String,
    /// `vulkan`, `metal`, `dx12`, `gl`, or `cpu` for the CPU backend.
    pub backend: String,
    /// `discrete`, `integrated`, `virtual`, `cpu` or `other`.
    pub device_type: String,
    pub driver: String,
    pub f16: bool,
    pub timestamp_query: bool,
    pub timestamp_query_inside_passes: bool,
    pub subgroups: bool,
    pub subgroup_size: Option<(u32, u32)>,
    pub limits: Option<LimitSummary>,
    /// Threads, for the CPU row.
    pub threads: Option<usize>,
    pub selected: bool,
}

pub(crate) fn device_type_name(device_type: wgpu::DeviceType) -> &'static str {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    }
}

fn summarize(adapter: &wgpu::Adapter, selected: bool) -> AdapterSummary {
    let info = adapter.get_info();
    let features = adapter.features();
    let limits = adapter.limits();
    let subgroups = features.contains(wgpu::Features::SUBGROUP);
    AdapterSummary {
        name: info.name.clone(),
        backend: info.backend.to_str().to_string(),
        device_type: device_type_name(info.device_type).to_string(),
        driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
        f16: features.contains(wgpu::Features::SHADER_F16),
        timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
        timestamp_query_inside_passes: features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
        subgroups,
        subgroup_size: subgroups.then_some((info.subgroup_min_size, info.subgroup_max_size)),
        limits: Some(LimitSummary {
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
        }),
        threads: None,
        selected,
    }
}

/// Every compute-capable adapter plus the CPU, marking the one `choice` selects. The GPU rows
/// come best first, in the order the automatic choice uses.
pub fn list_adapters(choice: super::BackendChoice) -> Vec<AdapterSummary> {
    let instance = instance();
    let chosen = match choice {
        super::BackendChoice::Cpu => None,
        _ => select(&instance).ok().map(|a| a.get_info()),
    };
    let mut rows: Vec<AdapterSummary> = ranked_adapters(&instance)
        .iter()
        .map(|a| {
            let info = a.get_info();
            let selected = chosen
                .as_ref()
                .is_some_and(|c| c.name == info.name && c.backend == info.backend && c.device == info.device);
            summarize(a, selected)
        })
        .collect();

    rows.push(AdapterSummary {
        name: super::cpu_model_name(),
        backend: "cpu".into(),
        device_type: "cpu".into(),
        driver: "alphanas CPU kernels".into(),
        f16: false,
        timestamp_query: false,
        timestamp_query_inside_passes: false,
        subgroups: false,
        subgroup_size: None,
        limits: None,
        threads: Some(rayon::current_num_threads()),
        selected: chosen.is_none() && choice != super::BackendChoice::Gpu,
    });
    rows
}
