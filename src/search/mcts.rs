//! Monte Carlo Tree Search over a space's decisions, with leaves scored in batches by the
//! surrogate.
//!
//! One simulation selects a path from the root (PUCT or UCB), creates one new node, completes
//! it to a full candidate with a rollout and backs up the reward of that candidate. Virtual
//! loss on the nodes of pending paths makes the next selections in the same batch diverge, so
//! a batch gathers `batch` distinct new leaves. All their rollouts are then scored in a single
//! [`Surrogate::score`](super::Surrogate::score) call. Decisions with many choices use progressive widening: a node
//! with `N` visits may have at most `⌈c · N^α⌉` children, taken in prior order. Priors come
//! from the previous round: the mean reward of scored candidates that made each choice at
//! each position. The tree is rebuilt every round because the refitted surrogate changes
//! every value.

use super::config::{Rollout, SearchConfig, Selection};
use super::model::Prediction;
use crate::space::SearchSpace;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::{HashMap, HashSet};

const NO_PARENT: u32 = u32::MAX;

/// Tree settings taken from [`SearchConfig`].
#[derive(Debug, Clone)]
pub struct TreeSettings {
    pub selection: Selection,
    pub exploration: f64,
    pub batch: usize,
    pub rollout: Rollout,
    pub widening_c: f64,
    pub widening_alpha: f64,
    pub widening_min_choices: usize,
}

impl TreeSettings {
    /// Takes the tree settings from `cfg`.
    pub fn from_config(cfg: &SearchConfig) -> Self {
        TreeSettings {
            selection: cfg.selection,
            exploration: cfg.exploration,
            batch: cfg.batch,
            rollout: cfg.rollout,
            widening_c: cfg.widening_c,
            widening_alpha: cfg.widening_alpha,
            widening_min_choices: cfg.widening_min_choices,
        }
    }
}

#[derive(Debug, Clone)]
struct Node {
    parent: u32,
    /// The choice that leads from the parent to this node.
    choice: u32,
    visits: u32,
    virtual_loss: u32,
    value_sum: f64,
    prior: f32,
    /// Whether `untried` has been filled from the space.
    initialized: bool,
    terminal: bool,
    /// No unexplored candidate is left below this node.
    exhausted: bool,
    children: Vec<u32>,
    /// Choices without a child yet, highest prior last (so `pop` takes it).
    untried: Vec<(u32, f32)>,
    /// Number of valid choices at this node.
    n_choices: u32,
}

impl Node {
    fn new(parent: u32, choice: u32, prior: f32) -> Self {
        Node {
            parent,
            choice,
            visits: 0,
            virtual_loss: 0,
            value_sum: 0.0,
            prior,
            initialized: false,
            terminal: false,
            exhausted: false,
            children: Vec::new(),
            untried: Vec::new(),
            n_choices: 0,
        }
    }
}

/// Prior weight per (position, choice), from the mean reward of scored candidates.
#[derive(Debug, Clone, Default)]
pub struct PriorTable {
    /// `weights[position]` maps a choice to its unnormalised prior.
    weights: Vec<HashMap<u32, f32>>,
}

impl PriorTable {
    /// Builds priors from `(choices, reward)` pairs: `exp(z)` of each choice's standardised
    /// mean reward at each position, with `z` clipped to [−3, 3]. Unseen choices get weight 1.
    pub fn from_rewards<'a>(samples: impl Iterator<Item = (&'a [u32], f64)>) -> Self {
        let mut sums: Vec<HashMap<u32, (f64, u32)>> = Vec::new();
        let mut all = Vec::new();
        for (choices, reward) in samples {
            if !reward.is_finite() {
                continue;
            }
            all.push(reward);
            if sums.len() < choices.len() {
                sums.resize_with(choices.len(), HashMap::new);
            }
            for (position, &choice) in choices.iter().enumerate() {
                let entry = sums[position].entry(choice).or_insert((0.0, 0));
                entry.0 += reward;
                entry.1 += 1;
            }
        }
        if all.len() < 2 {
            return PriorTable::default();
        }
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let std = (all.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / all.len() as f64).sqrt();
        let std = if std > 0.0 { std } else { 1.0 };
        let weights = sums
            .into_iter()
            .map(|per_choice| {
                per_choice
                    .into_iter()
                    .map(|(choice, (sum, count))| {
                        let z = ((sum / count as f64 - mean) / std).clamp(-3.0, 3.0);
                        (choice, z.exp() as f32)
                    })
                    .collect()
            })
            .collect();
        PriorTable { weights }
    }

    fn weight(&self, position: usize, choice: u32) -> f32 {
        self.weights.get(position).and_then(|m| m.get(&choice)).copied().unwrap_or(1.0)
    }
}

