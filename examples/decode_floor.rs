//! Measures memory bandwidth with a copy benchmark, then CPU decode latency of a model, and
//! prints the ratio of the measured latency to its floor `weight bytes read / bandwidth`.
//!
//! Usage: `cargo run --release --example decode_floor -- [ARCH.json] [SEQ]`. Without a file
//! it uses the `llama_100m` preset; SEQ (default 128) is the number of positions attended.
//!
//! The copy reads one 512 MiB buffer and writes another, in parallel over the rayon pool,
//! and counts both directions. A read-only pass (sum) is printed too, because decode mostly
//! reads: its bandwidth gives a tighter floor.

use std::path::Path;
use std::time::Instant;

use alphanas::arch::presets;
use alphanas::model::{bench_cpu, Mode, Weights};
use alphanas::stats::TimingStats;
use alphanas::Architecture;
use rayon::prelude::*;

const BUFFER_BYTES: usize = 512 << 20;
const CHUNK: usize = 1 << 16;

fn median_ns(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let samples: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_nanos() as f64
        })
        .collect();
    TimingStats::from_samples(&samples).expect("runs > 0").median_ns
}

/// Sum with eight independent partial sums, so the loop is bound by loads rather than by
/// the latency of one chain of additions.
fn sum_lanes(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    for chunk in values.chunks_exact(8) {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum()
}

fn main() -> alphanas::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arch = match args.first() {
        Some(path) => Architecture::from_file(Path::new(path))?,
        None => presets::llama_100m(),
    };
    let seq = match args.get(1) {
        None => 128,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|&s| s > 0 && s as u64 <= arch.max_seq_len)
            .ok_or_else(|| alphanas::Error::Invalid(format!("SEQ ({text}) must be an integer from 1 to the architecture's max_seq_len ({})", arch.max_seq_len)))?,
    };
    println!("threads {}", rayon::current_num_threads());

    let len = BUFFER_BYTES / 4;
    let src: Vec<f32> = (0..len).into_par_iter().map(|i| i as f32).collect();
    let mut dst = vec![0.0f32; len];
    let copy_ns = median_ns(10, || {
        dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| d.copy_from_slice(s));
        std::hint::black_box(&dst);
    });
    let copy_gbps = 2.0 * BUFFER_BYTES as f64 / copy_ns;
    let read_ns = median_ns(10, || {
        let total: f32 = src.par_chunks(CHUNK).map(sum_lanes).sum();
        std::hint::black_box(total);
    });
    let read_gbps = BUFFER_BYTES as f64 / read_ns;
    drop((src, dst));
    println!("copy bandwidth {copy_gbps:.2} GB/s (read + write), read bandwidth {read_gbps:.2} GB/s");

    let weights = Weights::random(&arch, 0)?;
    let read_bytes = weights.decode_read_bytes() as f64;
    drop(weights);
    let result = bench_cpu(&arch, Mode::Decode, 1, seq, 3, 20, 0)?;
    let floor_copy_ms = read_bytes / copy_gbps / 1e6;
    let floor_read_ms = read_bytes / read_gbps / 1e6;
    println!("model {} params, decode reads {:.1} MB of weights", arch.params(), read_bytes / 1e6);
    println!(
        "decode b1 seq{seq}: median {:.2} ms (p10 {:.2}, p90 {:.2}), peak memory {:.1} MiB",
        result.latency_ms,
        result.p10_ns / 1e6,
        result.p90_ns / 1e6,
        result.peak_memory_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "floor (copy bandwidth) {floor_copy_ms:.2} ms, ratio {:.2}; floor (read bandwidth) {floor_read_ms:.2} ms, ratio {:.2}",
        result.latency_ms / floor_copy_ms,
        result.latency_ms / floor_read_ms
    );
    Ok(())
}
