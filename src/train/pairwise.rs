//! A micro-batch run pair by pair: each pair's policy forward (with its gradient graph) and
//! reference values, then the loss over the whole micro-batch, then each pair's backward, the
//! gradients summed in pair order. With the CPU kernels the pairs run one per core, every graph
//! alive until its backward. With the Candle backend (a GPU's memory is the limit) only one
//! pair's graph is alive at a time: the forward keeps each pair's values only, and the backward
//! runs each pair's forward again (same dropout stream, so the same values) right before its
//! backward; a micro-batch of one pair keeps its graph, as there is nothing to save.
//!
//! Owns: splitting the forward and the backward by pair. Does not: compute losses (the caller
//! passes the loss as a function of the micro-batch's log-prob sums) or update weights.
//!
//! The loss sees the policy's sums as leaves: its backward, over a handful of scalars, gives
//! `w = dL/d(sum)` for every sequence, and each pair's backward is then that of `Σ w · sum` over
//! its own two sums, which has the same gradient as the loss by the chain rule. So any loss (even
//! one that mixes pairs) is split exactly, and each pair's graph is walked on the core that built
//! it. A pair's values do not depend on the others in its micro-batch, nor on the number of cores.

use candle_core::{Result, Tensor, Var};

use super::{reference, RefVals};
use crate::data::batch::TrainPair;
use crate::model::kernels::lanes;
use crate::model::{Adapters, Backend, Model};
use crate::rng::SplitMix64;

/// The forwards of a micro-batch, pair by pair.
pub struct Forward<'a> {
    backend: Backend,
    /// Set when the graphs were dropped after the forward: what the backward reruns.
    rerun: Option<Rerun<'a>>,
    /// The policy's summed completion log-probs, `(1,)` each, in pair order.
    chosen: Vec<Tensor>,
    rejected: Vec<Tensor>,
    /// The reference's `(chosen, rejected)` sums, when the loss uses them.
    pub reference: Option<Vec<(f32, f32)>>,
    /// Tokens of the chosen and rejected sequences (the prompt counted twice, as it would be
    /// without prefix sharing).
    pub tokens: usize,
}

/// A policy forward to run again, pair by pair, in the backward.
struct Rerun<'a> {
    model: &'a Model,
    pairs: Vec<&'a TrainPair>,
    policy: Adapters<'a>,
}

/// The adapters of pair `i`: under training, its own dropout stream.
fn pair_adapters(policy: Adapters, i: usize) -> Adapters {
    match policy {
        Adapters::Train(lora, seed) => Adapters::Train(lora, pair_seed(seed, i)),
        other => other,
    }
}

/// Pair `i`'s `(1,)` chosen and rejected sums.
fn pair_sums(model: &Model, pair: &TrainPair, adapters: Adapters) -> Result<(Tensor, Tensor)> {
    let seqs = reference::pair_sequences(&[pair]);
    let sums = model.pair_logps(&seqs, adapters)?.sums; // (2,): chosen, rejected
    Ok((sums.narrow(0, 0, 1)?, sums.narrow(0, 1, 1)?))
}

/// The dropout stream of pair `i` of the micro-batch drawn from `seed`.
fn pair_seed(seed: u64, i: usize) -> u64 {
    SplitMix64::keyed(&[seed, 0x9a1, i as u64]).next_u64()
}