/// A scored rollout: the complete candidate, its reward and the surrogate's prediction.
#[derive(Debug, Clone)]
pub struct ScoredCandidate {
    pub choices: Vec<u32>,
    pub reward: f64,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// A scored rollout as [`Tree::run`] reports it, borrowing the batch's buffers.
#[derive(Debug, Clone, Copy)]
pub struct ScoredView<'a> {
    pub choices: &'a [u32],
    pub reward: f64,
    pub mean: &'a [f64],
    pub std: &'a [f64],
}

impl ScoredView<'_> {
    /// Copies the view into an owned [`ScoredCandidate`].
    pub fn to_owned(&self) -> ScoredCandidate {
        ScoredCandidate {
            choices: self.choices.to_vec(),
            reward: self.reward,
            mean: self.mean.to_vec(),
            std: self.std.to_vec(),
        }
    }
}

/// Work done by one [`Tree::run`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TreeStats {
    pub simulations: u64,
    pub leaf_batches: u64,
    /// Largest number of leaves gathered in one batch.
    pub max_batch: usize,
    /// Batches whose leaves were not all distinct nodes (should stay 0).
    pub repeated_leaves: u64,
}

/// One search tree over a space.
pub struct Tree<'a> {
    space: &'a dyn SearchSpace,
    settings: TreeSettings,
    priors: &'a PriorTable,
    nodes: Vec<Node>,
    value_min: f64,
    value_max: f64,
    pub stats: TreeStats,
}

/// Turns feature rows into rewards: the only place the surrogate is called.
pub trait LeafScorer {
    /// Features of a complete candidate, appended to `out`.
    fn features(&self, choices: &[u32], out: &mut Vec<f32>);
    /// Scores the rows of `features` in one surrogate call. `rows` contains the choices of each.
    fn score(&mut self, features: &[f32], rows: &[Vec<u32>]) -> crate::Result<Prediction>;
    /// Reward of row `row` of `prediction`.
    fn reward(&self, prediction: &Prediction, row: usize) -> f64;
}

struct PendingLeaf {
    node: u32,
    first_row: usize,
    rows: usize,
}

