//! Differentiable building blocks made only of candle ops that have a backward, and the rotary
//! tables and attention masks the fused ops (see `fused`) read.
//!
//! candle's own fused `rms_norm`, `softmax_last_dim` and `rotary_emb::rope*` return correct
//! values but silently drop gradients (FACTS.md), so nothing here calls them. Shapes: `b_sz`
//! batch, `seq_len` positions, `n_head` / `n_kv_head` heads, `head_dim`.

use candle_core::{Device, Result, Tensor};

use super::backend::{enter_cpu_kernel, Backend};
use super::composed::masked_softmax;

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
            super::attend::attention(q, k, v, mask, scale)
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
    let p = masked_softmax(
        &scores.reshape((b_sz, n_head, seq_len, kv_len))?,
        mask,
        scale,
    )?;
    p.reshape((b_sz, n_kv_head, n_rep * seq_len, kv_len))?
        .matmul(&v.contiguous()?)?
        .reshape((b_sz, n_head, seq_len, head_dim))
}

#[cfg(test)]
mod tests {
    use super::*;
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
        // the fused CPU op and the composed form the GPU runs
        let fused = |q: &Tensor, k: &Tensor, v: &Tensor, m: &Tensor, s: f64| {
            attention(Backend::CpuKernels, q, k, v, m, s)
        };
        for (name, ours) in [("fused", run(fused)), ("composed", run(grouped))] {
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
}
