//! Fused element-wise ops with their own backward: RMSNorm, the gated activation, RoPE and the
//! masked scaled softmax of attention.
//!
//! Owns: the f32 CPU forward and backward of each op, parallel over rows with rayon.
//! Does not: compose them into a block (see `mod.rs`) or build their tables and masks (see
//! `layers`).
//!
//! Why: built from basic candle ops these were most of a block's backward time (GELU 66 ms,
//! softmax 34 ms, q-norm 30 ms, RoPE 28 ms per Gemma-3 block at 256 tokens, FACTS.md), and
//! autograd kept every intermediate (`x²`, its mean, the shifted exponentials, ...) alive until
//! the backward. A custom op keeps its inputs and its output in the graph and nothing else; what
//! its backward needs beyond them (the inverse rms per row) lives in the op itself.
//!
//! Each op is handed the model's [`Backend`]: `CpuKernels` runs the fused op (f32 on the CPU,
//! inputs made contiguous), `Candle` the composed form from `composed` (what a GPU runs). The
//! tests below hold both against the composed reference for values and gradients.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::backend::{enter_cpu_kernel, Backend};
pub use super::config::Activation;
use super::kernels::fastmath::{exp, lane_max, lane_sum, sigmoid, tanh, wide};
use super::qlinear::contiguous_f32;

/// Floats handed to one rayon task: below this the task overhead outweighs the work.
const TASK_FLOATS: usize = 1 << 14;

/// Rows of `row` floats per rayon task.
fn task_rows(row: usize) -> usize {
    (TASK_FLOATS / row.max(1)).max(1)
}

/// Runs `f` on the f32 values of `t` in row-major order (copied only when `t` is not contiguous).
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("fused ops run on the CPU only")
    };
    f(contiguous_f32(cpu, layout)?)
}

