//! The gated activation of the MLP, `act(gate) · up` (SiLU for Llama/Qwen, tanh-GELU for
//! Gemma), in its two forms: the CPU kernel (a custom op whose backward needs only its two
//! inputs) and the Candle form (candle's `silu`/`gelu` and a product).
//!
//! Why a custom op on the CPU: composed, GELU's backward was 66 ms per Gemma-3 block at 256
//! tokens and kept its intermediates alive (FACTS.md).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::model::backend::{enter_cpu_kernel, Backend};
pub use crate::model::config::Activation;
use crate::model::kernels::fastmath::{sigmoid, tanh, wide};
use crate::model::kernels::host::{contiguous_f32, with_f32, TASK_FLOATS};

/// sqrt(2/π), the tanh-GELU constant (PyTorch `gelu(approximate="tanh")`).
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

impl Activation {
    /// `act(x)` and `d act / dx` at `x`.
    #[inline(always)]
    fn value_and_slope(self, x: f32) -> (f32, f32) {
        match self {
            Activation::Silu => {
                let s = sigmoid(x);
                (x * s, s * (1.0 + x * (1.0 - s)))
            }
            Activation::GeluTanh => {
                let inner = SQRT_2_OVER_PI * x * (1.0 + GELU_C * x * x);
                let t = tanh(inner);
                let d_inner = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
                (
                    0.5 * x * (1.0 + t),
                    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * d_inner,
                )
            }
        }
    }

    /// `act(gate) · up`, elementwise; `gate` and `up` have the same shape. Gradients flow to both.
    pub fn gated(self, be: Backend, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        if be == Backend::Candle {
            return self.composed(gate, up);
        }
        enter_cpu_kernel("gated activation", gate)?;
        if gate.dims() != up.dims() {
            candle_core::bail!(
                "gated activation: gate {:?}, up {:?}",
                gate.dims(),
                up.dims()
            )
        }
        gate.contiguous()?.apply_op2(&up.contiguous()?, Gated(self))
    }
}

/// Backward: `d gate = g · up · act'(gate)`, `d up = g · act(gate)`; needs only the two inputs.
struct Gated(Activation);

impl CustomOp2 for Gated {
    fn name(&self) -> &'static str {
        "fused-gated-activation"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (gate, up) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        let mut y = vec![0f32; gate.len()];
        y.par_chunks_mut(TASK_FLOATS)
            .zip(gate.par_chunks(TASK_FLOATS))
            .zip(up.par_chunks(TASK_FLOATS))
            .for_each(|((ys, gs), us)| {
                wide(
                    #[inline(always)]
                    || gated_rows(self.0, ys, gs, us),
                )
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = gate.elem_count();
        let mut d_gate = vec![0f32; n];
        let mut d_up = vec![0f32; n];
        with_f32(gate, |gv| {
            with_f32(up, |uv| {
                with_f32(grad_res, |gr| {
                    d_gate
                        .par_chunks_mut(TASK_FLOATS)
                        .zip(d_up.par_chunks_mut(TASK_FLOATS))
                        .zip(gv.par_chunks(TASK_FLOATS))
                        .zip(uv.par_chunks(TASK_FLOATS).zip(gr.par_chunks(TASK_FLOATS)))
                        .for_each(|(((dgs, dus), gs), (us, grs))| {
                            wide(
                                #[inline(always)]
                                || gated_grad_rows(self.0, dgs, dus, gs, us, grs),
                            )
                        });
                    Ok(())
                })
            })
        })?;
        let dev = gate.device();
        Ok((
            Some(Tensor::from_vec(d_gate, gate.shape(), dev)?),
            Some(Tensor::from_vec(d_up, up.shape(), dev)?),
        ))
    }
}

/// `y = act(g) · u` over a run of values. Inlined into [`wide`]'s AVX2 function (as are the
/// other row kernels below), so the loops vectorize there.
#[inline(always)]
fn gated_rows(act: Activation, ys: &mut [f32], gs: &[f32], us: &[f32]) {
    for ((y, &g), &u) in ys.iter_mut().zip(gs).zip(us) {
        *y = act.value_and_slope(g).0 * u;
    }
}

/// `d gate = gr · u · act'(g)`, `d up = gr · act(g)` over a run of values.
#[inline(always)]
fn gated_grad_rows(
    act: Activation,
    dgs: &mut [f32],
    dus: &mut [f32],
    gs: &[f32],
    us: &[f32],
    grs: &[f32],
) {
    let it = dgs.iter_mut().zip(dus.iter_mut()).zip(gs);
    for (((dg, du), &g), (&u, &gr)) in it.zip(us.iter().zip(grs)) {
        let (a, da) = act.value_and_slope(g);
        *dg = gr * u * da;
        *du = gr * a;
    }
}

impl Activation {
    /// `act(gate) · up`.
    fn composed(self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        let a = match self {
            Activation::Silu => gate.silu()?,
            Activation::GeluTanh => gate.gelu()?,
        };
        a * up
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::check::{check, tensor};

    #[test]
    fn the_cpu_kernel_matches_the_candle_form() {
        let gate = tensor(&[3, 5, 48], 3, 5.0);
        let up = tensor(&[3, 5, 48], 4, 2.0);
        for act in [Activation::Silu, Activation::GeluTanh] {
            check(
                &format!("{act:?}"),
                &[gate.clone(), up.clone()],
                |x| act.gated(Backend::CpuKernels, &x[0], &x[1]),
                |x| act.gated(Backend::Candle, &x[0], &x[1]),
            );
        }
    }
}
