//! Differentiable building blocks made only of candle ops that have a backward, and the rotary
//! tables and attention masks the fused ops (see `fused`) read.
//!
//! candle's own fused `rms_norm`, `softmax_last_dim` and `rotary_emb::rope*` return correct
//! values but silently drop gradients (FACTS.md), so nothing here calls them. Shapes: `b_sz`
//! batch, `seq_len` positions, `n_head` / `n_kv_head` heads, `head_dim`.

use candle_core::{Device, Result, Tensor};

use super::fused::masked_softmax;

/// Rotary tables for positions `0..seq_len`: `(cos, sin)`, each `(seq_len, head_dim)` with the
/// half-split ("NEOX", Hugging Face `rotate_half`) layout. Computed in f32 like HF:
/// `inv_freq_i = 1 / (base^(2i/d) * factor_i)` (llama3 `rope_freqs` factors), times `scale`
/// (linear position scaling, 1/factor).
pub fn rope_tables(
    seq_len: usize,
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
    let mut cos = Vec::with_capacity(seq_len * head_dim);
    let mut sin = Vec::with_capacity(seq_len * head_dim);
    for p in 0..seq_len {
        let pos = p as f32 * pos_scale;
        for _ in 0..2 {
            for f in &inv {
                let a = pos * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }
    Ok((
        Tensor::from_vec(cos, (seq_len, head_dim), device)?,
        Tensor::from_vec(sin, (seq_len, head_dim), device)?,
    ))
}

/// Additive attention mask `(b_sz, 1, seq_len, seq_len)`: 0 where query `i` may see key `j`
/// (causal, inside the sequence's own length, and `i - j < window` when a window is given),
/// `-inf` elsewhere. Padding is on the right, so real tokens never see padding; a padded query
/// sees only itself, which keeps every softmax row (and so every key and value) finite; a
/// padded row that saw nothing would be NaN and poison the real rows through `NaN · 0`.
pub fn attention_mask(
    lengths: &[usize],
    seq_len: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let mut m = Vec::with_capacity(lengths.len() * seq_len * seq_len);
    for &len in lengths {
        for i in 0..seq_len {
            for j in 0..seq_len {
                let visible = if i < len {
                    j <= i && window.is_none_or(|w| i - j < w)
                } else {
                    j == i
                };
                m.push(if visible { 0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    Tensor::from_vec(m, (lengths.len(), 1, seq_len, seq_len), device)
}

/// Repeat each of `n_kv_head` heads `n_rep` times: `(b, n_kv_head, t, d) -> (b, n_kv_head*n_rep, t, d)`.
pub fn repeat_kv(x: &Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x.clone());
    }
    let (b, h, t, d) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, h, n_rep, t, d))?
        .contiguous()?
        .reshape((b, h * n_rep, t, d))
}

/// Scaled dot-product attention: `q (b, n_head, t, d)`, `k`/`v` `(b, n_kv_head, t, d)`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let n_rep = q.dim(1)? / k.dim(1)?;
    let k = repeat_kv(k, n_rep)?;
    let v = repeat_kv(v, n_rep)?;
    let scores = q.contiguous()?.matmul(&k.t()?.contiguous()?)?;
    let p = masked_softmax(&scores, mask, scale)?;
    p.matmul(&v.contiguous()?)
}