fn last_dim(layout: &Layout) -> Result<usize> {
    match layout.dims().last() {
        Some(&d) if d > 0 => Ok(d),
        _ => candle_core::bail!("fused op: empty last dimension in {:?}", layout.dims()),
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

/// `x / sqrt(mean(x²) + eps) * w` over the last dimension of `x (.., d)`, `w (d,)`.
///
/// `w` is a frozen base weight: no gradient flows to it (the op's backward returns only the
/// input gradient). For Gemma the GGUF already holds `1 + w` (llama.cpp's converter adds the 1),
/// so `w` is used as stored.
pub fn rms_norm(be: Backend, x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if be == Backend::Candle {
        return super::composed::rms_norm(x, w, eps);
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

// ---------------------------------------------------------------------------------------------
// Gated activation

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
            return super::composed::gated(self, gate, up);
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

// ---------------------------------------------------------------------------------------------
// RoPE

/// `x (b_sz, seq_len, n_head, head_dim)` (the projection's layout) rotated in the half-split
/// ("NEOX", Hugging Face `rotate_half`) layout, `x·cos + rotate_half(x)·sin` with `cos`/`sin`
/// from `layers::rope_tables`, `(seq_len, head_dim)` for every row or `(b_sz, seq_len,
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
        return super::composed::rope(x, &cos.to_dtype(dt)?, &sin.to_dtype(dt)?);
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

// ---------------------------------------------------------------------------------------------
// Masked scaled softmax

/// `softmax(scale · scores + mask)` over the last dimension: `scores (b_sz, n_head, q_len,
/// k_len)`, `mask (b_sz, 1, q_len, k_len)` of 0 and -inf from `layers::attention_mask`, which
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
        return super::composed::masked_softmax(scores, mask, scale);
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

/// One row of probabilities: `p = softmax(scale · s + m)`.
#[inline(always)]
fn softmax_row(p: &mut [f32], s: &[f32], m: &[f32], scale: f32) {
    for ((p, &s), &m) in p.iter_mut().zip(s).zip(m) {
        *p = scale * s + m;
    }
    softmax_in_place(p);
}

/// `p = softmax(p)` over one row (`-inf` entries become 0).
#[inline(always)]
pub(crate) fn softmax_in_place(p: &mut [f32]) {
    let max = lane_max(p);
    for p in p.iter_mut() {
        *p = exp(*p - max);
    }
    let inv = 1.0 / lane_sum(p);
    p.iter_mut().for_each(|p| *p *= inv);
}

/// One row of the softmax backward: `o = scale · p · (g - Σ g·p)`.
#[inline(always)]
pub(crate) fn softmax_grad_row(o: &mut [f32], p: &[f32], g: &[f32], scale: f32) {
    for ((o, &p), &g) in o.iter_mut().zip(p).zip(g) {
        *o = p * g;
    }
    let dot = lane_sum(o);
    for ((o, &p), &g) in o.iter_mut().zip(p).zip(g) {
        *o = scale * p * (g - dot);
    }
}

#[cfg(test)]
mod tests {
    //! Each fused op against the composed candle ops it replaced (whose backward is candle's own):
    //! values and the gradient of `sum(y · r)` for a random `r`.

    use super::*;
    use crate::model::layers::{attention_mask, rope_tables, RowLayout};
    use crate::synth::uniform_values;
    use candle_core::{Device, Var};

    /// The composed versions (the GPU path) are the reference.
    use crate::model::composed as reference;

    fn tensor(dims: &[usize], seed: u64, scale: f32) -> Tensor {
        let n = dims.iter().product();
        Tensor::from_vec(uniform_values(n, seed, scale), dims, &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// `max |a - b| / max |b|` under `tol`, or what differed.
    fn close(what: &str, a: &Tensor, b: &Tensor, tol: f32) -> std::result::Result<(), String> {
        if a.dims() != b.dims() {
            return Err(format!("{what}: shapes {:?} vs {:?}", a.dims(), b.dims()));
        }
        let (a, b) = (values(a), values(b));
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let err = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        if err <= tol * scale {
            Ok(())
        } else {
            Err(format!("{what}: max error {err} against a max of {scale}"))
        }
    }

    /// Values and input gradients of `f` and `reference` at the same inputs, with the loss
    /// `sum(y · r)` for a fixed random `r`, to 1e-5 of the largest reference value.
    fn compare(
        what: &str,
        inputs: &[Tensor],
        f: impl Fn(&[Tensor]) -> Result<Tensor>,
        reference: impl Fn(&[Tensor]) -> Result<Tensor>,
    ) -> std::result::Result<(), String> {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let xs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let ours = f(&xs).unwrap();
        let want = reference(&xs).unwrap();
        close(&format!("{what} values"), &ours, &want, 1e-5)?;
        let r = tensor(want.dims(), 99, 1.0);
        let g_ours = ours.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        let g_want = want.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, x) in xs.iter().enumerate() {
            let a = g_ours
                .get(x)
                .ok_or_else(|| format!("{what}: no gradient for input {i}"))?;
            close(
                &format!("{what} gradient {i}"),
                a,
                g_want.get(x).unwrap(),
                1e-5,
            )?;
        }
        Ok(())
    }

    fn check(
        what: &str,
        inputs: &[Tensor],
        f: impl Fn(&[Tensor]) -> Result<Tensor>,
        reference: impl Fn(&[Tensor]) -> Result<Tensor>,
    ) {
        if let Err(e) = compare(what, inputs, f, reference) {
            panic!("{e}")
        }
    }

    #[test]
    fn rms_norm_matches_composed_ops() {
        for dims in [&[4, 64][..], &[2, 3, 5, 16], &[1, 7, 640]] {
            let d = *dims.last().unwrap();
            let w = (tensor(&[d], 2, 0.5) + 1.0).unwrap();
            check(
                &format!("rms_norm {dims:?}"),
                &[tensor(dims, 1, 3.0)],
                |x| rms_norm(Backend::CpuKernels, &x[0], &w, 1e-6),
                |x| reference::rms_norm(&x[0], &w, 1e-6),
            );
        }
    }

    #[test]
    fn gated_activations_match_composed_ops() {
        let gate = tensor(&[3, 5, 48], 3, 5.0);
        let up = tensor(&[3, 5, 48], 4, 2.0);
        check(
            "silu",
            &[gate.clone(), up.clone()],
            |x| Activation::Silu.gated(Backend::CpuKernels, &x[0], &x[1]),
            |x| x[0].silu()?.mul(&x[1]), // the composed form it replaced
        );
        check(
            "gelu_tanh",
            &[gate, up],
            |x| Activation::GeluTanh.gated(Backend::CpuKernels, &x[0], &x[1]),
            |x| x[0].gelu()?.mul(&x[1]),
        );
    }

    /// Rotary tables for positions `0..t`, base 10,000.
    fn plain_tables(t: usize, d: usize) -> (Tensor, Tensor) {
        let pos: Vec<usize> = (0..t).collect();
        rope_tables(&pos, d, 10_000.0, None, 1.0, &Device::Cpu).unwrap()
    }

    #[test]
    fn rope_matches_composed_ops() {
        let (t, d) = (7, 16);
        let (cos, sin) = plain_tables(t, d);
        check(
            "rope",
            &[tensor(&[2, t, 3, d], 5, 2.0)],
            |x| rope(Backend::CpuKernels, &x[0], &cos, &sin),
            |x| reference::apply_rope(&x[0].transpose(1, 2)?, &cos, &sin),
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
                reference::apply_rope(
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
            |x| reference::apply_rope(&x[0].transpose(1, 2)?, &cos, &sin),
        );
    }

    #[test]
    fn masked_softmax_matches_composed_ops() {
        let (t, scale) = (9, 0.3);
        for window in [None, Some(3)] {
            // the second sequence is padded: its padded queries see only themselves
            let rows = [RowLayout::linear(t), RowLayout::linear(5)];
            let mask = attention_mask(&rows, t, window, &Device::Cpu).unwrap();
            check(
                &format!("softmax, window {window:?}"),
                &[tensor(&[2, 3, t, t], 7, 10.0)],
                |x| masked_softmax(Backend::CpuKernels, &x[0], &mask, scale),
                |x| reference::softmax_last_dim(&(&x[0] * scale)?.broadcast_add(&mask)?),
            );
        }
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
            |x| reference::apply_rope(&x[0].transpose(1, 2)?, &cos, &sin),
        )
        .expect_err("the wrong backward passed the check");
        assert!(msg.contains("gradient"), "{msg}");
    }
}
