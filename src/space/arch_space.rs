//! [`Space`]: an architecture search space built from a [`SpaceSpec`], with exact counting,
//! exactly uniform sampling, and the walk a tree search takes through its decisions.
//!
//! Decision order: the global decisions in [`Field`] order (`n_layers`, `d_model`, `n_heads`,
//! `n_kv_heads`, `head_dim`, `d_ff`, `mlp_ratio`, `ffn`, `norm`, `pos`, `bias`,
//! `tie_embeddings`, `vocab_size`, `max_seq_len`, skipping those not decided), then for each
//! layer `i = 0..n_layers-1` that layer's decisions in the same order. The sequence length
//! therefore depends on the `n_layers` choice.
//!
//! Counting uses the structure of the space. Whether one layer is valid depends only on the
//! global choices and that layer's own choices, so the valid architectures for a global
//! assignment `g` number `T(g)^n_layers`, where `T(g)` counts the valid per-layer tuples. The
//! global assignments are enumerated (there are few) into a prefix tree whose nodes hold
//! the number of valid completions, which gives `count()`, `valid_choices()` and a sampler
//! that draws each architecture with probability exactly `1 / count()`.

use super::spec::{Constraint, ConstraintTarget, DecisionSpec, Field, SpaceSpec, Value};
use super::{Candidate, Decision, SearchSpace, SpaceError};
use crate::arch::{features, Architecture, Ffn, LayerOverride, Norm, Pos};
use num_bigint::BigUint;
use num_traits::{ToPrimitive, Zero};
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;

/// Unused choices of one decision named in the warning about them; the rest are counted.
const UNUSED_SHOWN: usize = 8;

/// Most global assignments a space may have; they are enumerated one by one.
const MAX_GLOBAL_ASSIGNMENTS: u128 = 2_000_000;
/// Most combinations of one layer's choices.
const MAX_LAYER_TUPLES: u128 = 200_000;
/// Most single-layer checks across all distinct global contexts.
const MAX_LAYER_CHECKS: u128 = 20_000_000;

/// A prefix-tree node over global choices. `count` is the number of valid architectures
/// that complete the prefix this node stands for.
#[derive(Debug, Clone)]
struct Node {
    children: Vec<(u32, u32)>,
    count: BigUint,
    /// Index into `Space::leaves` when the node completes the global decisions.
    leaf: Option<u32>,
}

/// A complete, valid global assignment.
#[derive(Debug, Clone)]
struct Leaf {
    n_layers: usize,
    layers: Arc<LayerTable>,
}

/// The valid choice tuples of one layer under one global context.
#[derive(Debug)]
struct LayerTable {
    tuples: Vec<Vec<u32>>,
    /// Prefix tree of `tuples`: node 0 is the root, each node lists `(choice, child)`.
    tree: Vec<Vec<(u32, u32)>>,
    /// Parameters outside the layers (embeddings, head, final norm).
    global_params: u64,
    min_layer_params: u64,
    max_layer_params: u64,
}

impl LayerTable {
    fn contains(&self, tuple: &[u32]) -> bool {
        self.children(tuple).is_some()
    }

    fn children(&self, partial: &[u32]) -> Option<&[(u32, u32)]> {
        let mut node = 0usize;
        for &choice in partial {
            node = self.tree[node].iter().find(|(c, _)| *c == choice)?.1 as usize;
        }
        Some(&self.tree[node])
    }
}

/// An architecture search space: the built-in `llama`, `hwgpt-s` and `lts-gpt2`, or a TOML file.
#[derive(Debug, Clone)]
pub struct Space {
    spec: SpaceSpec,
    /// Origin of the space: `built-in` or a file path.
    source: String,
    /// Indices into `spec.decisions` of the global and the per-layer decisions.
    global: Vec<usize>,
    per_layer: Vec<usize>,
    nodes: Vec<Node>,
    root: u32,
    leaves: Vec<Leaf>,
    min_layers: usize,
    max_layers: usize,
    params_min: u64,
    params_max: u64,
}

