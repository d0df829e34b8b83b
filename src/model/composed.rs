//! The element-wise ops of the forward built from candle's basic tensor ops, whose backward is
//! candle's own: the path on GPUs (the fused ops in `fused` are CPU kernels) and the reference
//! the fused ops are tested against. candle's own `rms_norm`, `softmax_last_dim` and `rope`
//! drop gradients (FACTS.md), so none of them is used here.

use candle_core::{DType, Result, Tensor, D};

use super::config::Activation;

/// `x / sqrt(mean(x²) + eps) · w`. The statistic is taken in f32 whatever `x`'s type: in bf16
/// a sum over 4096 values keeps 8 bits of mantissa, and `x²` overflows f16 past |x| = 256. The
/// result is cast back to `x`'s type.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let dt = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let ms = x32.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    x32.broadcast_mul(&inv)?
        .broadcast_mul(&w.to_dtype(DType::F32)?)?
        .to_dtype(dt)
}

/// Softmax over the last dimension; the row max is a constant (its gradient cancels exactly).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

/// `softmax(scale · scores + mask)` over the last dimension, its max and sum in f32 whatever
/// the scores' type; the probabilities are cast back to it.
pub fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let dt = scores.dtype();
    let s = (scores.to_dtype(DType::F32)? * scale)?.broadcast_add(&mask.to_dtype(DType::F32)?)?;
    softmax_last_dim(&s)?.to_dtype(dt)
}

/// `x (b, h, t, d)` rotated in the half-split layout: `x·cos + rotate_half(x)·sin`.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)?.add(&rot.broadcast_mul(sin)?)
}

/// `fused::rope`'s contract: `x (b, t, h, d)` in, rotated `(b, h, t, d)` out; tables `(t, d)`
/// or per row `(b, t, d)`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (cos, sin) = if cos.rank() == 3 {
        (cos.unsqueeze(1)?, sin.unsqueeze(1)?)
    } else {
        (cos.clone(), sin.clone())
    };
    apply_rope(&x.transpose(1, 2)?.contiguous()?, &cos, &sin)
}

/// `act(gate) · up`.
pub fn gated(act: Activation, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let a = match act {
        Activation::Silu => gate.silu()?,
        Activation::GeluTanh => gate.gelu()?,
    };
    a * up
}
