//! Rotary position embedding in the half-split ("NEOX", Hugging Face `rotate_half`) layout, in
//! its two forms: the CPU kernel (a custom op that rotates and transposes in one pass; its
//! backward is the inverse rotation, so it keeps only the tables) and the Candle form (candle's
//! basic ops; candle's own `rotary_emb::rope*` drops gradients, FACTS.md). Also the tables both
//! read, per position.
//!
//! Why a custom op on the CPU: composed, RoPE cost 28 ms per Gemma-3 block at 256 tokens
//! (FACTS.md) and kept the rotated halves alive until the backward.

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::model::backend::{enter_cpu_kernel, Backend};
use crate::model::kernels::host::{contiguous_f32, task_rows, with_f32};

/// Rotary tables at `positions`: `(cos, sin)`, each `(positions.len(), head_dim)` with the
/// half-split ("NEOX", Hugging Face `rotate_half`) layout. Computed in f32 like HF:
/// `inv_freq_i = 1 / (base^(2i/d) * factor_i)` (llama3 `rope_freqs` factors), times `scale`
/// (linear position scaling, 1/factor).
pub fn rope_tables(
    positions: &[usize],
    head_dim: usize,
    base: f32,
    freq_factors: Option<&[f32]>,
    pos_scale: f32,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| {
            let f = 1.0 / base.powf((2 * i) as f32 / head_dim as f32);
            let factor = freq_factors
                .and_then(|ff| ff.get(i))
                .copied()
                .unwrap_or(1.0);
            f / factor
        })
        .collect();
    let mut cos = Vec::with_capacity(positions.len() * head_dim);
    let mut sin = Vec::with_capacity(positions.len() * head_dim);
    for &p in positions {
        let pos = p as f32 * pos_scale;
        for _ in 0..2 {
            for f in &inv {
                let a = pos * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }
    let n = positions.len();
    Ok((
        Tensor::from_vec(cos, (n, head_dim), device)?,
        Tensor::from_vec(sin, (n, head_dim), device)?,
    ))
}

/// `x (b_sz, seq_len, n_head, head_dim)` (the projection's layout) rotated in the half-split
/// ("NEOX", Hugging Face `rotate_half`) layout, `x·cos + rotate_half(x)·sin` with `cos`/`sin`
/// from [`rope_tables`], `(seq_len, head_dim)` for every row or `(b_sz, seq_len,
/// head_dim)` per row (packed rows), and returned as `(b_sz, n_head, seq_len, head_dim)`,
/// contiguous: the transpose attention needs is done in the same pass.
pub fn rope(be: Backend, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, t, n_head, d) = x.dims4()?;
    let per_row = cos.rank() == 3;
    let ok = |tab: &Tensor| tab.dims() == [t, d] || tab.dims() == [b, t, d];
    if !ok(cos) || sin.dims() != cos.dims() || d % 2 != 0 {
        candle_core::bail!(
            "rope: x {:?} with tables {:?} / {:?}",
            x.dims(),
            cos.dims(),
            sin.dims()
        )
    }
    if be == Backend::Candle {
        let dt = x.dtype();
        return composed(x, &cos.to_dtype(dt)?, &sin.to_dtype(dt)?);
    }
    enter_cpu_kernel("rope", x)?;
    let table = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
    x.contiguous()?.apply_op1(Rope {
        cos: table(cos)?,
        sin: table(sin)?,
        seq_len: t,
        n_head,
        per_row,
    })
}

/// A rotation of each (i, i + d/2) pair: the backward is the transposed rotation (the inverse
/// one, as both halves of the tables are equal), so it needs the tables and not `x`.
struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    seq_len: usize,
    n_head: usize,
    /// Tables `(b, t, d)` (a row of positions per batch row) rather than `(t, d)`.
    per_row: bool,
}

impl Rope {
    /// Forward (`transpose == false`): `x (B, T, H, D) -> y (B, H, T, D)`,
    /// `y = x·cos + rotate_half(x)·sin`. Backward (`true`): its adjoint,
    /// `g (B, H, T, D) -> (B, T, H, D)`.
    fn rotate(&self, x: &[f32], d: usize, transpose: bool) -> Vec<f32> {
        let (t_len, n_head) = (self.seq_len, self.n_head);
        let half = d / 2;
        let rows = task_rows(d);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(d * rows)
            .enumerate()
            .for_each(|(task, ys)| {
                for (k, yr) in ys.chunks_mut(d).enumerate() {
                    let r = task * rows + k;
                    // the input row that output row r reads, and its position
                    let (src, b, t) = if transpose {
                        // r = (b, t, h) reads (b, h, t)
                        let (b, t, h) = (r / (t_len * n_head), (r / n_head) % t_len, r % n_head);
                        ((b * n_head + h) * t_len + t, b, t)
                    } else {
                        // r = (b, h, t) reads (b, t, h)
                        let (b, h, t) = (r / (t_len * n_head), (r / t_len) % n_head, r % t_len);
                        ((b * t_len + t) * n_head + h, b, t)
                    };
                    // the table row of (b, t)
                    let pos = if self.per_row { b * t_len + t } else { t };
                    let xr = &x[src * d..(src + 1) * d];
                    let c = &self.cos[pos * d..(pos + 1) * d];
                    let s = &self.sin[pos * d..(pos + 1) * d];
                    let (x1, x2) = xr.split_at(half);
                    let (y1, y2) = yr.split_at_mut(half);
                    for i in 0..half {
                        let j = i + half;
                        if transpose {
                            y1[i] = x1[i] * c[i] + x2[i] * s[j];
                            y2[i] = x2[i] * c[j] - x1[i] * s[i];
                        } else {
                            y1[i] = x1[i] * c[i] - x2[i] * s[i];
                            y2[i] = x2[i] * c[j] + x1[i] * s[j];
                        }
                    }
                }
            });
        y
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout)?;
        let (b, t, h, d) = layout.shape().dims4()?;
        let y = self.rotate(x, d, false);
        Ok((CpuStorage::F32(y), Shape::from((b, h, t, d))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let d = arg.dim(candle_core::D::Minus1)?;
        let gx = with_f32(grad_res, |g| Ok(self.rotate(g, d, true)))?;
        Ok(Some(Tensor::from_vec(gx, arg.shape(), arg.device())?))
    }
}

/// `x (b, h, t, d)` rotated in the half-split layout: `x·cos + rotate_half(x)·sin`.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)?.add(&rot.broadcast_mul(sin)?)
}