impl<'a> Tree<'a> {
    /// Creates a tree with only the root.
    pub fn new(space: &'a dyn SearchSpace, settings: TreeSettings, priors: &'a PriorTable) -> Self {
        Tree {
            space,
            settings,
            priors,
            nodes: vec![Node::new(NO_PARENT, 0, 1.0)],
            value_min: f64::INFINITY,
            value_max: f64::NEG_INFINITY,
            stats: TreeStats::default(),
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Returns whether the tree contains only the root.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// Returns whether every candidate below the root has been reached.
    pub fn is_exhausted(&self) -> bool {
        self.nodes[0].exhausted
    }

    /// Runs up to `simulations` simulations in batches, calling `on_scored` for every scored
    /// candidate. Rollouts avoid `avoid` (evaluated candidates) when a few retries allow.
    pub fn run(
        &mut self,
        simulations: usize,
        scorer: &mut dyn LeafScorer,
        avoid: &HashSet<Vec<u32>>,
        rng: &mut StdRng,
        on_scored: &mut dyn FnMut(&ScoredView<'_>),
    ) -> crate::Result<()> {
        let mut done = 0usize;
        let mut prefix: Vec<u32> = Vec::new();
        let mut leaves: Vec<PendingLeaf> = Vec::with_capacity(self.settings.batch);
        let mut completions: Vec<Vec<u32>> = Vec::new();
        let mut features: Vec<f32> = Vec::new();
        let samples = match self.settings.rollout {
            Rollout::Random => 1,
            Rollout::Guided { samples } => samples.max(1),
        };
        while done < simulations && !self.is_exhausted() {
            leaves.clear();
            completions.clear();
            features.clear();
            let requested = self.settings.batch.min(simulations - done);
            while leaves.len() < requested {
                let Some(leaf) = self.select(&mut prefix, rng) else {
                    break;
                };
                let first_row = completions.len();
                let count = if self.nodes[leaf as usize].terminal { 1 } else { samples };
                for _ in 0..count {
                    let completion = self.rollout(&prefix, avoid, rng);
                    scorer.features(&completion, &mut features);
                    completions.push(completion);
                }
                leaves.push(PendingLeaf { node: leaf, first_row, rows: count });
            }
            if leaves.is_empty() {
                break;
            }
            let prediction = scorer.score(&features, &completions)?;
            self.stats.leaf_batches += 1;
            self.stats.max_batch = self.stats.max_batch.max(leaves.len());
            let distinct: HashSet<u32> = leaves.iter().map(|l| l.node).collect();
            if distinct.len() != leaves.len() {
                self.stats.repeated_leaves += 1;
            }
            for leaf in &leaves {
                let mut best = f64::NEG_INFINITY;
                for (row, choices) in completions.iter().enumerate().skip(leaf.first_row).take(leaf.rows) {
                    let reward = scorer.reward(&prediction, row);
                    best = best.max(reward);
                    let t = prediction.n_targets;
                    on_scored(&ScoredView {
                        choices,
                        reward,
                        mean: &prediction.mean[row * t..(row + 1) * t],
                        std: &prediction.std[row * t..(row + 1) * t],
                    });
                }
                self.backup(leaf.node, best);
            }
            done += leaves.len();
            self.stats.simulations += leaves.len() as u64;
        }
        Ok(())
    }

    /// Fills a node's untried choices (in prior order) the first time it is reached.
    fn initialize(&mut self, id: u32, prefix: &[u32], rng: &mut StdRng) {
        let valid = self.space.valid_choices(prefix);
        let position = prefix.len();
        let mut untried: Vec<(u32, f32)> = valid.iter().map(|&c| (c, self.priors.weight(position, c))).collect();
        let total: f32 = untried.iter().map(|(_, w)| w).sum();
        for entry in untried.iter_mut() {
            entry.1 /= total.max(f32::MIN_POSITIVE);
        }
        // Shuffle first so equal priors are taken in random order, then sort ascending so the
        // highest prior is popped first.
        untried.shuffle(rng);
        untried.sort_by(|a, b| a.1.total_cmp(&b.1));
        let node = &mut self.nodes[id as usize];
        node.initialized = true;
        node.n_choices = valid.len() as u32;
        node.terminal = valid.is_empty();
        node.untried = untried;
    }

    /// Normalised mean value of a node under virtual loss (pending visits count as the
    /// minimum value).
    fn q_value(&self, node: &Node, fallback: f64) -> f64 {
        let n = node.visits as f64 + node.virtual_loss as f64;
        if n == 0.0 {
            return fallback;
        }
        let span = self.value_max - self.value_min;
        let mean = if node.visits == 0 || span <= 0.0 || !span.is_finite() {
            0.5
        } else {
            (node.value_sum / node.visits as f64 - self.value_min) / span
        };
        mean * node.visits as f64 / n
    }

    fn children_allowed(&self, node: &Node) -> usize {
        let n_choices = node.n_choices as usize;
        if self.settings.widening_c <= 0.0 || n_choices <= self.settings.widening_min_choices {
            return n_choices;
        }
        let n = (node.visits + node.virtual_loss).max(1) as f64;
        ((self.settings.widening_c * n.powf(self.settings.widening_alpha)).ceil() as usize).clamp(1, n_choices)
    }

    /// Selects a path and creates one new node at its end, applying virtual loss along the
    /// path. Returns the new node and leaves its choice sequence in `prefix`; `None` when the
    /// whole tree is exhausted.
    fn select(&mut self, prefix: &mut Vec<u32>, rng: &mut StdRng) -> Option<u32> {
        'restart: loop {
            if self.nodes[0].exhausted {
                return None;
            }
            prefix.clear();
            let mut id = 0u32;
            self.nodes[0].virtual_loss += 1;
            loop {
                if !self.nodes[id as usize].initialized {
                    self.initialize(id, prefix, rng);
                }
                let node = &self.nodes[id as usize];
                if node.terminal {
                    // Terminal nodes are exhausted on creation, so this is only reached for a
                    // space whose root is already complete.
                    self.mark_exhausted(id);
                    self.undo_virtual_loss(id);
                    continue 'restart;
                }
                let parent_n = (node.visits + node.virtual_loss) as f64;
                let parent_q = self.q_value(node, 0.5);
                let can_expand = !node.untried.is_empty() && node.children.len() < self.children_allowed(node);
                let c = self.settings.exploration;

                let mut best: Option<(f64, u32)> = None;
                for &child in &node.children {
                    let ch = &self.nodes[child as usize];
                    if ch.exhausted {
                        continue;
                    }
                    let n = (ch.visits + ch.virtual_loss) as f64;
                    let q = self.q_value(ch, parent_q);
                    let score = match self.settings.selection {
                        Selection::Puct => q + c * ch.prior as f64 * parent_n.sqrt() / (1.0 + n),
                        Selection::Ucb if n == 0.0 => f64::INFINITY,
                        Selection::Ucb => q + c * (parent_n.max(1.0).ln() / n).sqrt(),
                    };
                    if best.is_none_or(|(s, _)| score > s) {
                        best = Some((score, child));
                    }
                }
                let expand = if can_expand {
                    let prior = node.untried.last().map(|&(_, p)| p as f64).unwrap_or(0.0);
                    let score = match self.settings.selection {
                        Selection::Puct => parent_q + c * prior * parent_n.sqrt(),
                        Selection::Ucb => f64::INFINITY,
                    };
                    best.is_none_or(|(s, _)| score >= s)
                } else {
                    best.is_none() && !node.untried.is_empty()
                };

                if expand {
                    let (choice, prior) = self.nodes[id as usize].untried.pop().expect("untried checked non-empty");
                    let child = self.nodes.len() as u32;
                    self.nodes.push(Node::new(id, choice, prior));
                    self.nodes[id as usize].children.push(child);
                    prefix.push(choice);
                    self.nodes[child as usize].virtual_loss += 1;
                    self.initialize(child, prefix, rng);
                    if self.nodes[child as usize].terminal {
                        self.mark_exhausted(child);
                    }
                    return Some(child);
                }
                match best {
                    Some((_, child)) => {
                        let choice = self.nodes[child as usize].choice;
                        prefix.push(choice);
                        self.nodes[child as usize].virtual_loss += 1;
                        id = child;
                    }
                    None => {
                        self.mark_exhausted(id);
                        self.undo_virtual_loss(id);
                        continue 'restart;
                    }
                }
            }
        }
    }

    fn undo_virtual_loss(&mut self, mut id: u32) {
        while id != NO_PARENT {
            let node = &mut self.nodes[id as usize];
            node.virtual_loss = node.virtual_loss.saturating_sub(1);
            id = node.parent;
        }
    }

    fn mark_exhausted(&mut self, mut id: u32) {
        loop {
            self.nodes[id as usize].exhausted = true;
            let parent = self.nodes[id as usize].parent;
            if parent == NO_PARENT {
                return;
            }
            let p = &self.nodes[parent as usize];
            let all_done = p.untried.is_empty() && p.children.iter().all(|&c| self.nodes[c as usize].exhausted);
            if !all_done {
                return;
            }
            id = parent;
        }
    }

    /// Completes `prefix` with uniformly random valid choices, retrying up to three times to
    /// avoid a candidate in `avoid`.
    fn rollout(&self, prefix: &[u32], avoid: &HashSet<Vec<u32>>, rng: &mut StdRng) -> Vec<u32> {
        let mut completion = Vec::with_capacity(prefix.len() + 8);
        for attempt in 0..4 {
            completion.clear();
            completion.extend_from_slice(prefix);
            loop {
                let valid = self.space.valid_choices(&completion);
                if valid.is_empty() {
                    break;
                }
                completion.push(valid[rng.random_range(0..valid.len())]);
            }
            if attempt == 3 || !avoid.contains(&completion) {
                break;
            }
        }
        completion
    }

    fn backup(&mut self, leaf: u32, value: f64) {
        self.value_min = self.value_min.min(value);
        self.value_max = self.value_max.max(value);
        let mut id = leaf;
        while id != NO_PARENT {
            let node = &mut self.nodes[id as usize];
            node.visits += 1;
            node.value_sum += value;
            node.virtual_loss = node.virtual_loss.saturating_sub(1);
            id = node.parent;
        }
    }
}