impl Space {
    /// Builds a space from a parsed spec, enumerating its global assignments. Fails when
    /// the space is too large to enumerate or no architecture satisfies every rule.
    pub fn from_spec(spec: SpaceSpec, source: impl Into<String>) -> Result<Space, SpaceError> {
        let global: Vec<usize> = (0..spec.decisions.len()).filter(|&i| !spec.decisions[i].per_layer).collect();
        let per_layer: Vec<usize> = (0..spec.decisions.len()).filter(|&i| spec.decisions[i].per_layer).collect();
        let mut space = Space {
            spec,
            source: source.into(),
            global,
            per_layer,
            nodes: Vec::new(),
            root: 0,
            leaves: Vec::new(),
            min_layers: usize::MAX,
            max_layers: 0,
            params_min: u64::MAX,
            params_max: 0,
        };
        space.check_sizes()?;

        let mut builder = Builder { tables: HashMap::new(), first_rejection: None, checks: 0 };
        let mut prefix = Vec::with_capacity(space.global.len());
        let root = space.build_node(&mut builder, &mut prefix)?;
        match root {
            Some(root) => space.root = root,
            None => {
                let reason = builder.first_rejection.unwrap_or_else(|| "no reason recorded".into());
                return Err(SpaceError::Invalid(format!(
                    "space `{}` contains no valid architecture (first rejection: {reason}); widen the choices or relax [constraints]",
                    space.spec.name
                )));
            }
        }
        space.warn_dead_choices();
        log::debug!(
            "space `{}`: {} valid global assignments, {} single-layer checks, {} architectures",
            space.spec.name,
            space.leaves.len(),
            builder.checks,
            space.count()
        );
        Ok(space)
    }

    /// Rejects spaces whose enumeration would not finish in reasonable time.
    fn check_sizes(&self) -> Result<(), SpaceError> {
        let product = |indices: &[usize]| -> u128 {
            indices
                .iter()
                .map(|&i| self.spec.decisions[i].choices.len() as u128)
                .fold(1u128, |acc, n| acc.saturating_mul(n))
        };
        let globals = product(&self.global);
        let tuples = product(&self.per_layer);
        let name = &self.spec.name;
        if globals > MAX_GLOBAL_ASSIGNMENTS {
            return Err(SpaceError::Invalid(format!(
                "space `{name}` has {globals} combinations of global choices, more than the supported {MAX_GLOBAL_ASSIGNMENTS}; use fewer choices or make n_heads, n_kv_heads, d_ff or mlp_ratio per_layer"
            )));
        }
        if tuples > MAX_LAYER_TUPLES {
            return Err(SpaceError::Invalid(format!(
                "space `{name}` has {tuples} combinations of per-layer choices, more than the supported {MAX_LAYER_TUPLES}; use fewer per-layer choices"
            )));
        }
        if globals.saturating_mul(tuples) > MAX_LAYER_CHECKS {
            return Err(SpaceError::Invalid(format!(
                "space `{name}` needs {} single-layer checks ({globals} global × {tuples} per-layer combinations), more than the supported {MAX_LAYER_CHECKS}; use fewer choices",
                globals.saturating_mul(tuples)
            )));
        }
        Ok(())
    }

    /// Builds the prefix-tree node for the global choices in `prefix`; `None` when no valid
    /// architecture starts with it.
    fn build_node(&mut self, builder: &mut Builder, prefix: &mut Vec<u32>) -> Result<Option<u32>, SpaceError> {
        if prefix.len() == self.global.len() {
            return Ok(self.build_leaf(builder, prefix));
        }
        let decision = &self.spec.decisions[self.global[prefix.len()]];
        let mut children = Vec::new();
        let mut count = BigUint::zero();
        for choice in 0..decision.choices.len() as u32 {
            prefix.push(choice);
            let child = self.build_node(builder, prefix)?;
            prefix.pop();
            if let Some(child) = child {
                count += &self.nodes[child as usize].count;
                children.push((choice, child));
            }
        }
        if children.is_empty() {
            return Ok(None);
        }
        self.nodes.push(Node { children, count, leaf: None });
        Ok(Some(self.nodes.len() as u32 - 1))
    }

    fn build_leaf(&mut self, builder: &mut Builder, global: &[u32]) -> Option<u32> {
        let n_layers = self.global_value(global, Field::NLayers).and_then(Value::as_int).unwrap_or(1) as usize;

        // One layer's validity does not depend on the depth, so the table is shared by
        // global assignments that differ only in n_layers.
        let key: Vec<u32> = self
            .global
            .iter()
            .zip(global)
            .map(|(&d, &c)| if self.spec.decisions[d].field == Field::NLayers { 0 } else { c })
            .collect();
        let table = match builder.tables.get(&key) {
            Some(table) => table.clone(),
            None => {
                let table = self.layer_table(builder, global);
                builder.tables.insert(key, table.clone());
                table
            }
        };
        let table = table?;

        let count = BigUint::from(table.tuples.len()).pow(n_layers as u32);
        self.min_layers = self.min_layers.min(n_layers);
        self.max_layers = self.max_layers.max(n_layers);
        let depth = n_layers as u64;
        self.params_min = self.params_min.min(table.global_params + depth * table.min_layer_params);
        self.params_max = self.params_max.max(table.global_params + depth * table.max_layer_params);

        self.leaves.push(Leaf { n_layers, layers: table });
        self.nodes.push(Node {
            children: Vec::new(),
            count,
            leaf: Some(self.leaves.len() as u32 - 1),
        });
        Some(self.nodes.len() as u32 - 1)
    }