/// [`rope`]'s contract: `x (b, t, h, d)` in, rotated `(b, h, t, d)` out; tables `(t, d)`
/// or per row `(b, t, d)`.
fn composed(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (cos, sin) = if cos.rank() == 3 {
        (cos.unsqueeze(1)?, sin.unsqueeze(1)?)
    } else {
        (cos.clone(), sin.clone())
    };
    apply_rope(&x.transpose(1, 2)?.contiguous()?, &cos, &sin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::check::{check, compare, tensor, values};

    /// Rotary tables for positions `0..t`, base 10,000.
    fn plain_tables(t: usize, d: usize) -> (Tensor, Tensor) {
        let pos: Vec<usize> = (0..t).collect();
        rope_tables(&pos, d, 10_000.0, None, 1.0, &Device::Cpu).unwrap()
    }

    #[test]
    fn the_cpu_kernel_matches_the_candle_form() {
        let (t, d) = (7, 16);
        let (cos, sin) = plain_tables(t, d);
        check(
            "rope",
            &[tensor(&[2, t, 3, d], 5, 2.0)],
            |x| rope(Backend::CpuKernels, &x[0], &cos, &sin),
            |x| apply_rope(&x[0].transpose(1, 2)?, &cos, &sin),
        );
        // per-row tables (packed pairs: positions restart inside a row)
        let pos: Vec<usize> = [0, 1, 2, 3, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
            .into_iter()
            .collect();
        let (cos2, sin2) = rope_tables(&pos, d, 10_000.0, None, 1.0, &Device::Cpu).unwrap();
        let (cos2, sin2) = (
            cos2.reshape((2, t, d)).unwrap(),
            sin2.reshape((2, t, d)).unwrap(),
        );
        check(
            "rope (per row)",
            &[tensor(&[2, t, 3, d], 9, 2.0)],
            |x| rope(Backend::CpuKernels, &x[0], &cos2, &sin2),
            |x| {
                apply_rope(
                    &x[0].transpose(1, 2)?,
                    &cos2.unsqueeze(1)?,
                    &sin2.unsqueeze(1)?,
                )
            },
        );
        // llama3-style frequency factors and linear position scaling
        let ff: Vec<f32> = (0..d / 2).map(|i| 1.0 + i as f32).collect();
        let (cos, sin) = rope_tables(
            &(0..t).collect::<Vec<_>>(),
            d,
            500.0,
            Some(&ff),
            0.25,
            &Device::Cpu,
        )
        .unwrap();
        check(
            "rope (scaled)",
            &[tensor(&[1, t, 2, d], 6, 2.0)],
            |x| rope(Backend::CpuKernels, &x[0], &cos, &sin),
            |x| apply_rope(&x[0].transpose(1, 2)?, &cos, &sin),
        );
    }

    /// RoPE whose backward rotates forward again instead of back: right values, wrong gradient.
    struct WrongRope(Rope);

    impl CustomOp1 for WrongRope {
        fn name(&self) -> &'static str {
            "wrong-rope"
        }

        fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
            self.0.cpu_fwd(s, l)
        }

        fn bwd(&self, arg: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
            let d = arg.dim(candle_core::D::Minus1)?;
            let gx = with_f32(g, |g| Ok(self.0.rotate(g, d, false)))?;
            Ok(Some(Tensor::from_vec(gx, arg.shape(), arg.device())?))
        }
    }

    /// The gradient check can fail: a backward that is not the transposed rotation is caught.
    #[test]
    fn check_catches_a_wrong_backward() {
        let (t, d) = (4, 8);
        let (cos, sin) = plain_tables(t, d);
        let wrong = |x: &[Tensor]| {
            x[0].apply_op1(WrongRope(Rope {
                cos: values(&cos),
                sin: values(&sin),
                seq_len: t,
                n_head: 2,
                per_row: false,
            }))
        };
        let msg = compare(
            "rope with a wrong backward",
            &[tensor(&[1, t, 2, d], 8, 1.0)],
            wrong,
            |x| apply_rope(&x[0].transpose(1, 2)?, &cos, &sin),
        )
        .expect_err("the wrong backward passed the check");
        assert!(msg.contains("gradient"), "{msg}");
    }
}
