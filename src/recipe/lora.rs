//! The `lora:` section: the adapters' rank, alpha, dropout and target modules (PEFT's names),
//! or the adapter to start from; and [`Target`], the linear layers LoRA can adapt.
//!
//! Owns: these values and their defaults. Does not: make or train adapters (see `model::lora`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    #[serde(default = "d_rank", alias = "lora_r")]
    pub rank: usize,
    #[serde(default = "d_alpha", alias = "lora_alpha")]
    pub alpha: f64,
    #[serde(default, alias = "lora_dropout")]
    pub dropout: f64,
    #[serde(default = "d_targets", alias = "lora_target_modules")]
    pub target_modules: Vec<Target>,
    /// Scale alpha / sqrt(rank) instead of alpha / rank.
    #[serde(default)]
    pub use_rslora: bool,
    /// Start from this PEFT adapter folder; the reference is then base + this adapter, frozen.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
}

impl Default for LoraSection {
    fn default() -> Self {
        Self {
            rank: d_rank(),
            alpha: d_alpha(),
            dropout: 0.0,
            target_modules: d_targets(),
            use_rslora: false,
            init_from: None,
        }
    }
}

/// The linear layers LoRA can target, in Hugging Face names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::QProj,
        Target::KProj,
        Target::VProj,
        Target::OProj,
        Target::GateProj,
        Target::UpProj,
        Target::DownProj,
    ];

    /// The Hugging Face / PEFT module name (`q_proj`, ...).
    pub fn hf_name(self) -> &'static str {
        match self {
            Target::QProj => "q_proj",
            Target::KProj => "k_proj",
            Target::VProj => "v_proj",
            Target::OProj => "o_proj",
            Target::GateProj => "gate_proj",
            Target::UpProj => "up_proj",
            Target::DownProj => "down_proj",
        }
    }

    /// The Hugging Face parent module (`self_attn` or `mlp`).
    pub fn hf_parent(self) -> &'static str {
        match self {
            Target::QProj | Target::KProj | Target::VProj | Target::OProj => "self_attn",
            Target::GateProj | Target::UpProj | Target::DownProj => "mlp",
        }
    }

    pub fn from_hf_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.hf_name() == s)
    }
}

fn d_rank() -> usize {
    8
}
fn d_alpha() -> f64 {
    16.0
}
fn d_targets() -> Vec<Target> {
    Target::ALL.to_vec()
}