    /// Checks every per-layer tuple under the global choices `global` on a one-layer model.
    fn layer_table(&self, builder: &mut Builder, global: &[u32]) -> Option<Arc<LayerTable>> {
        let sizes: Vec<u32> = self.per_layer.iter().map(|&d| self.spec.decisions[d].choices.len() as u32).collect();
        let mut tuple = vec![0u32; sizes.len()];
        let mut table = LayerTable {
            tuples: Vec::new(),
            tree: vec![Vec::new()],
            global_params: 0,
            min_layer_params: u64::MAX,
            max_layer_params: 0,
        };
        loop {
            builder.checks += 1;
            match self.checked_arch(global, &[&tuple], 1) {
                Ok(one) => {
                    // Parameters are affine in the layers, so two depths separate the parts.
                    let p1 = one.params();
                    let p2 = self.assemble(global, &[&tuple, &tuple], 2).map(|a| a.params()).unwrap_or(p1);
                    let layer_params = p2 - p1;
                    table.global_params = p1 - layer_params;
                    table.min_layer_params = table.min_layer_params.min(layer_params);
                    table.max_layer_params = table.max_layer_params.max(layer_params);
                    insert_path(&mut table.tree, &tuple);
                    table.tuples.push(tuple.clone());
                }
                Err(reason) => {
                    if builder.first_rejection.is_none() {
                        builder.first_rejection = Some(format!("{}: {reason}", self.describe_choices(global, &tuple)));
                    }
                }
            }
            if !advance(&mut tuple, &sizes) {
                break;
            }
        }
        if table.tuples.is_empty() {
            None
        } else {
            Some(Arc::new(table))
        }
    }

    /// `d_model 256, n_heads 12, layer n_kv_heads 5`: the choices behind a rejection.
    fn describe_choices(&self, global: &[u32], tuple: &[u32]) -> String {
        let mut parts = Vec::new();
        for (&d, &c) in self.global.iter().zip(global) {
            let decision = &self.spec.decisions[d];
            parts.push(format!("{} {}", decision.field, decision.choices[c as usize]));
        }
        for (&d, &c) in self.per_layer.iter().zip(tuple) {
            let decision = &self.spec.decisions[d];
            parts.push(format!("layer {} {}", decision.field, decision.choices[c as usize]));
        }
        if parts.is_empty() {
            "the fixed fields".into()
        } else {
            parts.join(", ")
        }
    }

    /// Logs every choice that no valid architecture uses; such a choice is offered by
    /// `next_decision` labels but never by `valid_choices`.
    fn warn_dead_choices(&self) {
        let mut used: Vec<Vec<bool>> = self.spec.decisions.iter().map(|d| vec![false; d.choices.len()]).collect();
        let mut stack = vec![(self.root, 0usize)];
        while let Some((node, depth)) = stack.pop() {
            let node = &self.nodes[node as usize];
            if let Some(leaf) = node.leaf {
                for tuple in &self.leaves[leaf as usize].layers.tuples {
                    for (&d, &c) in self.per_layer.iter().zip(tuple) {
                        used[d][c as usize] = true;
                    }
                }
                continue;
            }
            for &(choice, child) in &node.children {
                used[self.global[depth]][choice as usize] = true;
                stack.push((child, depth + 1));
            }
        }
        for (decision, flags) in self.spec.decisions.iter().zip(&used) {
            let unused: Vec<String> =
                decision.choices.iter().zip(flags).filter(|(_, used)| !**used).map(|(value, _)| value.to_string()).collect();
            match unused.len() {
                0 => {}
                1 => log::warn!("space `{}`: choice {} = {} never leads to a valid architecture", self.spec.name, decision.field, unused[0]),
                n => {
                    // One line per decision, so a fine range cannot flood the log.
                    let listed = unused.iter().take(UNUSED_SHOWN).cloned().collect::<Vec<_>>().join(", ");
                    let more = if n > UNUSED_SHOWN { format!(" and {} more", n - UNUSED_SHOWN) } else { String::new() };
                    log::warn!(
                        "space `{}`: {n} of the {} choices of {} never lead to a valid architecture: {listed}{more}",
                        self.spec.name,
                        decision.choices.len(),
                        decision.field
                    );
                }
            }
        }
    }

