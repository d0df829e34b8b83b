//! One transformer block (pre-norm attention + gated MLP, with gemma3's extra norms) as a
//! function of its input and of the LoRA branch it is given.
//!
//! Owns: the block's frozen weights and its forward. Does not: decide which adapters run (the
//! caller passes the LoRA branch as a function, so the same code serves the reference, the
//! policy and the recompute of a checkpointed block; see `recompute`).

use candle_core::{Result, Tensor};

use super::backend::Backend;
use super::config::Config;
use super::lora::{Branch, Target};
use super::ops::attention::attention;
use super::ops::linear::QLinear;
use super::ops::norm::rms_norm;
use super::ops::rope::rope;

/// The frozen weights of one layer. Cheap to clone: every tensor is shared.
#[derive(Clone)]
pub(crate) struct Block {
    pub attn_norm: Tensor,
    pub q: QLinear,
    pub k: QLinear,
    pub v: QLinear,
    pub o: QLinear,
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    pub post_attn_norm: Option<Tensor>,
    pub ffn_norm: Tensor,
    pub gate: QLinear,
    pub up: QLinear,
    pub down: QLinear,
    pub post_ffn_norm: Option<Tensor>,
}

/// What one forward shares across blocks: the backend, the batch geometry, the rotary tables and the mask
/// this block uses (sliding or global). Cheap to clone.
#[derive(Clone)]
pub(crate) struct BlockInputs {
    /// How every op runs (fixed at load: see `backend`).
    pub backend: Backend,
    /// What a checkpointed block keeps between its runs.
    pub keep: Keep,
    pub b_sz: usize,
    pub seq_len: usize,
    pub cos: Tensor,
    pub sin: Tensor,
    pub mask: Tensor,
}

/// What the frozen linears of a forward do. A checkpointed block runs twice (see `recompute`);
/// the outputs of the linears its [`Keep`] level names are kept from the first run and reused by
/// the second.
pub(crate) enum Linears<'a> {
    /// Multiply every one.
    Compute,
    /// Multiply every one, and append the outputs of the kept ones to the list.
    Record(&'a std::cell::RefCell<Vec<Tensor>>),
    /// Take the outputs of the kept ones, in order, from an earlier `Record` of the same input:
    /// same value, and the same input gradient `g · W` in the backward.
    Replay(&'a [Tensor]),
}

/// What a checkpointed block keeps between its two runs besides its input
/// (`train.checkpoint_keep`): more kept, less recomputed, more memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keep {
    /// The block input only: the recompute multiplies every linear again.
    None,
    /// Also the MLP's gate and up outputs (two `(tokens, ffn)` tensors).
    Mlp,
    /// Also o and down (two `(tokens, hidden)` more): the recompute multiplies only q, k and v,
    /// and o, gate, up and down are 84% of a block's matmul work on SmolLM2.
    #[default]
    Projections,
}

impl Keep {
    /// The frozen linears whose outputs are kept, in the order the forward calls them.
    pub fn targets(self) -> &'static [Target] {
        match self {
            Keep::None => &[],
            Keep::Mlp => &[Target::GateProj, Target::UpProj],
            Keep::Projections => &[
                Target::OProj,
                Target::GateProj,
                Target::UpProj,
                Target::DownProj,
            ],
        }
    }

    /// f32 values kept per token per layer: `hidden` or `ffn` wide for each kept output.
    pub fn floats_per_token(self, hidden: usize, ffn: usize) -> usize {
        self.targets()
            .iter()
            .map(|t| match t {
                Target::GateProj | Target::UpProj => ffn,
                _ => hidden,
            })
            .sum()
    }
}

/// The LoRA branches of a forward: `delta(target)` is the adapter beside the frozen linear
/// `target` of this block, or `None` where no adapter sits.
pub(crate) type Delta<'a> = &'a dyn Fn(Target) -> Result<Option<Branch>>;

