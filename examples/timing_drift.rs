//! Shows whether this machine runs at a steady enough speed to check latency predictions.
//!
//! Usage: `cargo run --release --example timing_drift -- [--mode decode|prefill] [--models N]
//! [--blocks B] [--gap-ms G] [--seed S]`.
//!
//! It draws N architectures of the `llama` space (at most 300M parameters), builds each model
//! once, and then times them in B blocks, G milliseconds apart. In each block every model runs
//! 3 untimed and 10 timed forward passes (batch 1, 32 tokens), the models taking turns pass by
//! pass, and the block keeps each model's median. Because the weights stay where they are, a
//! change between blocks is a change in the machine, not in the model.
//!
//! Two figures per model:
//!
//! - `span`: the slowest block's median over the fastest's. This is how far two measurements of
//!   the same model can disagree here.
//! - `span vs others`: the same for the model's median divided by the geometric mean of all
//!   models in that block. When the models slow down together this stays near 1, and the change
//!   is common to the whole machine.
//!
//! A cost table can only predict to ±10% where `span` is well below 1.2.

use std::time::{Duration, Instant};

use alphanas::model::{random_tokens, CpuModel, KvCache, Weights};
use alphanas::space::{Candidate, SearchSpace, Space};
use alphanas::{Architecture, Error};
use clap::Parser;
use rand::SeedableRng;

const WARMUP: usize = 3;
const RUNS: usize = 10;
const SEQ: usize = 32;
const MAX_PARAMS: u64 = 300_000_000;

#[derive(Parser)]
struct Args {
    /// Forward pass to time: decode (one token against 31 cached) or prefill (32 tokens).
    #[arg(long, default_value = "decode", value_parser = ["decode", "prefill"])]
    mode: String,
    /// Architectures timed in turn.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    models: u16,
    /// Blocks of timed passes.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u16).range(2..=10_000))]
    blocks: u16,
    /// Pause between blocks, in milliseconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(0..=600_000))]
    gap_ms: u32,
    /// Seed of the architecture draw.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

struct Timed {
    arch: Architecture,
    model: CpuModel,
    cache: KvCache,
    tokens: Vec<u32>,
    logits: Vec<f32>,
}

impl Timed {
    fn build(arch: Architecture, prefill: bool) -> alphanas::Result<Timed> {
        let weights = Weights::random(&arch, 1)?;
        let vocab = weights.vocab_size;
        let mut model = CpuModel::new(weights);
        let mut cache = model.new_cache(1, SEQ)?;
        let tokens = if prefill { random_tokens(SEQ, vocab, 1) } else { random_tokens(1, vocab, 1) };
        if prefill {
            model.reserve_scratch(SEQ)?;
        } else {
            cache.fill_random(SEQ - 1, 1)?;
            model.reserve_scratch(1)?;
        }
        Ok(Timed { arch, model, cache, tokens, logits: vec![0.0; vocab] })
    }

    /// Runs one forward pass and returns its time in seconds.
    fn run(&mut self, prefill: bool) -> alphanas::Result<f64> {
        let start = Instant::now();
        if prefill {
            self.cache.clear();
            let logits = self.model.prefill(&self.tokens, 1, SEQ, &mut self.cache)?;
            std::hint::black_box(&logits);
        } else {
            self.cache.truncate(SEQ - 1);
            self.model.decode_into(&self.tokens, &mut self.cache, &mut self.logits)?;
            std::hint::black_box(&self.logits);
        }
        Ok(start.elapsed().as_secs_f64())
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    alphanas::stats::percentile_sorted(values, 0.5)
}

fn span(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    max / min
}

fn main() -> alphanas::Result<()> {
    let args = Args::parse();
    let prefill = args.mode == "prefill";
    alphanas::device::init_cpu_pool(None, true).map_err(|e| Error::Invalid(format!("cannot build the CPU thread pool: {e}")))?;

    let space = Space::resolve("llama")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut timed = Vec::new();
    while timed.len() < args.models as usize {
        if let Candidate::Arch(arch) = space.candidate(&space.sample(&mut rng)) {
            if arch.params() <= MAX_PARAMS {
                timed.push(Timed::build(arch, prefill)?);
            }
        }
    }

    // medians[block][model], in milliseconds.
    let mut medians = Vec::with_capacity(args.blocks as usize);
    let start = Instant::now();
    for _ in 0..args.blocks {
        let mut samples = vec![Vec::with_capacity(RUNS); timed.len()];
        for pass in 0..WARMUP + RUNS {
            for (model, kept) in timed.iter_mut().zip(&mut samples) {
                let seconds = model.run(prefill)?;
                if pass >= WARMUP {
                    kept.push(seconds * 1e3);
                }
            }
        }
        medians.push(samples.iter_mut().map(|s| median(s)).collect::<Vec<f64>>());
        std::thread::sleep(Duration::from_millis(u64::from(args.gap_ms)));
    }

    let geomeans: Vec<f64> =
        medians.iter().map(|block| (block.iter().map(|m| m.ln()).sum::<f64>() / block.len() as f64).exp()).collect();
    println!(
        "{} blocks of {RUNS} {} passes per model over {:.0} s, batch 1, seq {SEQ}",
        args.blocks,
        args.mode,
        start.elapsed().as_secs_f64()
    );
    println!("{:<46} {:>12} {:>8} {:>16}", "model", "median ms", "span", "span vs others");
    for (i, model) in timed.iter().enumerate() {
        let mut own: Vec<f64> = medians.iter().map(|block| block[i]).collect();
        let relative: Vec<f64> = medians.iter().zip(&geomeans).map(|(block, g)| block[i] / g).collect();
        let spread = span(&own);
        println!("{:<46} {:>12.2} {:>8.3} {:>16.3}", model.arch.summary(), median(&mut own), spread, span(&relative));
    }
    println!("machine speed (geometric mean of the models per block): span {:.3}", span(&geomeans));
    Ok(())
}
