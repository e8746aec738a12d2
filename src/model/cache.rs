//! The KV cache of a CPU forward pass.
//!
//! Each layer holds keys and values as `[batch, capacity, n_kv_heads, head_dim]`, allocated
//! once for `capacity` positions; `len` positions of every sequence are filled. All
//! sequences of a batch have the same length.

use super::weights::{check_fits_in_memory, fill_uniform, try_zeros, Weights};
use crate::{Error, Result};

/// Keys and values of one layer.
#[derive(Debug, Clone)]
pub struct LayerCache {
    /// `[batch, capacity, kv_dim]`.
    pub k: Vec<f32>,
    /// `[batch, capacity, kv_dim]`.
    pub v: Vec<f32>,
    /// `n_kv_heads · head_dim` of this layer.
    pub kv_dim: usize,
}

/// Keys and values of every layer for `batch` sequences of up to `capacity` positions.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerCache>,
    batch: usize,
    capacity: usize,
    len: usize,
}

impl KvCache {
    /// Allocates an empty cache for the layers of `weights`.
    ///
    /// # Errors
    /// When `batch` or `capacity` is 0, `capacity` exceeds the architecture's `max_seq_len`,
    /// or the cache does not fit in the available memory.
    pub fn new(weights: &Weights, batch: usize, capacity: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::Invalid("batch (0) must be at least 1".into()));
        }
        if capacity == 0 {
            return Err(Error::Invalid("KV cache capacity (0) must be at least 1 position".into()));
        }
        if capacity > weights.max_seq_len {
            return Err(Error::Invalid(format!(
                "KV cache capacity ({capacity}) exceeds max_seq_len ({}) of the architecture; use at most {} positions",
                weights.max_seq_len, weights.max_seq_len
            )));
        }
        let bytes = Self::bytes_for(weights, batch, capacity);
        check_fits_in_memory("the KV cache", bytes)?;

        let mut layers = Vec::with_capacity(weights.layers.len());
        for layer in &weights.layers {
            let kv_dim = layer.dims.kv_dim();
            layers.push(LayerCache {
                k: try_zeros(batch * capacity * kv_dim)?,
                v: try_zeros(batch * capacity * kv_dim)?,
                kv_dim,
            });
        }
        Ok(KvCache { layers, batch, capacity, len: 0 })
    }

    /// Bytes [`KvCache::new`] allocates.
    pub fn bytes_for(weights: &Weights, batch: usize, capacity: usize) -> u64 {
        let per_position: usize = weights.layers.iter().map(|l| 2 * l.dims.kv_dim()).sum();
        (batch * capacity * per_position) as u64 * 4
    }

    /// Bytes held by this cache.
    pub fn bytes(&self) -> u64 {
        self.layers.iter().map(|l| (l.k.len() + l.v.len()) as u64 * 4).sum()
    }

    /// Number of sequences.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Positions allocated per sequence.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions filled per sequence.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties the cache without freeing it.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Shortens every sequence to `len` positions; a longer `len` is ignored.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Keys and values of layer `index`.
    pub fn layer(&self, index: usize) -> &LayerCache {
        &self.layers[index]
    }

    /// Fills the first `len` positions of every layer with uniform values in `[-1, 1]` drawn
    /// from `seed`, and sets the length to `len`.
    ///
    /// Decode benchmarks use this to start from a cache of any length without running a
    /// prefill first. A decode step costs the same whatever the cached values are, but its
    /// logits mean nothing, so use a real prefill when the output matters.
    ///
    /// # Errors
    /// When `len` exceeds the capacity.
    pub fn fill_random(&mut self, len: usize, seed: u64) -> Result<()> {
        if len > self.capacity {
            return Err(Error::Invalid(format!(
                "cannot fill {len} positions of a KV cache with capacity {}; allocate a larger cache",
                self.capacity
            )));
        }
        for (index, layer) in self.layers.iter_mut().enumerate() {
            let kv_dim = layer.kv_dim;
            let layer_seed = seed.wrapping_add(index as u64 * 2);
            for b in 0..self.batch {
                let range = b * self.capacity * kv_dim..(b * self.capacity + len) * kv_dim;
                fill_uniform(&mut layer.k[range.clone()], 1.0, layer_seed ^ ((b as u64) << 40));
                fill_uniform(&mut layer.v[range], 1.0, (layer_seed + 1) ^ ((b as u64) << 40));
            }
        }
        self.len = len;
        Ok(())
    }

    /// Sets the filled length after a forward pass appended `added` positions.
    pub(crate) fn advance(&mut self, added: usize) {
        debug_assert!(self.len + added <= self.capacity);
        self.len += added;
    }
}