    /// Returns the value of a non-per-layer field: the global choice, else the fixed value.
    fn global_value(&self, global: &[u32], field: Field) -> Option<Value> {
        for (&d, &c) in self.global.iter().zip(global) {
            let decision = &self.spec.decisions[d];
            if decision.field == field {
                return Some(decision.choices[c as usize]);
            }
        }
        self.spec.fixed.get(&field).copied()
    }

    /// Returns the per-layer choice of `field` in `tuple`, if `field` is decided per layer.
    fn layer_value(&self, tuple: &[u32], field: Field) -> Option<Value> {
        self.per_layer
            .iter()
            .zip(tuple)
            .find(|(&d, _)| self.spec.decisions[d].field == field)
            .map(|(&d, &c)| self.spec.decisions[d].choices[c as usize])
    }

    /// Builds the architecture for global choices `global` and one tuple per layer. With no
    /// per-layer decisions, `layers` may hold empty tuples and only `n_layers` counts.
    /// The result is not validated.
    fn assemble(&self, global: &[u32], layers: &[&[u32]], n_layers: u64) -> Result<Architecture, String> {
        let int = |field: Field| self.global_value(global, field).and_then(Value::as_int);
        let d_model = int(Field::DModel).ok_or("d_model has no value")?;
        let first: &[u32] = layers.first().copied().unwrap_or(&[]);
        let layer_int = |tuple: &[u32], field: Field| self.layer_value(tuple, field).and_then(Value::as_int);

        let layer_d_ff = |tuple: &[u32]| -> Result<Option<u64>, String> {
            if let Some(d_ff) = layer_int(tuple, Field::DFf) {
                return Ok(Some(d_ff));
            }
            match self.layer_value(tuple, Field::MlpRatio) {
                Some(Value::Ratio(r)) => ratio_d_ff(r, d_model).map(Some),
                _ => Ok(None),
            }
        };
        let d_ff = match (int(Field::DFf), self.global_value(global, Field::MlpRatio)) {
            (Some(d_ff), _) => d_ff,
            (None, Some(Value::Ratio(r))) => ratio_d_ff(r, d_model)?,
            _ => layer_d_ff(first)?.ok_or("d_ff has no value")?,
        };
        // A per-layer field without a model-wide value takes layer 0's value model-wide,
        // which repeats layer 0's own checks and changes nothing else.
        let n_heads = int(Field::NHeads)
            .or_else(|| layer_int(first, Field::NHeads))
            .ok_or("n_heads has no value")?;

        let per_layer = !self.per_layer.is_empty();
        let overrides = if per_layer {
            let mut out = Vec::with_capacity(layers.len());
            for tuple in layers {
                out.push(LayerOverride {
                    n_heads: layer_int(tuple, Field::NHeads),
                    n_kv_heads: layer_int(tuple, Field::NKvHeads),
                    d_ff: layer_d_ff(tuple)?,
                });
            }
            Some(out)
        } else {
            None
        };

        Ok(Architecture {
            vocab_size: int(Field::VocabSize).unwrap_or(32000),
            max_seq_len: int(Field::MaxSeqLen).unwrap_or(2048),
            d_model,
            n_layers: if per_layer { layers.len() as u64 } else { n_layers },
            n_heads,
            n_kv_heads: int(Field::NKvHeads),
            head_dim: int(Field::HeadDim),
            d_ff,
            ffn: match self.global_value(global, Field::Ffn) {
                Some(Value::Ffn(f)) => f,
                _ => Ffn::Swiglu,
            },
            norm: match self.global_value(global, Field::Norm) {
                Some(Value::Norm(n)) => n,
                _ => Norm::Rmsnorm,
            },
            pos: match self.global_value(global, Field::Pos) {
                Some(Value::Pos(p)) => p,
                _ => Pos::Rope,
            },
            bias: matches!(self.global_value(global, Field::Bias), Some(Value::Bool(true))),
            tie_embeddings: matches!(self.global_value(global, Field::TieEmbeddings), Some(Value::Bool(true))),
            layers: overrides,
        })
    }

    /// Builds and validates an architecture, then checks the space's constraints.
    fn checked_arch(&self, global: &[u32], layers: &[&[u32]], n_layers: u64) -> Result<Architecture, String> {
        let arch = self.assemble(global, layers, n_layers)?;
        arch.validate().map_err(|e| e.to_string())?;
        for shape in arch.layer_shapes() {
            for constraint in &self.spec.constraints {
                let value = match constraint.target {
                    ConstraintTarget::HeadDim => shape.head_dim,
                    ConstraintTarget::NHeads => shape.n_heads,
                    ConstraintTarget::NKvHeads => shape.n_kv_heads,
                    ConstraintTarget::DFf => shape.d_ff,
                    ConstraintTarget::GqaGroupSize => shape.n_heads / shape.n_kv_heads,
                };
                constraint.check(value)?;
            }
        }
        Ok(arch)
    }

