//! LoRA adapters: the only trainable weights. PEFT's conventions, so export is a rename:
//! `A (r, in)`, `B (out, r)`, `delta(x) = scale · (x · Aᵀ) · Bᵀ`, `scale = alpha / r`
//! (rsLoRA: `alpha / sqrt(r)`), `B = 0` at init so the policy starts equal to the reference.
//!
//! Owns: the adapter tensors and their forward branch. Does not: decide which is the reference
//! (the caller passes [`Adapters::Off`]), train, or save (see `train`, `export`).

use std::collections::BTreeMap;

use candle_core::{Result, Tensor, Var};

/// The linear layers LoRA can target, in Hugging Face names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

    pub fn from_hf_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.hf_name() == s)
    }
}

/// One adapted linear: `A (r, in)`, `B (out, r)`, f32 master weights.
#[derive(Debug, Clone)]
pub struct LoraLinear {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
}

impl LoraLinear {
    /// `x (.., in) -> (.., out)`: the adapter's contribution only.
    pub fn delta(&self, x: &Tensor) -> Result<Tensor> {
        let xa = x.broadcast_matmul(&self.a.as_tensor().t()?)?;
        let xab = xa.broadcast_matmul(&self.b.as_tensor().t()?)?;
        xab * self.scale
    }
}

/// All adapters of a model, keyed by `(layer, target)`.
#[derive(Debug, Clone, Default)]
pub struct Lora {
    pub layers: BTreeMap<(usize, Target), LoraLinear>,
}

impl Lora {
    pub fn get(&self, layer: usize, target: Target) -> Option<&LoraLinear> {
        self.layers.get(&(layer, target))
    }

    /// Every trainable tensor, A then B per adapted linear, in a stable order.
    pub fn vars(&self) -> Vec<&Var> {
        self.layers.values().flat_map(|l| [&l.a, &l.b]).collect()
    }
}

/// Which model to run: the policy (base + adapters) or the reference (the same base, adapters off).
/// Passed by value into every forward so the choice is visible at the call site.
#[derive(Debug, Clone, Copy)]
pub enum Adapters<'a> {
    Off,
    On(&'a Lora),
}
