//! The `train:` section: learning rate and schedule, batch and accumulation, how long, the
//! seed, clipping, when to evaluate and checkpoint, and gradient checkpointing.
//!
//! Owns: these values and their defaults. Does not: train (see `train`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    #[serde(alias = "learning_rate")]
    pub lr: f64,
    /// Pairs per micro-batch (each pair is 2 sequences in the forward).
    #[serde(default = "d_batch", alias = "per_device_train_batch_size")]
    pub batch_size: usize,
    #[serde(default = "d_one", alias = "gradient_accumulation_steps")]
    pub grad_accum: usize,
    #[serde(default)]
    pub max_steps: Option<usize>,
    #[serde(default, alias = "num_train_epochs")]
    pub epochs: Option<f64>,
    #[serde(default = "d_seed")]
    pub seed: u64,
    #[serde(default)]
    pub warmup_steps: usize,
    /// Warm-up as a share of the run's optimizer steps, rounded up (instead of `warmup_steps`).
    #[serde(default)]
    pub warmup_ratio: Option<f64>,
    #[serde(default, alias = "lr_scheduler_type")]
    pub schedule: Schedule,
    #[serde(default)]
    pub weight_decay: f64,
    /// Global gradient-norm clipping (none when absent).
    #[serde(default = "d_clip")]
    pub max_grad_norm: Option<f64>,
    /// Evaluate every N optimizer steps (and always at the end).
    #[serde(default, alias = "eval_steps")]
    pub eval_every: Option<usize>,
    /// Write a checkpoint every N optimizer steps.
    #[serde(default, alias = "save_steps")]
    pub save_every: Option<usize>,
    #[serde(default = "d_keep", alias = "save_total_limit")]
    pub keep_checkpoints: usize,
    /// Recompute each block in the backward instead of keeping its activations: a step holds
    /// one tensor per layer instead of all of them, for about 1.5x the step time.
    #[serde(default = "d_true")]
    pub gradient_checkpointing: bool,
    /// What a checkpointed block keeps between its two runs besides its input: `none`, `mlp`
    /// (+ gate/up outputs), `projections` (+ o/down: the recompute multiplies only q/k/v), or
    /// `auto`: the most that fits in a quarter of the memory available for the largest
    /// micro-batch (`mlp` where the device's free memory is not known).
    #[serde(default)]
    pub checkpoint_keep: CheckpointKeep,
}

/// `train.checkpoint_keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKeep {
    #[default]
    Auto,
    None,
    Mlp,
    Projections,
}

/// Learning-rate schedule after the linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    #[default]
    Cosine,
    Linear,
    /// Constant after the warm-up (transformers' `constant_with_warmup`).
    #[serde(alias = "constant_with_warmup")]
    Constant,
}

fn d_batch() -> usize {
    2
}
fn d_one() -> usize {
    1
}
fn d_seed() -> u64 {
    42
}
fn d_clip() -> Option<f64> {
    Some(1.0)
}
fn d_true() -> bool {
    true
}
fn d_keep() -> usize {
    2
}