/// Run the policy (`policy`; under [`Adapters::Train`] with a graph) and the reference (`refs`)
/// over every pair, a pair per core on the CPU.
pub fn forward<'a>(
    model: &'a Model,
    pairs: &[&'a TrainPair],
    policy: Adapters<'a>,
    refs: &RefVals,
) -> Result<Forward<'a>> {
    if let RefVals::Given(v) = refs {
        if v.len() != pairs.len() {
            candle_core::bail!("{} reference values for {} pairs", v.len(), pairs.len())
        }
    }
    // The reference first, over every pair, so that the policy's graphs (the peak) are built
    // with no reference pass beside them: the reference adds time, not memory.
    let reference = match refs {
        RefVals::Compute { model, frozen } => {
            Some(lanes::map(model.backend(), pairs.to_vec(), |p| {
                reference::compute(model, *frozen, &[p]).map(|v| v[0])
            })?)
        }
        RefVals::Given(v) => Some(v.clone()),
        RefVals::None => None,
    };
    let rerun = (model.backend() == Backend::Candle
        && matches!(policy, Adapters::Train(..))
        && pairs.len() > 1)
        .then(|| Rerun {
            model,
            pairs: pairs.to_vec(),
            policy,
        });
    let per_pair = lanes::map(model.backend(), (0..pairs.len()).collect(), |i| {
        let (c, r) = pair_sums(model, pairs[i], pair_adapters(policy, i))?;
        // Dropping the graph here leaves one pair's graph alive at a time (see `Rerun`).
        let (c, r) = match rerun {
            Some(_) => (c.detach(), r.detach()),
            None => (c, r),
        };
        let tokens = pairs[i].chosen.ids.len() + pairs[i].rejected.ids.len();
        Ok::<_, candle_core::Error>((c, r, tokens))
    })?;
    let mut f = Forward {
        backend: model.backend(),
        rerun,
        chosen: Vec::with_capacity(pairs.len()),
        rejected: Vec::with_capacity(pairs.len()),
        reference,
        tokens: 0,
    };
    for (c, r, tokens) in per_pair {
        f.chosen.push(c);
        f.rejected.push(r);
        f.tokens += tokens;
    }
    Ok(f)
}

impl Forward<'_> {
    /// The policy's `(b,)` chosen and rejected sums (differentiable when the forward was).
    pub fn sums(&self) -> Result<(Tensor, Tensor)> {
        Ok((
            Tensor::cat(&self.chosen, 0)?,
            Tensor::cat(&self.rejected, 0)?,
        ))
    }

    /// `loss(chosen, rejected)` over the policy's `(b,)` sums, and its gradient w.r.t. `vars`
    /// (`None` where a variable got none), a pair per core on the CPU. `loss` returns the
    /// scalar to differentiate and anything else the caller wants back.
    pub fn backward<T>(
        &self,
        vars: &[&Var],
        loss: impl FnOnce(&Tensor, &Tensor) -> Result<(Tensor, T)>,
    ) -> Result<(T, Vec<Option<Tensor>>)> {
        let (c, r) = self.sums()?;
        let (c, r) = (
            Var::from_tensor(&c.detach())?,
            Var::from_tensor(&r.detach())?,
        );
        let (l, out) = loss(c.as_tensor(), r.as_tensor())?;
        let g = l.backward()?;
        let weights = |v: &Var| -> Result<Vec<f32>> {
            match g.get(v.as_tensor()) {
                Some(w) => w.to_dtype(candle_core::DType::F32)?.to_vec1(),
                None => Ok(vec![0.0; self.chosen.len()]),
            }
        };
        let (wc, wr) = (weights(&c)?, weights(&r)?);
        let per_pair = lanes::map(self.backend, (0..self.chosen.len()).collect(), |i| {
            let (c, r) = match &self.rerun {
                Some(x) => pair_sums(x.model, x.pairs[i], pair_adapters(x.policy, i))?,
                None => (self.chosen[i].clone(), self.rejected[i].clone()),
            };
            let s = ((c * wc[i] as f64)? + (r * wr[i] as f64)?)?;
            let g = s.sum_all()?.backward()?;
            Ok::<_, candle_core::Error>(
                vars.iter()
                    .map(|v| g.get(v.as_tensor()).cloned())
                    .collect::<Vec<_>>(),
            )
        })?;
        let mut total: Vec<Option<Tensor>> = vec![None; vars.len()];
        for grads in per_pair {
            super::optim::accumulate(&mut total, grads)?;
        }
        Ok((out, total))
    }
}
