//! Backend choice (GPU through wgpu, or CPU), adapter selection, device limits and errors.
//!
//! Adapter order: discrete GPU, then integrated, then virtual, then a CPU-type adapter such as
//! lavapipe. `WGPU_BACKEND` restricts the backends searched (for example `vulkan`) and
//! `WGPU_ADAPTER_NAME` picks the adapter whose name contains the given text. The device is
//! requested with the adapter's own limits (the WebGPU defaults are far smaller than what real
//! GPUs allow, for example a 128 MiB storage binding) and with the optional features the crate
//! uses where present: timestamp queries, `SHADER_F16` and subgroups.
//!
//! A lost device or an uncaptured wgpu error is recorded by callbacks and surfaced as a
//! [`DeviceError`] by [`GpuContext::check`], never as a panic.

mod adapter;
mod cpu_pool;
mod pipeline;
mod recorder;
mod runtime;
pub mod timing;

#[cfg(test)]
mod gpu_tests;

pub use adapter::{list_adapters, AdapterSummary, LimitSummary};
pub use cpu_pool::{cpu_workers_pinned, init_cpu_pool};
pub(crate) use adapter::device_type_name;
pub use pipeline::{specialize_wgsl, Access, Kernel, KernelSpec, ELEMENT_ALIAS_LINE};
pub use recorder::{fold_grid, Bind, Recorder};
pub use runtime::{BufferPool, DType, GpuTensor, PoolStats, PooledBuffer};
pub use timing::{time_cpu, time_gpu, time_gpu_with_source, TimingSource};

use std::sync::{Arc, Mutex, OnceLock};

/// Errors of the GPU and CPU backends.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// No GPU adapter was found (or none matched the filters).
    #[error("no GPU adapter found{filter}; install a Vulkan, Metal or DX12 driver (on Linux without a GPU: apt-get install mesa-vulkan-drivers libvulkan1) or use --backend cpu")]
    NoAdapter { filter: String },
    /// `WGPU_ADAPTER_NAME` matched no adapter.
    #[error("no GPU adapter name contains WGPU_ADAPTER_NAME={wanted:?}; available: {available}; unset it or pick one of these names")]
    AdapterNotFound { wanted: String, available: String },
    /// The adapter refused to create a device.
    #[error("cannot create a GPU device on {adapter}: {message}")]
    RequestDevice { adapter: String, message: String },
    /// The device was lost (driver reset, GPU removed, or a timeout detection and recovery).
    #[error("the GPU device was lost ({0}); rerun, or use --backend cpu if it keeps happening")]
    Lost(String),
    /// wgpu reported a validation or out-of-memory error that no error scope caught.
    #[error("GPU error: {0}")]
    Uncaptured(String),
    /// A request exceeds a device limit and cannot be split.
    #[error("{what} needs {needed} but the device limit {limit_name} is {limit}; {fix}")]
    LimitExceeded {
        what: String,
        needed: u64,
        limit_name: &'static str,
        limit: u64,
        fix: String,
    },
    /// The device lacks an optional feature the request needs.
    #[error("the GPU {adapter} does not support {feature}; {fix}")]
    MissingFeature {
        adapter: String,
        feature: &'static str,
        fix: &'static str,
    },
    /// Waiting for the GPU failed or timed out.
    #[error("waiting for the GPU failed: {0}")]
    Poll(String),
    /// The requested backend cannot be used.
    #[error("{0}")]
    Unavailable(String),
}

/// Which compute backend to use, as chosen by `--backend` or `ALPHANAS_BACKEND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// The GPU when an adapter is found, else the CPU with one warning.
    #[default]
    Auto,
    /// The GPU only; fails when no adapter is found.
    Gpu,
    /// The CPU only.
    Cpu,
}

/// An open GPU device with everything the kernels need to know about it.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// Features enabled on the device (a subset of the adapter's).
    pub features: wgpu::Features,
    /// Limits enabled on the device: the adapter's own.
    pub limits: wgpu::Limits,
    lost: Arc<Mutex<Option<String>>>,
    uncaptured: Arc<Mutex<Vec<String>>>,
    pipelines: pipeline::PipelineCache,
    pool: runtime::BufferPool,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .finish()
    }
}

/// Optional features used where the adapter has them.
fn wanted_features() -> wgpu::Features {
    wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
        | wgpu::Features::SHADER_F16
        | wgpu::Features::SUBGROUP
}

impl GpuContext {
    /// Opens a device on the best adapter (see the module docs for the order and filters).
    pub fn new() -> Result<Arc<GpuContext>, DeviceError> {
        let instance = adapter::instance();
        let adapter = adapter::select(&instance)?;
        Self::from_adapter(&adapter)
    }

