//! Preference losses over per-sequence log-probs, and the metrics TRL users know.
//!
//! Owns: computing each [`PreferenceLoss`] (the enum, each variant documenting its equation and
//! source, is the recipe's `loss:` value: `recipe::loss`), the optional NLL term (TRL's RPO),
//! and the reward/accuracy/margin metrics. Does not: run the model; it takes
//! summed completion log-probs `(b_sz,)` for policy (and reference, where the loss uses one) and
//! the completion token counts.
//!
//! Notation: `πc, πr` policy log-probs of the chosen / rejected completion (summed over its tokens),
//! `rc, rr` the reference's, `|c|, |r|` token counts, `σ` the logistic function, `β` beta.

use candle_core::{Result, Tensor};

pub use crate::recipe::loss::{Loss, LossType, PreferenceLoss};

/// What the loss sees for one micro-batch; every tensor is `(b_sz,)` f32.
pub struct LossInputs<'a> {
    pub policy_chosen: &'a Tensor,
    pub policy_rejected: &'a Tensor,
    /// `None` for reference-free losses.
    pub ref_chosen: Option<&'a Tensor>,
    pub ref_rejected: Option<&'a Tensor>,
    pub chosen_len: &'a Tensor,
    pub rejected_len: &'a Tensor,
}

/// The scalar loss (differentiable) and per-pair rewards for the metrics.
pub struct LossOutput {
    pub loss: Tensor,
    pub rewards_chosen: Vec<f32>,
    pub rewards_rejected: Vec<f32>,
}

impl PreferenceLoss {
    /// Mean loss over the pairs, plus `rpo_alpha · NLL(chosen)` when given.
    pub fn compute(&self, x: &LossInputs, rpo_alpha: Option<f64>) -> Result<LossOutput> {
        let (pc, pr) = (x.policy_chosen, x.policy_rejected);
        let refs = || -> Result<(&Tensor, &Tensor)> {
            match (x.ref_chosen, x.ref_rejected) {
                (Some(c), Some(r)) => Ok((c, r)),
                _ => candle_core::bail!("this loss needs reference log-probs"),
            }
        };
        let (per_pair, rc, rr) = match *self {
            PreferenceLoss::Sigmoid {
                beta,
                label_smoothing: eps,
            } => {
                let (rc, rr) = refs()?;
                let (dc, dr) = ((pc - rc)?, (pr - rr)?);
                let h = ((&dc - &dr)? * beta)?;
                let l = ((log_sigmoid(&h)? * -(1.0 - eps))? - (log_sigmoid(&h.neg()?)? * eps)?)?;
                (l, (dc * beta)?, (dr * beta)?)
            }
            PreferenceLoss::Ipo { beta } => {
                let (rc, rr) = refs()?;
                let dc = (pc - rc)?.div(x.chosen_len)?;
                let dr = (pr - rr)?.div(x.rejected_len)?;
                let h = (&dc - &dr)?;
                let l = (h - 1.0 / (2.0 * beta))?.sqr()?;
                (l, (dc * beta)?, (dr * beta)?)
            }
            PreferenceLoss::Hinge { beta } => {
                let (rc, rr) = refs()?;
                let (dc, dr) = ((pc - rc)?, (pr - rr)?);
                let l = (((&dc - &dr)? * -beta)? + 1.0)?.relu()?;
                (l, (dc * beta)?, (dr * beta)?)
            }
            PreferenceLoss::Simpo { beta, gamma } => {
                let ac = (pc.div(x.chosen_len)? * beta)?;
                let ar = (pr.div(x.rejected_len)? * beta)?;
                let l = log_sigmoid(&((&ac - &ar)? - gamma)?)?.neg()?;
                (l, ac, ar)
            }
            PreferenceLoss::Orpo { lambda } => {
                let ac = pc.div(x.chosen_len)?;
                let ar = pr.div(x.rejected_len)?;
                let odds =
                    |a: &Tensor| -> Result<Tensor> { a - a.exp()?.neg()?.affine(1.0, 1.0)?.log()? };
                let l = (log_sigmoid(&(odds(&ac)? - odds(&ar)?)?)? * -lambda)?;
                let nll = nll(pc, x.chosen_len)?;
                let l = l.broadcast_add(&nll)?;
                (l, ac, ar)
            }
        };
        let mut loss = per_pair.mean_all()?;
        if let Some(alpha) = rpo_alpha {
            loss = (loss + (nll(pc, x.chosen_len)? * alpha)?)?;
        }
        Ok(LossOutput {
            loss,
            rewards_chosen: rc.detach().to_vec1()?,
            rewards_rejected: rr.detach().to_vec1()?,
        })
    }
}

