//! The CPU thread pool of the command-line tool, with each worker pinned to its own CPU.
//!
//! Unpinned, a two-thread pool on the 2-vCPU development machine sometimes ran a 1 ms matmul at
//! the speed of one thread for a whole block of timed runs. In 5 of 30 such 9-run blocks of
//! 32-row matmuls, the median was about twice the others. Pinned, no block was slow. The likely cause is the scheduler
//! waking both workers on the same CPU. Profiles and whole-model measurements must see the same
//! speed, so the CLI pins by default (figures in docs/BENCHMARKS.md). Programs that embed the
//! crate keep their own rayon pool unless they call [`init_cpu_pool`].

/// Builds rayon's global pool with `threads` workers (rayon's default count when `None`, which
/// honours `RAYON_NUM_THREADS`). With `pin`, worker `i` is bound to the `i`-th CPU this process
/// may run on. Pinning is skipped where the platform has no thread affinity, where the process
/// may use only one CPU, and where there are more workers than CPUs, because two workers bound
/// to one CPU would be slower than unpinned ones. Returns the number of pinned workers and, when
/// pinning was requested but skipped, the reason; or an error when the global pool already exists.
pub fn init_cpu_pool(threads: Option<usize>, pin: bool) -> Result<(usize, Option<String>), rayon::ThreadPoolBuildError> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(threads) = threads {
        builder = builder.num_threads(threads.max(1));
    }
    let workers = threads.unwrap_or_else(default_thread_count);
    let cpus = if pin { allowed_cpus() } else { Vec::new() };
    let skipped = match cpus.len() {
        _ if !pin => None,
        0 => Some("this platform has no thread affinity".to_string()),
        1 => Some("the process may use only one CPU".to_string()),
        n if workers > n => Some(format!("{workers} threads exceed the {n} CPUs the process may use")),
        _ => None,
    };
    if !pin || skipped.is_some() {
        builder.build_global()?;
        return Ok((0, skipped));
    }
    let pinned = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = pinned.clone();
    builder = builder.start_handler(move |index| {
        if pin_current_thread(cpus[index % cpus.len()]) {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    builder.build_global()?;
    // Workers start asynchronously, so run one task on each before reading the count.
    rayon::broadcast(|_| ());
    Ok((pinned.load(std::sync::atomic::Ordering::Relaxed), None))
}

/// Returns the worker count rayon picks by default: `RAYON_NUM_THREADS` when it is a positive
/// number, else the available parallelism.
fn default_thread_count() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Reports whether every worker of rayon's current pool is bound to a single CPU while the process
/// may use more than one. Always false where the platform has no thread affinity.
pub fn cpu_workers_pinned() -> bool {
    // This crate never pins the main thread, whose id is the process id, so its CPUs are the
    // process's.
    if affinity_of(std::process::id() as i32).len() < 2 {
        return false;
    }
    rayon::broadcast(|_| affinity_of(0).len() == 1).into_iter().all(|pinned| pinned)
}

/// Lists the CPUs the calling thread may run on, in ascending order.
fn allowed_cpus() -> Vec<usize> {
    affinity_of(0)
}

/// Lists the CPUs that thread `tid` may run on (0 for the calling thread), in ascending order,
/// or nothing where that cannot be read.
#[cfg(target_os = "linux")]
fn affinity_of(tid: i32) -> Vec<usize> {
    // SAFETY: `set` is a plain bit set that sched_getaffinity fills; its size is passed along.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect()
    }
}

#[cfg(not(target_os = "linux"))]
fn affinity_of(_tid: i32) -> Vec<usize> {
    Vec::new()
}

/// Binds the calling thread to one CPU. Returns false when the kernel rejects it, for example
/// when a cgroup removed that CPU after the pool was planned.
#[cfg(target_os = "linux")]
fn pin_current_thread(cpu: usize) -> bool {
    // SAFETY: `set` is a plain bit set with one CPU, and pid 0 means the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_current_thread(_cpu: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn allowed_cpus_include_the_current_one() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]), "{cpus:?}");
        // SAFETY: sched_getcpu only reads the calling thread's CPU.
        let current = unsafe { libc::sched_getcpu() };
        assert!(cpus.contains(&(current as usize)), "{current} not in {cpus:?}");
    }

    #[test]
    fn private_pool_is_not_pinned() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        assert!(!pool.install(cpu_workers_pinned));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn pinned_thread_runs_on_its_cpu() {
        let cpu = *allowed_cpus().last().unwrap();
        let seen = std::thread::spawn(move || {
            assert!(pin_current_thread(cpu));
            // SAFETY: sched_getcpu only reads the calling thread's CPU.
            unsafe { libc::sched_getcpu() as usize }
        })
        .join()
        .unwrap();
        assert_eq!(seen, cpu);
    }
}