    /// Finds the leaf the global choices reach, or `None` when they are not a valid prefix.
    fn leaf_of(&self, global: &[u32]) -> Option<&Leaf> {
        let mut node = &self.nodes[self.root as usize];
        for &choice in global {
            let child = node.children.iter().find(|(c, _)| *c == choice)?.1;
            node = &self.nodes[child as usize];
        }
        node.leaf.map(|l| &self.leaves[l as usize])
    }

    /// Number of decisions of a complete sequence that starts with `global`.
    fn sequence_len(&self, n_layers: usize) -> usize {
        self.global.len() + n_layers * self.per_layer.len()
    }

    /// Builds the architecture of a complete choice sequence. The error names what is wrong
    /// with an invalid sequence.
    pub fn architecture(&self, choices: &[u32]) -> Result<Architecture, SpaceError> {
        let bad = |why: String| SpaceError::Invalid(format!("choice sequence {choices:?} for space `{}`: {why}", self.spec.name));
        if choices.len() < self.global.len() {
            return Err(bad(format!("it is shorter than the {} global decisions", self.global.len())));
        }
        let (global, rest) = choices.split_at(self.global.len());
        let leaf = self.leaf_of(global).ok_or_else(|| bad("the global choices lead to no valid architecture".into()))?;
        if choices.len() != self.sequence_len(leaf.n_layers) {
            return Err(bad(format!(
                "expected {} choices for {} layers, found {}",
                self.sequence_len(leaf.n_layers),
                leaf.n_layers,
                choices.len()
            )));
        }
        let width = self.per_layer.len().max(1);
        let layers: Vec<&[u32]> = if self.per_layer.is_empty() {
            vec![&[]; leaf.n_layers]
        } else {
            rest.chunks(width).collect()
        };
        for (i, tuple) in layers.iter().enumerate() {
            if !leaf.layers.contains(tuple) {
                return Err(bad(format!("the choices of layer {i} are not valid")));
            }
        }
        self.checked_arch(global, &layers, leaf.n_layers as u64).map_err(bad)
    }

    /// Counts the valid architectures whose choice sequence starts with `prefix`; 0 when
    /// `prefix` is not a valid prefix, 1 when it is a complete valid sequence.
    pub fn count_completions(&self, prefix: &[u32]) -> BigUint {
        let split = prefix.len().min(self.global.len());
        let mut node = &self.nodes[self.root as usize];
        for &choice in &prefix[..split] {
            match node.children.iter().find(|(c, _)| *c == choice) {
                Some(&(_, child)) => node = &self.nodes[child as usize],
                None => return BigUint::zero(),
            }
        }
        let Some(leaf) = node.leaf.map(|l| &self.leaves[l as usize]) else {
            return node.count.clone();
        };
        if prefix.len() > self.sequence_len(leaf.n_layers) {
            return BigUint::zero();
        }
        if self.per_layer.is_empty() {
            return BigUint::from(1u32);
        }

        // Full layers must each be valid; the partial layer fixes a prefix of one tuple.
        let width = self.per_layer.len();
        let layer_choices = &prefix[split..];
        let full_layers = layer_choices.len() / width;
        for layer in layer_choices.chunks(width).take(full_layers) {
            if !leaf.layers.contains(layer) {
                return BigUint::zero();
            }
        }
        let partial = &layer_choices[full_layers * width..];
        let remaining_layers = leaf.n_layers - full_layers;
        let tuples = BigUint::from(leaf.layers.tuples.len());
        if partial.is_empty() {
            return tuples.pow(remaining_layers as u32);
        }
        let matching = leaf.layers.tuples.iter().filter(|t| t.starts_with(partial)).count();
        BigUint::from(matching) * tuples.pow(remaining_layers as u32 - 1)
    }

    /// Returns the space's name (`llama`, or the file's `name` or stem).
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Returns the optional one-line description from the space file.
    pub fn description(&self) -> &str {
        &self.spec.description
    }

    /// `built-in` or the path of the file the space was read from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Returns the parsed definition.
    pub fn spec(&self) -> &SpaceSpec {
        &self.spec
    }

    /// Returns the decisions in decision order, global ones first.
    pub fn decisions(&self) -> impl Iterator<Item = &DecisionSpec> {
        self.global.iter().chain(&self.per_layer).map(|&d| &self.spec.decisions[d])
    }