impl Block {
    pub fn linear(&self, target: Target) -> &QLinear {
        match target {
            Target::QProj => &self.q,
            Target::KProj => &self.k,
            Target::VProj => &self.v,
            Target::OProj => &self.o,
            Target::GateProj => &self.gate,
            Target::UpProj => &self.up,
            Target::DownProj => &self.down,
        }
    }

    /// Frozen linear + LoRA branch, one op where it can be (see `adapted`). The branch runs in
    /// f32 (see `lora::branch`) and is cast back to the activation type.
    fn lin(
        &self,
        (be, keep): (Backend, Keep),
        target: Target,
        x: &Tensor,
        delta: Delta,
        linears: &Linears,
    ) -> Result<Tensor> {
        let lin = self.linear(target);
        let kept = keep.targets().iter().position(|&t| t == target);
        let branch = delta(target)?;
        let base = match (linears, kept) {
            (Linears::Record(out), Some(_)) => {
                let y = lin.forward(be, x)?;
                out.borrow_mut().push(y.clone());
                Some(y)
            }
            (Linears::Replay(outs), Some(i)) => Some(
                outs.get(i)
                    .ok_or_else(|| candle_core::Error::Msg("checkpoint: no kept output".into()))?
                    .clone(),
            ),
            _ => None,
        };
        super::ops::adapted::forward(be, lin, x, branch.as_ref(), base.as_ref())
    }

    /// `x (b_sz, seq_len, hidden) -> (b_sz, seq_len, hidden)`.
    pub fn forward(
        &self,
        c: &Config,
        p: &BlockInputs,
        x: &Tensor,
        delta: Delta,
        linears: &Linears,
    ) -> Result<Tensor> {
        let (b_sz, seq_len, hd, be) = (p.b_sz, p.seq_len, c.head_dim, p.backend);
        let run = (be, p.keep);
        // attention
        let h = rms_norm(be, x, &self.attn_norm, c.rms_eps)?;
        // (B, T, H, D): the q/k norms run here, where each head's row is contiguous
        let q = self
            .lin(run, Target::QProj, &h, delta, linears)?
            .reshape((b_sz, seq_len, c.n_head, hd))?;
        let k = self.lin(run, Target::KProj, &h, delta, linears)?.reshape((
            b_sz,
            seq_len,
            c.n_kv_head,
            hd,
        ))?;
        let v = self
            .lin(run, Target::VProj, &h, delta, linears)?
            .reshape((b_sz, seq_len, c.n_kv_head, hd))?
            .transpose(1, 2)?;
        let (q, k) = match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => (
                rms_norm(be, &q, qn, c.rms_eps)?,
                rms_norm(be, &k, kn, c.rms_eps)?,
            ),
            _ => (q, k),
        };
        // (B, T, H, D) -> (B, H, T, D), rotated in the same pass
        let q = rope(be, &q, &p.cos, &p.sin)?;
        let k = rope(be, &k, &p.cos, &p.sin)?;
        let a = attention(be, &q, &k, &v, &p.mask, c.attn_scale)?;
        let a = a.transpose(1, 2)?.reshape((b_sz, seq_len, c.n_head * hd))?;
        let mut o = self.lin(run, Target::OProj, &a, delta, linears)?;
        if let Some(n) = &self.post_attn_norm {
            o = rms_norm(be, &o, n, c.rms_eps)?;
        }
        let x = (x + o)?;
        // MLP
        let h = rms_norm(be, &x, &self.ffn_norm, c.rms_eps)?;
        let g = self.lin(run, Target::GateProj, &h, delta, linears)?;
        let u = self.lin(run, Target::UpProj, &h, delta, linears)?;
        let gu = c.arch.activation().gated(be, &g, &u)?;
        let mut m = self.lin(run, Target::DownProj, &gu, delta, linears)?;
        if let Some(n) = &self.post_ffn_norm {
            m = rms_norm(be, &m, n, c.rms_eps)?;
        }
        x + m
    }
}