/// Mean negative log-prob per chosen token over the batch: `−Σπc / Σ|c|` (scalar).
fn nll(pc: &Tensor, len: &Tensor) -> Result<Tensor> {
    pc.sum_all()?.neg()?.div(&len.sum_all()?)
}

/// `log σ(x) = min(x, 0) − log(1 + e^{−|x|})`, stable for large |x|, built from ops with a
/// backward. `min(x, 0)` is written `(x − |x|)/2` so that its kink at 0 and the tail's cancel
/// for any subgradient candle picks for `|x|` at 0 (with `relu` the gradient at 0 came out 1.5,
/// not 0.5: the step-0 DPO gradient).
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let ax = x.abs()?;
    let min0 = ((x - &ax)? * 0.5)?;
    let tail = (ax.neg()?.exp()? + 1.0)?.log()?;
    min0 - tail
}

/// Metrics of one batch of pairs, with TRL's names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairMetrics {
    pub loss: f64,
    pub rewards_chosen: f64,
    pub rewards_rejected: f64,
    pub accuracies: f64,
    pub margins: f64,
    pub logps_chosen: f64,
    pub logps_rejected: f64,
    pub pairs: usize,
}

impl PairMetrics {
    /// Accumulate one micro-batch (`loss` is its mean, weighted by its pairs).
    pub fn add(
        &mut self,
        loss: f64,
        out: &LossOutput,
        logps_chosen: &[f32],
        logps_rejected: &[f32],
    ) {
        let n = out.rewards_chosen.len();
        let tot = (self.pairs + n) as f64;
        let w_old = self.pairs as f64 / tot;
        let mean = |v: &[f32]| v.iter().map(|x| *x as f64).sum::<f64>() / n.max(1) as f64;
        let acc: Vec<f32> = out
            .rewards_chosen
            .iter()
            .zip(&out.rewards_rejected)
            .map(|(c, r)| if c > r { 1.0 } else { 0.0 })
            .collect();
        let margins: Vec<f32> = out
            .rewards_chosen
            .iter()
            .zip(&out.rewards_rejected)
            .map(|(c, r)| c - r)
            .collect();
        let w_new = n as f64 / tot;
        let mix = |old: f64, new: f64| old * w_old + new * w_new;
        self.loss = mix(self.loss, loss);
        self.rewards_chosen = mix(self.rewards_chosen, mean(&out.rewards_chosen));
        self.rewards_rejected = mix(self.rewards_rejected, mean(&out.rewards_rejected));
        self.accuracies = mix(self.accuracies, mean(&acc));
        self.margins = mix(self.margins, mean(&margins));
        self.logps_chosen = mix(self.logps_chosen, mean(logps_chosen));
        self.logps_rejected = mix(self.logps_rejected, mean(logps_rejected));
        self.pairs += n;
    }

    /// As a JSON object with TRL's keys.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        for (k, v) in [
            ("loss", self.loss),
            ("rewards/chosen", self.rewards_chosen),
            ("rewards/rejected", self.rewards_rejected),
            ("rewards/accuracies", self.accuracies),
            ("rewards/margins", self.margins),
            ("logps/chosen", self.logps_chosen),
            ("logps/rejected", self.logps_rejected),
        ] {
            m.insert(k.into(), serde_json::json!(v));
        }
        m
    }
}

#[cfg(test)]
mod tests;