    /// Returns the space's constraints.
    pub fn constraints(&self) -> &[Constraint] {
        &self.spec.constraints
    }

    /// Smallest and largest `n_layers` of a valid architecture.
    pub fn depth_range(&self) -> (usize, usize) {
        (self.min_layers, self.max_layers)
    }

    /// Exact smallest and largest parameter count over the valid architectures.
    pub fn params_range(&self) -> (u64, u64) {
        (self.params_min, self.params_max)
    }

    /// Names of the decision part of [`SearchSpace::features`]: one value per global
    /// decision, one per per-layer decision and layer up to the maximum depth, and a
    /// presence flag per layer when the depth varies.
    fn choice_feature_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .global
            .iter()
            .map(|&d| format!("choice.{}", self.spec.decisions[d].field))
            .collect();
        for layer in 0..self.max_layers {
            for &d in &self.per_layer {
                names.push(format!("choice.layers[{layer}].{}", self.spec.decisions[d].field));
            }
        }
        if self.min_layers != self.max_layers {
            names.extend((0..self.max_layers).map(|layer| format!("layers[{layer}].present")));
        }
        names
    }
}

/// Scratch state while the prefix tree is built.
struct Builder {
    /// Layer tables by global choices with `n_layers` masked out; `None` when no tuple is valid.
    tables: HashMap<Vec<u32>, Option<Arc<LayerTable>>>,
    first_rejection: Option<String>,
    checks: u64,
}

/// `d_ff = ratio × d_model`, which must be a whole number.
fn ratio_d_ff(ratio: f64, d_model: u64) -> Result<u64, String> {
    let d_ff = ratio * d_model as f64;
    let rounded = d_ff.round();
    if (d_ff - rounded).abs() > 1e-6 || rounded < 1.0 {
        return Err(format!(
            "mlp_ratio {ratio} × d_model {d_model} = {d_ff} is not a positive whole d_ff; pick ratios whose product with every d_model is an integer"
        ));
    }
    Ok(rounded as u64)
}

/// Steps a mixed-radix counter; returns false after the last combination.
fn advance(digits: &mut [u32], sizes: &[u32]) -> bool {
    for i in (0..digits.len()).rev() {
        digits[i] += 1;
        if digits[i] < sizes[i] {
            return true;
        }
        digits[i] = 0;
    }
    false
}

fn insert_path(tree: &mut Vec<Vec<(u32, u32)>>, path: &[u32]) {
    let mut node = 0usize;
    for &choice in path {
        node = match tree[node].iter().find(|(c, _)| *c == choice) {
            Some(&(_, child)) => child as usize,
            None => {
                tree.push(Vec::new());
                let child = tree.len() - 1;
                tree[node].push((choice, child as u32));
                child
            }
        };
    }
}

/// Draws an integer uniformly from `0..bound` (`bound > 0`) by rejection sampling on whole
/// random words, so no value is favoured.
fn random_below(rng: &mut dyn rand::RngCore, bound: &BigUint) -> BigUint {
    if let Some(small) = bound.to_u64() {
        return BigUint::from(rng.random_range(0..small));
    }
    let bits = bound.bits();
    let words = bits.div_ceil(32) as usize;
    let top_mask = if bits.is_multiple_of(32) { u32::MAX } else { (1u32 << (bits % 32)) - 1 };
    loop {
        let mut digits: Vec<u32> = (0..words).map(|_| rng.next_u32()).collect();
        digits[words - 1] &= top_mask;
        let candidate = BigUint::from_slice(&digits);
        if &candidate < bound {
            return candidate;
        }
    }
}

/// Normalised position of choice `index` among `n`: `index / (n - 1)`, and 0 for a single choice.
fn normalised(index: u32, n: usize) -> f32 {
    if n <= 1 {
        0.0
    } else {
        index as f32 / (n - 1) as f32
    }
}

impl SearchSpace for Space {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn definition_digest(&self) -> String {
        let spec = &self.spec;
        super::fnv1a_64(format!("{:?} {:?} {:?}", spec.fixed, spec.decisions, spec.constraints).as_bytes())
    }