    /// Opens a device on `adapter` with its own limits and the optional features it supports.
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Arc<GpuContext>, DeviceError> {
        Self::open(adapter, adapter.limits())
    }

    /// Opens a device on the best adapter with storage bindings capped at `bytes`, or at the
    /// adapter's own limit when that is lower. The device then rejects larger bindings as a GPU
    /// with that limit would. Tests use it to reach the code that splits large operands
    /// without allocating hundreds of megabytes.
    pub fn with_binding_limit(bytes: u64) -> Result<Arc<GpuContext>, DeviceError> {
        let instance = adapter::instance();
        let adapter = adapter::select(&instance)?;
        let mut limits = adapter.limits();
        limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(bytes);
        Self::open(&adapter, limits)
    }

    fn open(adapter: &wgpu::Adapter, limits: wgpu::Limits) -> Result<Arc<GpuContext>, DeviceError> {
        let info = adapter.get_info();
        let features = adapter.features() & wanted_features();

        let descriptor = wgpu::DeviceDescriptor {
            label: Some("alphanas"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&descriptor)).map_err(|e| {
            DeviceError::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            }
        })?;

        let lost = Arc::new(Mutex::new(None));
        let lost_in_callback = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            // Dropping the device reports `Destroyed`; only other reasons are real losses.
            if reason != wgpu::DeviceLostReason::Destroyed {
                log::error!("GPU device lost: {message}");
                *lost_in_callback.lock().unwrap() = Some(message);
            }
        });

        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let uncaptured_in_callback = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            let text = error.to_string().replace('\n', " ");
            log::debug!("uncaptured GPU error: {text}");
            uncaptured_in_callback.lock().unwrap().push(text);
        }));

        log::info!(
            "using GPU {} ({:?}, {:?}, driver {} {})",
            info.name,
            info.backend,
            info.device_type,
            info.driver,
            info.driver_info
        );
        Ok(Arc::new(GpuContext {
            device,
            queue,
            info,
            features,
            limits,
            lost,
            uncaptured,
            pipelines: Default::default(),
            pool: Default::default(),
        }))
    }

    /// Whether the device stores and computes in f16 (`SHADER_F16`).
    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Whether timestamp queries can be written at pass boundaries.
    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Returns the first recorded device loss or uncaptured error, clearing the latter.
    pub fn check(&self) -> Result<(), DeviceError> {
        if let Some(message) = self.lost.lock().unwrap().clone() {
            return Err(DeviceError::Lost(message));
        }
        let mut errors = self.uncaptured.lock().unwrap();
        if let Some(first) = errors.first().cloned() {
            let more = errors.len() - 1;
            errors.clear();
            let suffix = if more > 0 { format!(" (and {more} more)") } else { String::new() };
            return Err(DeviceError::Uncaptured(format!("{first}{suffix}")));
        }
        Ok(())
    }

    /// Blocks until all submitted work has finished, then reports any recorded error.
    pub fn wait(&self) -> Result<(), DeviceError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| DeviceError::Poll(e.to_string()))?;
        self.check()
    }

    /// Fails with [`DeviceError::LimitExceeded`] when `bytes` exceed the largest storage
    /// binding, naming `what` and the fix.
    pub fn check_binding(&self, what: &str, bytes: u64) -> Result<(), DeviceError> {
        let limit = self.limits.max_storage_buffer_binding_size;
        if bytes > limit {
            return Err(DeviceError::LimitExceeded {
                what: what.to_string(),
                needed: bytes,
                limit_name: "max_storage_buffer_binding_size",
                limit,
                fix: "use a smaller batch or sequence length, or a GPU with larger bindings".into(),
            });
        }
        Ok(())
    }
}

static SHARED_GPU: OnceLock<Result<Arc<GpuContext>, DeviceError>> = OnceLock::new();

/// The process-wide GPU context, opened on first use. Opening a device is slow (tens to
/// hundreds of milliseconds) and drivers limit how many can exist, so every caller shares one.
pub fn shared_gpu() -> Result<Arc<GpuContext>, DeviceError> {
    SHARED_GPU.get_or_init(GpuContext::new).clone()
}

/// The resolved compute backend.
#[derive(Debug, Clone)]
pub enum Backend {
    Gpu(Arc<GpuContext>),
    Cpu,
}

