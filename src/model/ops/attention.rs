//! Scaled dot-product attention with grouped kv heads, its masked softmax, and the mask: each
//! in its two forms, the CPU kernel (`kernels::attend`, one custom op holding the
//! probabilities between forward and backward; the fused masked softmax) and the Candle form
//! (candle's matmuls and basic ops, the softmax statistics in f32; candle's own
//! `softmax_last_dim` drops gradients, FACTS.md). Shapes: `b_sz` batch, `seq_len` positions,
//! `n_head` / `n_kv_head` heads, `head_dim`.

use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::model::backend::{enter_cpu_kernel, Backend};
use crate::model::kernels::attend::{softmax_grad_row, softmax_row};
use crate::model::kernels::fastmath::wide;
use crate::model::kernels::host::{contiguous_f32, task_rows, with_f32};

/// Where the tokens of one batch row sit: token `i` has RoPE position `pos[i]` and belongs to
/// branch `branch[i]`. Branch 0 is seen by every later token; a token of branch `k > 0` sees
/// branch 0 and its own branch only. A plain sequence is all branch 0 at positions `0..len`; a
/// packed preference pair is `[prompt (0) | chosen completion (1) | rejected completion (2)]`
/// with both completions starting at the prompt's length, so the prompt is computed once and
/// each completion sees exactly what it would see alone.
#[derive(Debug, Clone, PartialEq)]
pub struct RowLayout {
    pub pos: Vec<usize>,
    pub branch: Vec<u8>,
}

impl RowLayout {
    /// A plain sequence of `len` tokens.
    pub fn linear(len: usize) -> Self {
        Self {
            pos: (0..len).collect(),
            branch: vec![0; len],
        }
    }

    /// Real (unpadded) tokens in the row.
    pub fn len(&self) -> usize {
        self.pos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pos.is_empty()
    }
}