    fn next_decision(&self, prefix: &[u32]) -> Option<Decision> {
        let to_decision = |d: usize, name: String| {
            let decision = &self.spec.decisions[d];
            Decision { name, labels: decision.choices.iter().map(|v| v.to_string()).collect() }
        };
        if prefix.len() < self.global.len() {
            let d = self.global[prefix.len()];
            return Some(to_decision(d, self.spec.decisions[d].field.name().to_string()));
        }
        let leaf = self.leaf_of(&prefix[..self.global.len()])?;
        if self.per_layer.is_empty() || prefix.len() >= self.sequence_len(leaf.n_layers) {
            return None;
        }
        let step = prefix.len() - self.global.len();
        let (layer, position) = (step / self.per_layer.len(), step % self.per_layer.len());
        let d = self.per_layer[position];
        Some(to_decision(d, format!("layers[{layer}].{}", self.spec.decisions[d].field)))
    }

    fn valid_choices(&self, prefix: &[u32]) -> Vec<u32> {
        if prefix.len() < self.global.len() {
            let mut node = &self.nodes[self.root as usize];
            for &choice in prefix {
                match node.children.iter().find(|(c, _)| *c == choice) {
                    Some(&(_, child)) => node = &self.nodes[child as usize],
                    None => return Vec::new(),
                }
            }
            return node.children.iter().map(|(c, _)| *c).collect();
        }
        let Some(leaf) = self.leaf_of(&prefix[..self.global.len()]) else {
            return Vec::new();
        };
        if self.per_layer.is_empty() || prefix.len() >= self.sequence_len(leaf.n_layers) {
            return Vec::new();
        }
        let width = self.per_layer.len();
        let layer_choices = &prefix[self.global.len()..];
        let full_layers = layer_choices.len() / width;
        if !layer_choices.chunks(width).take(full_layers).all(|layer| leaf.layers.contains(layer)) {
            return Vec::new();
        }
        let partial = &layer_choices[full_layers * width..];
        leaf.layers
            .children(partial)
            .map(|children| children.iter().map(|(c, _)| *c).collect())
            .unwrap_or_default()
    }

    fn count(&self) -> BigUint {
        self.nodes[self.root as usize].count.clone()
    }

    fn sample(&self, rng: &mut dyn rand::RngCore) -> Vec<u32> {
        // Descending with a uniform rank in 0..count picks each global prefix with
        // probability proportional to its completions. The layers are then uniform and
        // independent, so every architecture has probability exactly 1 / count.
        let mut rank = random_below(rng, &self.nodes[self.root as usize].count);
        let mut node = &self.nodes[self.root as usize];
        let mut out = Vec::with_capacity(self.sequence_len(self.max_layers));
        while node.leaf.is_none() {
            for &(choice, child) in &node.children {
                let child_node = &self.nodes[child as usize];
                if rank < child_node.count {
                    out.push(choice);
                    node = child_node;
                    break;
                }
                rank -= &child_node.count;
            }
        }
        let leaf = &self.leaves[node.leaf.expect("loop ends at a leaf") as usize];
        if !self.per_layer.is_empty() {
            for _ in 0..leaf.n_layers {
                let tuples = &leaf.layers.tuples;
                out.extend_from_slice(&tuples[rng.random_range(0..tuples.len())]);
            }
        }
        out
    }

    /// # Panics
    /// When `choices` is not a complete valid sequence of this space, which is a caller bug;
    /// use [`Space::architecture`] to get an error instead.
    fn candidate(&self, choices: &[u32]) -> Candidate {
        match self.architecture(choices) {
            Ok(arch) => Candidate::Arch(arch),
            Err(e) => panic!("{e}"),
        }
    }

