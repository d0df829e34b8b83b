//! One micro-batch through the loss: the policy forward (a pair per core, see `pairwise`), the
//! reference's values, the loss and its metrics, and (for training) the gradient.
//!
//! Owns: [`RefVals`] (where one micro-batch's reference log-probs come from), [`step`] (no
//! gradient: evaluation), [`step_backward`] (training; `dpo-lora bench` calls it too). Does not:
//! choose the micro-batch, accumulate or apply gradients (see the loop in `train`).

use anyhow::Result;
use candle_core::Tensor;

use super::pairwise;
use crate::data::batch::TrainPair;
use crate::loss::{LossInputs, LossOutput, PreferenceLoss};
use crate::model::{Adapters, Lora, Model};

/// Where a micro-batch's reference log-probs come from. Not the run's reference choice (see
/// `reference::Reference`): this is one micro-batch's values, which `dpo-lora bench` also builds
/// from a second copy of the base.
pub enum RefVals<'a> {
    /// Run π_ref now, with no gradient graph: `model` with the `frozen` adapter on, or bare. The
    /// training loop passes the policy's own base; `dpo-lora bench` also passes a second copy.
    Compute {
        model: &'a Model,
        frozen: Option<&'a Lora>,
    },
    /// Precomputed `(chosen, rejected)` sums, one per pair.
    Given(Vec<(f32, f32)>),
    /// The loss needs none (SimPO, ORPO).
    None,
}

/// The result of one micro-batch.
pub struct StepOut {
    /// The loss (a function of the policy's sums) and the rewards.
    pub out: LossOutput,
    pub loss: f64,
    pub logps_chosen: Vec<f32>,
    pub logps_rejected: Vec<f32>,
    /// Tokens in the forward (prompt + completion of every sequence, no padding).
    pub tokens: usize,
}

/// Loss and metrics of one micro-batch, no gradient: the policy forward (`policy`), the
/// reference's values (`refs`), the loss. Evaluation calls this; training calls
/// [`step_backward`].
pub fn step(
    model: &Model,
    loss: &PreferenceLoss,
    rpo_alpha: Option<f64>,
    pairs: &[&TrainPair],
    policy: Adapters,
    refs: RefVals,
) -> Result<StepOut> {
    let f = pairwise::forward(model, pairs, policy, &refs)?;
    let (pc, pr) = f.sums()?;
    step_out(loss, rpo_alpha, pairs, &f, &pc, &pr)
}

/// [`step`] under [`Adapters::Train`]`(lora, seed)`, and the gradient of `scale · loss` w.r.t.
/// `vars`, pair by pair across the CPU's cores (see `pairwise`).
#[allow(clippy::too_many_arguments)]
pub fn step_backward(
    model: &Model,
    loss: &PreferenceLoss,
    rpo_alpha: Option<f64>,
    pairs: &[&TrainPair],
    (lora, seed): (&Lora, u64),
    refs: RefVals,
    vars: &[&candle_core::Var],
    scale: f64,
) -> Result<(StepOut, Vec<Option<Tensor>>)> {
    let f = pairwise::forward(model, pairs, Adapters::Train(lora, seed), &refs)?;
    Ok(f.backward(vars, |pc, pr| {
        let out = step_out(loss, rpo_alpha, pairs, &f, pc, pr)
            .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))?;
        Ok(((&out.out.loss * scale)?, out))
    })?)
}
/// The loss of a micro-batch from the policy's `(b,)` sums `pc`, `pr` and `f`'s reference.
fn step_out(
    loss: &PreferenceLoss,
    rpo_alpha: Option<f64>,
    pairs: &[&TrainPair],
    f: &pairwise::Forward,
    pc: &Tensor,
    pr: &Tensor,
) -> Result<StepOut> {
    let dev = pc.device();
    let b = pairs.len();
    let (rc, rr) = match &f.reference {
        Some(v) => (
            Some(Tensor::from_vec(
                v.iter().map(|x| x.0).collect::<Vec<_>>(),
                b,
                dev,
            )?),
            Some(Tensor::from_vec(
                v.iter().map(|x| x.1).collect::<Vec<_>>(),
                b,
                dev,
            )?),
        ),
        None => (None, None),
    };
    let len = |f: fn(&TrainPair) -> usize| {
        Tensor::from_vec(
            pairs.iter().map(|p| f(p) as f32).collect::<Vec<_>>(),
            b,
            dev,
        )
    };
    let (lc, lr) = (
        len(|p| p.chosen.completion().len())?,
        len(|p| p.rejected.completion().len())?,
    );
    let inputs = LossInputs {
        policy_chosen: pc,
        policy_rejected: pr,
        ref_chosen: rc.as_ref(),
        ref_rejected: rr.as_ref(),
        chosen_len: &lc,
        rejected_len: &lr,
    };
    let out = loss.compute(&inputs, rpo_alpha)?;
    let loss = out.loss.to_scalar::<f32>()? as f64;
    Ok(StepOut {
        loss,
        logps_chosen: pc.detach().to_vec1()?,
        logps_rejected: pr.detach().to_vec1()?,
        out,
        tokens: f.tokens,
    })
}
