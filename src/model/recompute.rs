//! Gradient checkpointing per transformer block (the recompute; saved training state is
//! `train::checkpoint`): the training forward keeps only each block's
//! input, and the backward runs the block again to get its gradients.
//!
//! Without it a training step holds every block's intermediate tensors (norms, q/k/v, attention
//! probabilities, the MLP's gate and up) from the forward until the backward reaches them: most
//! of a step's memory. With it a step holds one `(b_sz, seq_len, hidden)` tensor per block plus
//! one block's intermediates at a time, for the price of a second forward.
//!
//! How: the block runs once with nothing tracked; its output is handed to the graph by a custom
//! op [`BlockCheckpoint`] whose arguments are the block input `x` and the block's LoRA tensors
//! concatenated into one flat tensor (a tracked `cat` of the `Var`s, so candle's own backward
//! carries their gradients back to each `Var`). Its `bwd` rebuilds the block from `x` with both
//! as fresh variables, with the same dropout masks (drawn from the micro-batch seed), and returns
//! the vector-Jacobian products of `x` and of the flat LoRA tensor.
//!
//! The first run keeps the outputs of the linears its `block::Keep` level names
//! (`train.checkpoint_keep`: none, the MLP's gate/up, or o/gate/up/down); the second run takes
//! them back (through `ops::linear::given`, or the fused adapted-linear op with the kept product as
//! its value) instead of multiplying again. Measured on SmolLM2 (256 tokens, 2 pairs, CPU
//! kernels): block input only 441 MiB / ~10.7 s per DPO step (stop 9); gate/up kept 655 MiB /
//! ~5.6 s; all four 710 MiB / ~5.1 s.

use std::cell::RefCell;
use std::sync::Mutex;

use candle_core::{
    CpuStorage, CudaStorage, CustomOp2, Layout, MetalStorage, Result, Shape, Tensor, Var,
};

use super::block::{Block, BlockInputs, Linears};
use super::config::Config;
use super::handover::{self, handover};
use super::lora::{Branch, Dropout, Lora, Target};

/// One adapter's place in the flat tensor: A `(r, in)` at `a_off`, B `(out, r)` at `b_off`.
#[derive(Clone)]
struct Part {
    target: Target,
    a_off: usize,
    a_dims: (usize, usize),
    b_off: usize,
    b_dims: (usize, usize),
    scale: f64,
}

/// Where each adapter of one block sits in the flat tensor.
#[derive(Clone)]
struct FlatLora {
    layer: usize,
    parts: Vec<Part>,
    /// Dropout probability and the micro-batch seed its masks are drawn from.
    dropout: f64,
    seed: u64,
}

impl FlatLora {
    /// The LoRA branch of `target` with weights read from `flat`.
    fn branch(&self, flat: &Tensor, target: Target) -> Result<Option<Branch>> {
        let Some(p) = self.parts.iter().find(|p| p.target == target) else {
            return Ok(None);
        };
        let (sa, sb) = (p.a_dims, p.b_dims);
        Ok(Some(Branch {
            a: flat.narrow(0, p.a_off, sa.0 * sa.1)?.reshape(sa)?,
            b: flat.narrow(0, p.b_off, sb.0 * sb.1)?.reshape(sb)?,
            scale: p.scale,
            drop: Dropout::draw(self.dropout, self.seed, self.layer, target),
        }))
    }
}

/// Block `layer` of a training forward, checkpointed: same value and same gradients as
/// `block.forward` with `lora.delta(.., Some(seed))`, without keeping the block's intermediates.
pub(crate) fn block(
    config: &Config,
    block: &Block,
    inputs: &BlockInputs,
    layer: usize,
    x: &Tensor,
    lora: &Lora,
    seed: u64,
) -> Result<Tensor> {
    let mut parts = Vec::new();
    let mut pieces = Vec::new();
    let mut off = 0;
    for t in Target::ALL {
        let Some(l) = lora.get(layer, t) else {
            continue;
        };
        let (sa, sb) = (l.a.as_tensor().dims2()?, l.b.as_tensor().dims2()?);
        parts.push(Part {
            target: t,
            a_off: off,
            a_dims: sa,
            b_off: off + sa.0 * sa.1,
            b_dims: sb,
            scale: l.scale,
        });
        off += sa.0 * sa.1 + sb.0 * sb.1;
        pieces.push(l.a.as_tensor().flatten_all()?);
        pieces.push(l.b.as_tensor().flatten_all()?);
    }
    if parts.is_empty() {
        // Nothing trainable here: the ordinary forward (x's gradient still flows).
        let delta = |t| Ok(lora.branch_at(layer, t, Some(seed)));
        return block.forward(config, inputs, x, &delta, &Linears::Compute);
    }
    let flat = Tensor::cat(&pieces, 0)?;
    let spec = FlatLora {
        layer,
        parts,
        dropout: lora.config.dropout,
        seed,
    };
    let detached = flat.detach();
    let kept = RefCell::new(Vec::new());
    let y = block.forward(
        config,
        inputs,
        &x.detach(),
        &|t| spec.branch(&detached, t),
        &Linears::Record(&kept),
    )?;
    x.apply_op2(
        &flat,
        BlockCheckpoint {
            config: config.clone(),
            block: block.clone(),
            inputs: inputs.clone(),
            spec,
            out: Mutex::new(Some(y)),
            kept: Mutex::new(kept.into_inner()),
        },
    )
}

/// The graph node of a checkpointed block: args `(x, flat LoRA)`, value the block's output
/// (computed before the node was made, handed over once by `out`).
struct BlockCheckpoint {
    config: Config,
    block: Block,
    inputs: BlockInputs,
    spec: FlatLora,
    out: Mutex<Option<Tensor>>,
    /// The kept linear outputs of the first run, until the backward takes them.
    kept: Mutex<Vec<Tensor>>,
}

impl CustomOp2 for BlockCheckpoint {
    fn name(&self) -> &'static str {
        "block-checkpoint"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        handover(&self.out, handover::cpu)
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        handover(&self.out, handover::cuda)
    }

    fn metal_fwd(
        &self,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
    ) -> Result<(MetalStorage, Shape)> {
        handover(&self.out, handover::metal)
    }

    fn bwd(
        &self,
        x: &Tensor,
        flat: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let xv = Var::from_tensor(&x.detach())?;
        let fv = Var::from_tensor(&flat.detach())?;
        let kept = std::mem::take(
            &mut *self
                .kept
                .lock()
                .map_err(|_| candle_core::Error::Msg("checkpoint: poisoned".into()))?,
        );
        let y = self.block.forward(
            &self.config,
            &self.inputs,
            xv.as_tensor(),
            &|t| self.spec.branch(fv.as_tensor(), t),
            &Linears::Replay(&kept),
        )?;
        let grads = (y * grad.detach())?.sum_all()?.backward()?;
        Ok((grads.get(&xv).cloned(), grads.get(&fv).cloned()))
    }
}