    fn choices_of(&self, candidate: &Candidate) -> Option<Vec<u32>> {
        let Candidate::Arch(arch) = candidate else {
            return None;
        };
        let find = |d: usize, value: Value| -> Option<u32> {
            let decision = &self.spec.decisions[d];
            decision.choices.iter().position(|v| match (v, value) {
                // A ratio matches when it gives the same d_ff.
                (Value::Ratio(r), Value::Int(d_ff)) => ratio_d_ff(*r, arch.d_model).ok() == Some(d_ff),
                _ => *v == value,
            })
            .map(|i| i as u32)
        };
        let mut choices = Vec::new();
        for &d in &self.global {
            let value = match self.spec.decisions[d].field {
                Field::NLayers => Value::Int(arch.n_layers),
                Field::DModel => Value::Int(arch.d_model),
                Field::NHeads => Value::Int(arch.n_heads),
                Field::NKvHeads => Value::Int(arch.n_kv_heads.unwrap_or(arch.n_heads)),
                Field::HeadDim => Value::Int(arch.head_dim()),
                Field::DFf | Field::MlpRatio => Value::Int(arch.d_ff),
                Field::Ffn => Value::Ffn(arch.ffn),
                Field::Norm => Value::Norm(arch.norm),
                Field::Pos => Value::Pos(arch.pos),
                Field::Bias => Value::Bool(arch.bias),
                Field::TieEmbeddings => Value::Bool(arch.tie_embeddings),
                Field::VocabSize => Value::Int(arch.vocab_size),
                Field::MaxSeqLen => Value::Int(arch.max_seq_len),
            };
            choices.push(find(d, value)?);
        }
        if !self.per_layer.is_empty() {
            for shape in arch.layer_shapes() {
                for &d in &self.per_layer {
                    let value = match self.spec.decisions[d].field {
                        Field::NHeads => shape.n_heads,
                        Field::NKvHeads => shape.n_kv_heads,
                        _ => shape.d_ff,
                    };
                    choices.push(find(d, Value::Int(value))?);
                }
            }
        }

        // The sequence must be valid and rebuild the same model: same fixed fields and the
        // same resolved layers (the JSON form may differ, for example `layers` omitted).
        let rebuilt = self.architecture(&choices).ok()?;
        let same = rebuilt.vocab_size == arch.vocab_size
            && rebuilt.max_seq_len == arch.max_seq_len
            && rebuilt.d_model == arch.d_model
            && rebuilt.n_layers == arch.n_layers
            && rebuilt.ffn == arch.ffn
            && rebuilt.norm == arch.norm
            && rebuilt.pos == arch.pos
            && rebuilt.bias == arch.bias
            && rebuilt.tie_embeddings == arch.tie_embeddings
            && rebuilt.layer_shapes() == arch.layer_shapes();
        same.then_some(choices)
    }

    fn feature_names(&self) -> Vec<String> {
        let mut names = self.choice_feature_names();
        names.extend(features::FEATURE_NAMES.iter().map(|n| n.to_string()));
        names
    }

    /// Computes the decision values normalised to `[0, 1]` (see `normalised`), per-layer
    /// values padded with 0 beyond the architecture's depth, layer presence flags when the
    /// depth varies, then `arch::features::encode` of the architecture.
    ///
    /// # Panics
    /// When `choices` is not a complete valid sequence of this space, which is a caller bug.
    fn features(&self, choices: &[u32]) -> Vec<f32> {
        let arch = match self.architecture(choices) {
            Ok(arch) => arch,
            Err(e) => panic!("{e}"),
        };
        let n_layers = arch.n_layers as usize;
        let mut out = Vec::with_capacity(self.choice_feature_names().len() + features::FEATURE_NAMES.len());
        for (&d, &c) in self.global.iter().zip(choices) {
            out.push(normalised(c, self.spec.decisions[d].choices.len()));
        }
        let layer_choices = &choices[self.global.len()..];
        for layer in 0..self.max_layers {
            for (position, &d) in self.per_layer.iter().enumerate() {
                let value = if layer < n_layers {
                    normalised(layer_choices[layer * self.per_layer.len() + position], self.spec.decisions[d].choices.len())
                } else {
                    0.0
                };
                out.push(value);
            }
        }
        if self.min_layers != self.max_layers {
            out.extend((0..self.max_layers).map(|layer| if layer < n_layers { 1.0 } else { 0.0 }));
        }
        out.extend(features::encode(&arch).into_iter().map(|v| v as f32));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn random_below_large_bound() {
        let bound = (BigUint::from(1u32) << 70) + BigUint::from(5u32);
        let half = BigUint::from(1u32) << 69;
        let mut rng = StdRng::seed_from_u64(1);
        let draws: Vec<BigUint> = (0..1000).map(|_| random_below(&mut rng, &bound)).collect();
        assert!(draws.iter().all(|d| d < &bound));
        // About half the draws lie in the upper half of the range.
        let upper = draws.iter().filter(|d| *d >= &half).count();
        assert!((400..600).contains(&upper), "{upper} of 1000 draws in the upper half");
    }

    #[test]
    fn ratio_d_ff_whole_numbers() {
        assert_eq!(ratio_d_ff(2.5, 128), Ok(320));
        assert!(ratio_d_ff(1.25, 66).is_err());
    }

    #[test]
    fn count_completions_sums_children() {
        let space = Space::builtin("hwgpt-s").unwrap();
        let total: BigUint = (0..3u32).map(|c| space.count_completions(&[c])).sum();
        assert_eq!(total, space.count());

        // Depth 10, width 192, no bias, then layer 0 with 4 heads: 3 ratios × 9^9 other layers.
        let partial = space.count_completions(&[0, 0, 0, 0]);
        assert_eq!(partial, BigUint::from(3u32) * BigUint::from(9u32).pow(9));
        assert_eq!(space.count_completions(&[7]), BigUint::zero());
    }
}
