//! The `loss:` section: which preference loss (`type`) and its parameters, as written, and the
//! loss it resolves to: one [`PreferenceLoss`] variant carrying its own parameters, plus TRL's
//! `rpo_alpha` ([`Loss`]).
//!
//! ```yaml
//! loss: {type: sigmoid, beta: 0.1, label_smoothing: 0}
//! loss: {type: simpo, beta: 2, gamma: 0.5}
//! ```
//! A recipe is read flat ([`LossSection`], every parameter any type takes, as TRL's config is):
//! that keeps serde-saphyr's line numbers in errors (an internally tagged enum buffers its map
//! and loses them), and lets `--set loss.type=...` switch the type of a recipe that spells out
//! another type's defaults. [`LossSection::resolve`] then refuses a parameter the type does not
//! take (it used to be ignored), unless it holds its default: a resolved recipe, saved in every
//! run folder, prints all of them.
//!
//! Owns: these values, their defaults and checks. Does not: compute a loss (see `loss`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSection {
    #[serde(rename = "type", default)]
    pub kind: LossType,
    /// sigmoid, ipo, hinge, simpo.
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
    pub const ALL: [LossType; 5] = [
        LossType::Sigmoid,
        LossType::Ipo,
        LossType::Hinge,
        LossType::Simpo,
        LossType::Orpo,
    ];

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

    /// The `loss.*` parameters this type takes (besides `rpo_alpha`, which any type takes).
    pub fn params(self) -> &'static [&'static str] {
        match self {
            LossType::Sigmoid => &["beta", "label_smoothing"],
            LossType::Ipo | LossType::Hinge => &["beta"],
            LossType::Simpo => &["beta", "gamma"],
            LossType::Orpo => &["lambda"],
        }
    }
}

/// A preference loss with its parameters, tagged by `type` as a recipe writes it. The losses'
/// equations, as `loss` computes them (`πc, πr` the policy's summed completion log-probs, `rc, rr`
/// the reference's, `|c|, |r|` token counts):
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PreferenceLoss {
    /// DPO (Rafailov et al. 2023, eq. 7), with label smoothing ε for conservative DPO / robust DPO
    /// (Mitchell 2023; TRL `loss_type="sigmoid"`):
    /// `h = β[(πc − rc) − (πr − rr)]`, `L = −(1−ε)·log σ(h) − ε·log σ(−h)`.
    Sigmoid { beta: f64, label_smoothing: f64 },
    /// IPO (Azar et al. 2023, eq. 17) on length-averaged log-probs as TRL does:
    /// `h = (πc − rc)/|c| − (πr − rr)/|r|`, `L = (h − 1/(2β))²`.
    Ipo { beta: f64 },
    /// SLiC-style hinge (Zhao et al. 2023; TRL `loss_type="hinge"`):
    /// `L = max(0, 1 − β[(πc − rc) − (πr − rr)])`.
    Hinge { beta: f64 },
    /// SimPO (Meng et al. 2024, eq. 6), reference-free and length-normalised:
    /// `L = −log σ(β·πc/|c| − β·πr/|r| − γ)`.
    Simpo { beta: f64, gamma: f64 },
    /// ORPO (Hong et al. 2024, eq. 6-7), reference-free: with `a = π/|y|` the mean token log-prob,
    /// `odds = a − log(1 − e^a)`, `L = NLL(c) − λ·log σ(odds_c − odds_r)`; NLL is the chosen
    /// tokens' mean negative log-prob over the batch (TRL's cross-entropy on chosen).
    Orpo { lambda: f64 },
}

impl PreferenceLoss {
    pub fn kind(&self) -> LossType {
        match self {
            PreferenceLoss::Sigmoid { .. } => LossType::Sigmoid,
            PreferenceLoss::Ipo { .. } => LossType::Ipo,
            PreferenceLoss::Hinge { .. } => LossType::Hinge,
            PreferenceLoss::Simpo { .. } => LossType::Simpo,
            PreferenceLoss::Orpo { .. } => LossType::Orpo,
        }
    }

    /// Whether the loss needs π_ref (SimPO and ORPO are reference-free).
    pub fn uses_reference(&self) -> bool {
        self.kind().uses_reference()
    }
}

/// The loss a run trains with: the preference loss and TRL's RPO term, which any type can add.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loss {
    pub kind: PreferenceLoss,
    /// Weight of an NLL term on the chosen completion (`loss.rpo_alpha`).
    pub rpo_alpha: Option<f64>,
}

impl LossSection {
    /// The loss this section names, or `Err((key, what is wrong))`: a parameter out of range, or
    /// one the type does not take set away from its default.
    pub fn resolve(&self) -> Result<Loss, (String, String)> {
        let bad = |k: &str, m: String| Err((format!("loss.{k}"), m));
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return bad("beta", format!("must be positive, got {}", self.beta));
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return bad(
                "label_smoothing",
                format!("must be in [0, 0.5), got {}", self.label_smoothing),
            );
        }
        if self.rpo_alpha.is_some_and(|a| !(a.is_finite() && a >= 0.0)) {
            return bad("rpo_alpha", "must be >= 0".into());
        }
        let kind = match self.kind {
            LossType::Sigmoid => PreferenceLoss::Sigmoid {
                beta: self.beta,
                label_smoothing: self.label_smoothing,
            },
            LossType::Ipo => PreferenceLoss::Ipo { beta: self.beta },
            LossType::Hinge => PreferenceLoss::Hinge { beta: self.beta },
            LossType::Simpo => PreferenceLoss::Simpo {
                beta: self.beta,
                gamma: self.gamma,
            },
            LossType::Orpo => PreferenceLoss::Orpo {
                lambda: self.lambda,
            },
        };
        // A parameter of another type: kept at its default it is what a resolved recipe prints.
        let d = LossSection::default();
        for (name, value, default) in [
            ("beta", self.beta, d.beta),
            ("label_smoothing", self.label_smoothing, d.label_smoothing),
            ("gamma", self.gamma, d.gamma),
            ("lambda", self.lambda, d.lambda),
        ] {
            if !self.kind.params().contains(&name) && value != default {
                let users: Vec<&str> = LossType::ALL
                    .iter()
                    .filter(|t| t.params().contains(&name))
                    .map(|t| t.name())
                    .collect();
                return bad(
                    name,
                    format!(
                        "is {value} but loss.type {} does not use it ({name} is for {}); drop it or choose the loss.type it is for",
                        self.kind.name(),
                        users.join(", ")
                    ),
                );
            }
        }
        Ok(Loss {
            kind,
            rpo_alpha: self.rpo_alpha,
        })
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