static CPU_FALLBACK_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static EMULATION_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Backend {
    /// Resolves `choice`. `Auto` falls back to the CPU with one warning per process when no
    /// GPU can be opened.
    pub fn resolve(choice: BackendChoice) -> Result<Backend, DeviceError> {
        match choice {
            BackendChoice::Cpu => Ok(Backend::Cpu),
            BackendChoice::Gpu => Ok(Backend::Gpu(shared_gpu()?)),
            BackendChoice::Auto => match shared_gpu() {
                Ok(ctx) => Ok(Backend::Gpu(ctx)),
                Err(err) => {
                    if !CPU_FALLBACK_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        log::warn!("no usable GPU ({err}); using the CPU backend");
                    }
                    Ok(Backend::Cpu)
                }
            },
        }
    }

    /// Resolves `choice` for latency measurement (profiling, validation, the `measure`
    /// evaluator). Like [`Backend::resolve`], except that `auto` passes over a CPU-type adapter
    /// such as lavapipe with one warning: it emulates a GPU on the processor and runs many
    /// times slower than the native CPU kernels, so its latencies describe no real device.
    /// `gpu` still selects it.
    pub fn resolve_for_measurement(choice: BackendChoice) -> Result<Backend, DeviceError> {
        match Backend::resolve(choice)? {
            Backend::Gpu(ctx) if choice == BackendChoice::Auto && ctx.info.device_type == wgpu::DeviceType::Cpu => {
                if !EMULATION_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    log::warn!(
                        "the GPU adapter {} is a CPU emulation; using the CPU kernels instead, which are faster (use --backend gpu to use it anyway)",
                        ctx.info.name
                    );
                }
                Ok(Backend::Cpu)
            }
            other => Ok(other),
        }
    }

    /// `gpu` or `cpu`, as written to JSON outputs.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Gpu(_) => "gpu",
            Backend::Cpu => "cpu",
        }
    }

    /// Human-readable device name: the adapter's name, or the CPU model and thread count.
    pub fn device_name(&self) -> String {
        match self {
            Backend::Gpu(ctx) => ctx.info.name.clone(),
            Backend::Cpu => format!("{} ({} threads)", cpu_model_name(), rayon::current_num_threads()),
        }
    }
}

/// The CPU model name from `/proc/cpuinfo`, or the architecture name where that is missing.
pub fn cpu_model_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The GPU for a test, or `None` after printing a skip message. With `ALPHANAS_REQUIRE_GPU=1`
/// a missing GPU panics instead, so CI on lavapipe cannot pass by skipping.
pub fn gpu_for_tests(test: &str) -> Option<Arc<GpuContext>> {
    match shared_gpu() {
        Ok(ctx) => Some(ctx),
        Err(err) => {
            if std::env::var("ALPHANAS_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: ALPHANAS_REQUIRE_GPU=1 but no GPU could be opened: {err}");
            }
            eprintln!("skipping {test}: no GPU ({err})");
            None
        }
    }
}

/// Total loop iterations llvmpipe (the driver behind lavapipe) lets one shader invocation run.
/// Its counter is shared by every loop of a shader and stops them all when it runs out, so
/// later iterations are skipped without an error (Mesa, `LP_MAX_TGSI_LOOP_ITERATIONS` in
/// gallivm's `lp_bld_limits.h`). Kernels whose loops grow with a dimension check it with
/// [`GpuContext::check_loop_budget`].
pub const LLVMPIPE_LOOP_ITERATIONS: usize = 65_535;

impl GpuContext {
    /// Returns whether the adapter is llvmpipe, Mesa's CPU implementation (lavapipe).
    pub fn is_llvmpipe(&self) -> bool {
        self.info.name.contains("llvmpipe") || self.info.driver.contains("llvmpipe")
    }

    /// Loop iterations one shader invocation may run here: 90% of
    /// [`LLVMPIPE_LOOP_ITERATIONS`] on llvmpipe (the margin covers loops a kernel's count
    /// misses), and `None` (no bound) on other adapters.
    pub fn loop_budget(&self) -> Option<usize> {
        self.is_llvmpipe().then_some(LLVMPIPE_LOOP_ITERATIONS * 9 / 10)
    }

    /// Rejects a dispatch whose invocations would each run more than [`Self::loop_budget`]
    /// loop iterations, because llvmpipe's results would be wrong. `work` names the dispatch's
    /// work and `fix` the way out. Adapters without a budget pass.
    pub fn check_loop_budget(&self, work: &str, iterations: usize, fix: &str) -> Result<(), crate::Error> {
        if self.loop_budget().is_none_or(|budget| iterations <= budget) {
            return Ok(());
        }
        Err(crate::Error::Invalid(format!(
            "{work} needs about {iterations} loop iterations per shader invocation, more than llvmpipe (lavapipe) runs correctly: it stops each invocation after {LLVMPIPE_LOOP_ITERATIONS} in total and skips the rest silently; {fix}"
        )))
    }
}
