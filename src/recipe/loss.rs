//! The `loss:` section: which preference loss (`type`) and its parameters.
//!
//! Owns: these values and their defaults. Does not: compute a loss (see `loss`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSection {
    #[serde(rename = "type", default)]
    pub kind: LossType,
    #[serde(default = "d_beta")]
    pub beta: f64,
    /// sigmoid: conservative DPO / robust label smoothing epsilon.
    #[serde(default)]
    pub label_smoothing: f64,
    /// simpo: target reward margin.
    #[serde(default = "d_gamma")]
    pub gamma: f64,
    /// orpo: weight of the odds-ratio term.
    #[serde(default = "d_lambda")]
    pub lambda: f64,
    /// Weight of an NLL term on the chosen completion added to any loss (TRL's RPO).
    #[serde(default)]
    pub rpo_alpha: Option<f64>,
}

impl Default for LossSection {
    fn default() -> Self {
        Self {
            kind: LossType::default(),
            beta: d_beta(),
            label_smoothing: 0.0,
            gamma: d_gamma(),
            lambda: d_lambda(),
            rpo_alpha: None,
        }
    }
}

/// The loss names a recipe uses (`loss.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    #[default]
    Sigmoid,
    Ipo,
    Hinge,
    Simpo,
    Orpo,
}

impl LossType {
    pub fn name(self) -> &'static str {
        match self {
            LossType::Sigmoid => "sigmoid",
            LossType::Ipo => "ipo",
            LossType::Hinge => "hinge",
            LossType::Simpo => "simpo",
            LossType::Orpo => "orpo",
        }
    }

    /// Whether the loss needs π_ref (SimPO and ORPO are reference-free).
    pub fn uses_reference(self) -> bool {
        matches!(self, LossType::Sigmoid | LossType::Ipo | LossType::Hinge)
    }
}

fn d_beta() -> f64 {
    0.1
}
fn d_gamma() -> f64 {
    0.5
}
fn d_lambda() -> f64 {
    0.1
}
