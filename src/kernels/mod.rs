//! Transformer kernels, one module per op family. Each family has its GPU dispatch
//! (`gpu.rs`, with the WGSL in `shaders/`) and its CPU twin (`cpu.rs`: a plain reference that
//! tests use as the oracle, and a fast multi-threaded path that is the CPU fallback).
//!
//! Layout conventions shared by both sides: tensors are dense row-major `f32` (or `f16` on
//! the GPU where `SHADER_F16` is present); attention activations are `[batch, seq, heads,
//! head_dim]` and KV caches `[batch, cache_len, n_kv_heads, head_dim]`.

pub mod activation;
pub mod attention;
pub mod embedding;
pub mod matmul;
pub mod norm;
pub mod rope;
pub mod softmax;

#[doc(hidden)]
pub mod test_util;
