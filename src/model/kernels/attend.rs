//! Grouped-query attention as one op on the CPU: `softmax(scale · q · kᵀ + mask) · v` and its
//! backward, with the probabilities kept inside the op between the two.
//!
//! Owns: the op over `q (b, h, t, d)`, `k`, `v (b, kv, t, d)`: per kv head, its `h / kv` query
//! heads (adjacent in `q`) as one `(h/kv · t, d)` matrix, so each product is one gemm and no
//! k/v copy is made, and the softmax rows it and the fused masked softmax share. Does not: build
//! masks or choose a backend (see `ops::attention`).
//!
//! Why: composed, attention added eight graph nodes (the k transpose copy, the v copy, three
//! reshapes, the softmax, two products); the backward zero-fills and sums a gradient for each,
//! several of them `(heads, t, t)`, the largest tensors of a block.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::fastmath::{exp, lane_max, lane_sum, wide};
use super::host::{contiguous_f32x3, with_f32};
use super::qweight::{product, rm, tr};

/// `q (b, h, t, d)`, `k`, `v (b, kv, t, d)` contiguous f32 on the CPU, `mask (b, 1, t, t)`.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let (b, _, t, _) = q.dims4()?;
    if mask.dims() != [b, 1, t, t] {
        candle_core::bail!("attention: q {:?} with a mask {:?}", q.dims(), mask.dims())
    }
    let mask = mask.contiguous()?;
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        Attend {
            mask,
            scale: scale as f32,
            probs: Mutex::new(None),
        },
    )
}

struct Attend {
    /// `(b, 1, t, t)` contiguous: 0 or -inf (shared with every layer; read, not copied).
    mask: Tensor,
    scale: f32,
    /// `(b, h, t, t)` probabilities of the last forward, for the backward.
    probs: Mutex<Option<Vec<f32>>>,
}

/// Geometry of one call.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    kv: usize,
    /// query heads per kv head
    rep: usize,
    t: usize,
    d: usize,
}

impl Dims {
    fn of(q: &Shape, k: &Shape) -> Result<Self> {
        let (b, h, t, d) = q.dims4()?;
        let (kb, kv, kt, kd) = k.dims4()?;
        if kb != b || kt != t || kd != d || kv == 0 || h % kv != 0 {
            candle_core::bail!("attention: q {q:?} with k/v {k:?}")
        }
        Ok(Self {
            b,
            kv,
            rep: h / kv,
            t,
            d,
        })
    }
    /// Rows of one kv head's query block.
    fn rows(&self) -> usize {
        self.rep * self.t
    }
}

impl CustomOp3 for Attend {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = contiguous_f32x3((s1, l1), (s2, l2), (s3, l3))?;
        let g = Dims::of(l1.shape(), l2.shape())?;
        let (rows, t, d) = (g.rows(), g.t, g.d);
        let mut probs = vec![0f32; g.b * g.kv * rows * t];
        let mut out = vec![0f32; q.len()];
        with_f32(&self.mask, |masks| {
            for bi in 0..g.b {
                let mask = &masks[bi * t * t..(bi + 1) * t * t];
                for h in 0..g.kv {
                    let blk = bi * g.kv + h;
                    let qb = &q[blk * rows * d..(blk + 1) * rows * d];
                    let kb = &k[blk * t * d..(blk + 1) * t * d];
                    let vb = &v[blk * t * d..(blk + 1) * t * d];
                    let pb = &mut probs[blk * rows * t..(blk + 1) * rows * t];
                    // scores (rows, t) = q_blk · k_blkᵀ
                    product(pb, (rows, t, d), rm(qb, d), tr(kb, d), false);
                    wide(
                        #[inline(always)]
                        || {
                            for (r, row) in pb.chunks_mut(t).enumerate() {
                                let i = r % t;
                                let mr = &mask[i * t..(i + 1) * t];
                                softmax_row_in_place(row, mr, self.scale);
                            }
                        },
                    );
                    // out (rows, d) = p · v_blk
                    let ob = &mut out[blk * rows * d..(blk + 1) * rows * d];
                    product(ob, (rows, d, t), rm(pb, t), rm(vb, d), false);
                }
            }
            Ok(())
        })?;
        *self
            .probs
            .lock()
            .map_err(|_| candle_core::Error::Msg("attention: poisoned".into()))? = Some(probs);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = Dims::of(q.shape(), k.shape())?;
        let (rows, t, d) = (g.rows(), g.t, g.d);
        let probs = self
            .probs
            .lock()
            .map_err(|_| candle_core::Error::Msg("attention: poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("attention: backward before forward".into()))?;
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; q.elem_count()],
            vec![0f32; k.elem_count()],
            vec![0f32; v.elem_count()],
        );
        let mut dp = vec![0f32; rows * t];
        let mut ds = vec![0f32; rows * t];
        with_f32(q, |q| {
            with_f32(k, |k| {
                with_f32(v, |v| {
                    with_f32(grad, |go| {
                        for blk in 0..g.b * g.kv {
                            let qs = blk * rows * d..(blk + 1) * rows * d;
                            let ks = blk * t * d..(blk + 1) * t * d;
                            let pb = &probs[blk * rows * t..(blk + 1) * rows * t];
                            let gob = &go[qs.clone()];
                            // dv (t, d) = pᵀ · do
                            product(
                                &mut dv[ks.clone()],
                                (t, d, rows),
                                tr(pb, t),
                                rm(gob, d),
                                false,
                            );
                            // dp (rows, t) = do · vᵀ
                            product(
                                &mut dp,
                                (rows, t, d),
                                rm(gob, d),
                                tr(&v[ks.clone()], d),
                                false,
                            );
                            // ds = scale · p · (dp - Σ dp·p)
                            wide(
                                #[inline(always)]
                                || {
                                    let it = ds.chunks_mut(t).zip(pb.chunks(t));
                                    for ((o, pr), gr) in it.zip(dp.chunks(t)) {
                                        softmax_grad_row(o, pr, gr, self.scale);
                                    }
                                },
                            );
                            // dq (rows, d) = ds · k ; dk (t, d) = dsᵀ · q
                            let kb = &k[ks.clone()];
                            product(
                                &mut dq[qs.clone()],
                                (rows, d, t),
                                rm(&ds, t),
                                rm(kb, d),
                                false,
                            );
                            product(&mut dk[ks], (t, d, rows), tr(&ds, t), rm(&q[qs], d), false);
                        }
                        Ok(())
                    })
                })
            })
        })?;
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}

/// `row = softmax(scale · row + mask)` in place.
#[inline(always)]
fn softmax_row_in_place(row: &mut [f32], mask: &[f32], scale: f32) {
    for (p, &m) in row.iter_mut().zip(mask) {
        *p = scale * *p + m;
    }
    softmax_in_place(row);
}

#[inline(always)]
pub(crate) fn softmax_row(p: &mut [f32], s: &[f32], m: &[f32], scale: f32) {
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