/// Additive attention mask `(b_sz, 1, seq_len, seq_len)` for rows padded on the right to
/// `seq_len`: 0 where query `i` may see key `j` (a real key of a visible branch, at a position
/// not after `i`'s, and `pos_i - pos_j < window` when a window is given), `-inf` elsewhere. Real
/// tokens never see padding; a padded query sees only itself, which keeps every softmax row (and
/// so every key and value) finite; a padded row that saw nothing would be NaN and poison the
/// real rows through `NaN · 0`.
pub fn attention_mask(
    rows: &[RowLayout],
    seq_len: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let mut m = Vec::with_capacity(rows.len() * seq_len * seq_len);
    for row in rows {
        let len = row.len();
        for i in 0..seq_len {
            for j in 0..seq_len {
                let visible = if i < len {
                    let (pi, bi) = (row.pos[i], row.branch[i]);
                    j < len
                        && (row.branch[j] == 0 || row.branch[j] == bi)
                        && row.pos[j] <= pi
                        && window.is_none_or(|w| pi - row.pos[j] < w)
                } else {
                    j == i
                };
                m.push(if visible { 0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    Tensor::from_vec(m, (rows.len(), 1, seq_len, seq_len), device)
}

/// Scaled dot-product attention: `q (b, n_head, t, d)`, `k`/`v` `(b, n_kv_head, t, d)`.
///
/// The `n_rep = n_head / n_kv_head` query heads that share a kv head are adjacent, so `q` is
/// viewed as `(b, n_kv_head, n_rep·t, d)` and multiplied with the kv head directly: no repeated
/// copies of `k` and `v` (nor of their gradients), and fewer, taller matmuls.
pub fn attention(
    be: Backend,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let (n_head, n_kv_head) = (q.dim(1)?, k.dim(1)?);
    if n_kv_head == 0 || n_head % n_kv_head != 0 {
        candle_core::bail!("attention: {n_head} query heads over {n_kv_head} kv heads")
    }
    match be {
        Backend::CpuKernels => {
            enter_cpu_kernel("attention", q)?;
            crate::model::kernels::attend::attention(q, k, v, mask, scale)
        }
        Backend::Candle => grouped(q, k, v, mask, scale),
    }
}

/// [`attention`] from candle ops (the GPU path).
fn grouped(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let (b_sz, n_head, seq_len, head_dim) = q.dims4()?;
    let (n_kv_head, kv_len) = (k.dim(1)?, k.dim(2)?);
    let n_rep = n_head / n_kv_head;
    let q = q
        .contiguous()?
        .reshape((b_sz, n_kv_head, n_rep * seq_len, head_dim))?;
    // (B, KV, R·T, T) -> (B, H, T, T) for the mask, and back
    let scores = q.matmul(&k.t()?.contiguous()?)?;
    let p = composed_softmax(
        &scores.reshape((b_sz, n_head, seq_len, kv_len))?,
        mask,
        scale,
    )?;
    p.reshape((b_sz, n_kv_head, n_rep * seq_len, kv_len))?
        .matmul(&v.contiguous()?)?
        .reshape((b_sz, n_head, seq_len, head_dim))
}

/// `softmax(scale · scores + mask)` over the last dimension: `scores (b_sz, n_head, q_len,
/// k_len)`, `mask (b_sz, 1, q_len, k_len)` of 0 and -inf from [`attention_mask`], which
/// leaves every row at least one visible key (a row with none would be NaN, as in the composed
/// softmax). The mask gets no gradient.
pub fn masked_softmax(be: Backend, scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, _, q, k) = scores.dims4()?;
    if mask.dims() != [b, 1, q, k] {
        candle_core::bail!(
            "masked softmax: scores {:?} with a mask {:?}",
            scores.dims(),
            mask.dims()
        )
    }
    if be == Backend::Candle {
        return composed_softmax(scores, mask, scale);
    }
    enter_cpu_kernel("masked softmax", scores)?;
    scores.contiguous()?.apply_op2(
        &mask.contiguous()?,
        MaskedSoftmax {
            scale: scale as f32,
        },
    )
}

/// Backward: `d scores = scale · p · (g - Σ g·p)`; needs only the output `p`.
struct MaskedSoftmax {
    scale: f32,
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "fused-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (scores, mask) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        let (_, n_head, q_len, k_len) = l1.shape().dims4()?;
        let rows_per_task = task_rows(k_len);
        let mut p = vec![0f32; scores.len()];
        p.par_chunks_mut(k_len * rows_per_task)
            .zip(scores.par_chunks(k_len * rows_per_task))
            .enumerate()
            .for_each(|(task, (ps, ss))| {
                wide(
                    #[inline(always)]
                    || {
                        let rows = ps.chunks_mut(k_len).zip(ss.chunks(k_len)).enumerate();
                        for (k, (pr, sr)) in rows {
                            let r = task * rows_per_task + k;
                            // score row (b, h, i) reads mask row (b, 0, i)
                            let (bi, i) = (r / (n_head * q_len), r % q_len);
                            let mr = &mask[(bi * q_len + i) * k_len..(bi * q_len + i + 1) * k_len];
                            softmax_row(pr, sr, mr, self.scale);
                        }
                    },
                )
            });
        Ok((CpuStorage::F32(p), l1.shape().clone()))
    }

    fn bwd(
        &self,
        scores: &Tensor,
        _mask: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let k_len = scores.dim(candle_core::D::Minus1)?;
        let rows = task_rows(k_len);
        let gs = with_f32(res, |p| {
            with_f32(grad_res, |g| {
                let mut gs = vec![0f32; p.len()];
                gs.par_chunks_mut(k_len * rows)
                    .zip(p.par_chunks(k_len * rows))
                    .zip(g.par_chunks(k_len * rows))
                    .for_each(|((gss, ps), gs)| {
                        wide(
                            #[inline(always)]
                            || {
                                let it = gss.chunks_mut(k_len).zip(ps.chunks(k_len));
                                for ((o, pr), gr) in it.zip(gs.chunks(k_len)) {
                                    softmax_grad_row(o, pr, gr, self.scale);
                                }
                            },
                        )
                    });
                Ok(gs)
            })
        })?;
        Ok((
            Some(Tensor::from_vec(gs, scores.shape(), scores.device())?),
            None,
        ))
    }
}

/// Softmax over the last dimension; the row max is a constant (its gradient cancels exactly).
fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

/// `softmax(scale · scores + mask)` over the last dimension, its max and sum in f32 whatever
/// the scores' type; the probabilities are cast back to it.
fn composed_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let dt = scores.dtype();
    let s = (scores.to_dtype(DType::F32)? * scale)?.broadcast_add(&mask.to_dtype(DType::F32)?)?;
    softmax_last_dim(&s)?.to_dtype(dt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::check::{check, tensor};
    use crate::synth::uniform_values;
    use candle_core::Var;

    /// The unfused attention with `k`/`v` copied per query head.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
        let n_rep = q.dim(1)? / k.dim(1)?;
        let rep = |x: &Tensor| -> Result<Tensor> {
            let (b, h, t, d) = x.dims4()?;
            x.unsqueeze(2)?
                .broadcast_as((b, h, n_rep, t, d))?
                .contiguous()?
                .reshape((b, h * n_rep, t, d))
        };
        let s = (q.matmul(&rep(k)?.t()?)? * scale)?.broadcast_add(mask)?;
        let max = s.max_keepdim(candle_core::D::Minus1)?.detach();
        let e = s.broadcast_sub(&max)?.exp()?;
        let p = e.broadcast_div(&e.sum_keepdim(candle_core::D::Minus1)?)?;
        p.matmul(&rep(v)?)
    }

    #[test]
    fn grouped_attention_matches_repeated_kv() {
        let dev = Device::Cpu;
        let (b, h, kv, t, d) = (2, 6, 2, 5, 8);
        let var = |dims: &[usize], seed| {
            let n = dims.iter().product();
            Var::from_vec(uniform_values(n, seed, 2.0), dims, &dev).unwrap()
        };
        let (q, k, v) = (
            var(&[b, h, t, d], 1),
            var(&[b, kv, t, d], 2),
            var(&[b, kv, t, d], 3),
        );
        let rows = [RowLayout::linear(t), RowLayout::linear(3)];
        let mask = attention_mask(&rows, t, Some(2), &dev).unwrap();
        let r =
            Tensor::from_vec(uniform_values(b * h * t * d, 4, 1.0), (b, h, t, d), &dev).unwrap();
        let run = |f: fn(&Tensor, &Tensor, &Tensor, &Tensor, f64) -> Result<Tensor>| {
            let y = f(q.as_tensor(), k.as_tensor(), v.as_tensor(), &mask, 0.4).unwrap();
            let g = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
            let mut out = vec![y.flatten_all().unwrap().to_vec1::<f32>().unwrap()];
            for x in [&q, &k, &v] {
                let gx = g.get(x.as_tensor()).expect("gradient reaches q, k and v");
                out.push(gx.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            }
            out
        };
        let want = run(reference);
        // both forms against the reference
        let kernels = |q: &Tensor, k: &Tensor, v: &Tensor, m: &Tensor, s: f64| {
            attention(Backend::CpuKernels, q, k, v, m, s)
        };
        let candle = |q: &Tensor, k: &Tensor, v: &Tensor, m: &Tensor, s: f64| {
            attention(Backend::Candle, q, k, v, m, s)
        };
        for (name, ours) in [("cpu kernels", run(kernels)), ("candle", run(candle))] {
            for (what, (a, b)) in ["values", "dq", "dk", "dv"]
                .iter()
                .zip(ours.iter().zip(&want))
            {
                let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
                let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(err <= 1e-5 * scale, "{name} {what}: {err} against {scale}");
            }
        }
    }

    #[test]
    fn masked_softmax_cpu_kernel_matches_the_candle_form() {
        let (t, scale) = (9, 0.3);
        for window in [None, Some(3)] {
            // the second sequence is padded: its padded queries see only themselves
            let rows = [RowLayout::linear(t), RowLayout::linear(5)];
            let mask = attention_mask(&rows, t, window, &Device::Cpu).unwrap();
            check(
                &format!("softmax, window {window:?}"),
                &[tensor(&[2, 3, t, t], 7, 10.0)],
                |x| masked_softmax(Backend::CpuKernels, &x[0], &mask, scale),
                |x| masked_softmax(Backend::Candle, &x[0], &mask, scale),
            );
        }
    }
}
