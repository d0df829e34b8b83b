//! RMSNorm, `x / sqrt(mean(x²) + eps) · w` over the last dimension, in its two forms: the
//! CPU kernel (a custom op that keeps one inverse rms per row for its backward) and the Candle
//! form (candle's basic ops, statistics in f32; candle's own `rms_norm` drops gradients,
//! FACTS.md).
//!
//! Why a custom op on the CPU: composed, the norm kept `x²` and its mean alive until the
//! backward and cost 30 ms per Gemma-3 q-norm at 256 tokens (FACTS.md).

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::model::backend::{enter_cpu_kernel, Backend};
use crate::model::kernels::host::{contiguous_f32, last_dim, task_rows, with_f32};

/// `x / sqrt(mean(x²) + eps) * w` over the last dimension of `x (.., d)`, `w (d,)`.
///
/// `w` is a frozen base weight: no gradient flows to it (the op's backward returns only the
/// input gradient). For Gemma the GGUF already holds `1 + w` (llama.cpp's converter adds the 1),
/// so `w` is used as stored.
pub fn rms_norm(be: Backend, x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if be == Backend::Candle {
        return composed(x, w, eps);
    }
    enter_cpu_kernel("rms_norm", x)?;
    let w = w.to_vec1::<f32>()?;
    if x.dim(candle_core::D::Minus1)? != w.len() {
        candle_core::bail!("rms_norm: x {:?} with a weight of {}", x.dims(), w.len())
    }
    x.contiguous()?.apply_op1(RmsNorm {
        w,
        eps: eps as f32,
        inv_rms: OnceLock::new(),
    })
}

/// Backward: with `x̂ = x·r` (`r` the inverse rms of the row) and `ĝ = g·w`,
/// `dx = r · (ĝ - x̂ · mean(ĝ·x̂))`. Keeps `r` per row (one float per row) from the forward.
struct RmsNorm {
    w: Vec<f32>,
    eps: f32,
    inv_rms: OnceLock<Vec<f32>>,
}

impl RmsNorm {
    fn inv_rms_of(&self, x: &[f32]) -> Vec<f32> {
        let d = self.w.len();
        x.par_chunks(d)
            .with_min_len(task_rows(d))
            .map(|row| {
                let ss: f32 = row.iter().map(|v| v * v).sum();
                1.0 / (ss / d as f32 + self.eps).sqrt()
            })
            .collect()
    }
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout)?;
        let d = last_dim(layout)?;
        let inv = self.inv_rms_of(x);
        let mut y = vec![0f32; x.len()];
        let rows = task_rows(d);
        y.par_chunks_mut(d * rows)
            .zip(x.par_chunks(d * rows))
            .zip(inv.par_chunks(rows))
            .for_each(|((ys, xs), invs)| {
                for ((yr, xr), r) in ys.chunks_mut(d).zip(xs.chunks(d)).zip(invs) {
                    for ((y, x), w) in yr.iter_mut().zip(xr).zip(&self.w) {
                        *y = x * r * w;
                    }
                }
            });
        let _ = self.inv_rms.set(inv);
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let d = self.w.len();
        let gx = with_f32(arg, |x| {
            let inv = match self.inv_rms.get() {
                Some(inv) => std::borrow::Cow::Borrowed(inv),
                None => std::borrow::Cow::Owned(self.inv_rms_of(x)),
            };
            with_f32(grad_res, |g| {
                let mut gx = vec![0f32; x.len()];
                let rows = task_rows(d);
                gx.par_chunks_mut(d * rows)
                    .zip(x.par_chunks(d * rows))
                    .zip(g.par_chunks(d * rows))
                    .zip(inv.par_chunks(rows))
                    .for_each(|(((gxs, xs), gs), invs)| {
                        let rows = gxs.chunks_mut(d).zip(xs.chunks(d)).zip(gs.chunks(d));
                        for (((gxr, xr), gr), &r) in rows.zip(invs) {
                            // mean(ĝ·x̂) = r · mean(g·w·x)
                            let dot: f32 = gr
                                .iter()
                                .zip(xr)
                                .zip(&self.w)
                                .map(|((g, x), w)| g * w * x)
                                .sum();
                            let c = r * r * dot / d as f32;
                            for (((o, g), x), w) in gxr.iter_mut().zip(gr).zip(xr).zip(&self.w) {
                                *o = r * (g * w - x * c);
                            }
                        }
                    });
                Ok(gx)
            })
        })?;
        Ok(Some(Tensor::from_vec(gx, arg.shape(), arg.device())?))
    }
}

/// `x / sqrt(mean(x²) + eps) · w`. The statistic is taken in f32 whatever `x`'s type: in bf16
/// a sum over 4096 values keeps 8 bits of mantissa, and `x²` overflows f16 past |x| = 256. The
/// result is cast back to `x`'s type.
fn composed(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let dt = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let ms = x32.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    x32.broadcast_mul(&inv)?
        .broadcast_mul(&w.to_dtype(DType::F32)?)?
        .to_dtype(dt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::check::{check, tensor};

    #[test]
    fn the_cpu_kernel_matches_the_candle_form() {
        for dims in [&[4, 64][..], &[2, 3, 5, 16], &[1, 7, 640]] {
            let d = *dims.last().unwrap();
            let w = (tensor(&[d], 2, 0.5) + 1.0).unwrap();
            check(
                &format!("rms_norm {dims:?}"),
                &[tensor(dims, 1, 3.0)],
                |x| rms_norm(Backend::CpuKernels, &x[0], &w, 1e-6),
                |x| rms_norm(Backend::Candle, &x[0], &w, 1e-6),
            );
        }
    }
}
