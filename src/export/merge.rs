//! Merged weights: `dequant(W) + scale · B · A`, in either layout, and what re-quantizing costs.
//!
//! Owns: reading a GGUF tensor into f32, the LoRA delta of one linear in Hugging Face or GGUF row
//! order, and [`RequantStats`], which measures how much of the adapter survives re-quantization
//! (the quality users lose when merging into a quantized base).

use anyhow::{Context, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::names::{permute_qk, permute_rows};
use crate::gguf::GgufFile;
use crate::model::{Arch, Config, Lora, Target};

/// A GGUF tensor dequantized to f32, row-major, with its candle-order shape and stored type.
pub struct F32Tensor {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
    pub dtype: GgmlDType,
}

impl F32Tensor {
    pub fn cols(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }

    pub fn to_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.data,
            self.shape.as_slice(),
            &Device::Cpu,
        )?)
    }
}

/// Read `name` as stored (quantized), checking type and shape against the directory.
pub fn read_q(f: &GgufFile, name: &str) -> Result<QTensor> {
    let shape = f
        .tensor_shape(name)
        .with_context(|| format!("{}: no tensor `{name}`", f.path.display()))?
        .to_vec();
    Ok(f.tensor(name, &shape, &Device::Cpu)?)
}

/// Read `name` and dequantize it to f32.
pub fn read_f32(f: &GgufFile, name: &str) -> Result<F32Tensor> {
    let q = read_q(f, name)?;
    let shape = q.shape().dims().to_vec();
    let data = q
        .dequantize(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()
        .with_context(|| format!("{}: dequantizing `{name}`", f.path.display()))?;
    Ok(F32Tensor {
        data,
        shape,
        dtype: q.dtype(),
    })
}

/// Row order of a merged matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Hugging Face's (what dpo-lora computes in).
    Hf,
    /// llama.cpp's: llama Q/K rows interleaved for RoPE.
    Gguf,
}

/// `scale · B · A` `(out, in)` row-major for `(layer, target)`, in `layout`'s row order, or
/// `None` when the adapter does not touch that linear.
pub fn delta(
    lora: &Lora,
    c: &Config,
    layer: usize,
    target: Target,
    layout: Layout,
) -> Result<Option<Vec<f32>>> {
    let Some(l) = lora.get(layer, target) else {
        return Ok(None);
    };
    let d = (l.b.as_tensor().matmul(l.a.as_tensor())? * l.scale)?;
    let cols = d.dim(1)?;
    let d = d.flatten_all()?.to_vec1::<f32>()?;
    let n_head = match (c.arch, target, layout) {
        (Arch::Llama, Target::QProj, Layout::Gguf) => Some(c.n_head),
        (Arch::Llama, Target::KProj, Layout::Gguf) => Some(c.n_kv_head),
        _ => None,
    };
    Ok(Some(match n_head {
        Some(n) => permute_rows(&d, cols, &permute_qk(n, c.head_dim)),
        None => d,
    }))
}

/// `w += d`, checking the sizes agree (an adapter that does not fit is an error, not a panic).
pub fn add_into(w: &mut [f32], d: &[f32], name: &str) -> Result<()> {
    if w.len() != d.len() {
        anyhow::bail!(
            "the adapter for `{name}` has {} elements, the base tensor {}: the adapter does not fit this model",
            d.len(),
            w.len()
        );
    }
    for (x, y) in w.iter_mut().zip(d) {
        *x += y;
    }
    Ok(())
}

/// What re-quantizing merged weights did to the adapter, summed over tensors.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequantStats {
    pub tensors: usize,
    /// Σ ||Q(W + Δ) − (W + Δ)||²: the re-quantization error.
    err2: f64,
    /// Σ ||Δ||².
    delta2: f64,
    /// Σ ⟨Q(W + Δ) − W, Δ⟩.
    dot: f64,
}

impl RequantStats {
    /// Record one tensor: `base` = W, `delta` = Δ, `quantized` = dequant(Q(W + Δ)).
    pub fn add(&mut self, base: &[f32], delta: &[f32], quantized: &[f32]) {
        self.tensors += 1;
        for ((&w, &d), &q) in base.iter().zip(delta).zip(quantized) {
            let (w, d, q) = (w as f64, d as f64, q as f64);
            let e = q - (w + d);
            self.err2 += e * e;
            self.delta2 += d * d;
            let k = q - w;
            self.dot += k * d;
        }
    }

    /// Re-quantization error relative to the adapter's own size: ||Q(W+Δ) − (W+Δ)|| / ||Δ||.
    pub fn relative_error(&self) -> f64 {
        (self.err2 / self.delta2.max(f64::MIN_POSITIVE)).sqrt()
    }

    /// The share of the adapter the merged file keeps along the adapter's own direction:
    /// ⟨Q(W+Δ) − W, Δ⟩ / ||Δ||². 1 = kept (whatever rounding noise lies across it), 0 = the
    /// re-quantization rounded the change away (a small Δ on a coarse grid W already sits on).
    pub fn gain(&self) -> f64 {
        self.dot / self.delta2.max(f64::MIN_POSITIVE)
    }

    /// Add another tensor's (or set's) sums.
    pub fn merge(&mut self, o: &RequantStats) {
        self.tensors += o.tensors;
        self.err2 += o.err2;
        self.delta2 += o.delta2;
        self.dot += o.dot;
    }

    pub fn summary(&self) -> String {
        if self.delta2 == 0.0 {
            return format!(
                "the adapter is all zeros on its {} merged tensors",
                self.tensors
            );
        }
        format!(
            "over {} merged tensors the re-quantized weights keep {:.1} % of the adapter's change along its direction, with rounding noise {:.2}x the adapter's norm",
            self.tensors,
            100.0 * self.gain(),
            self.relative_error()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requant_stats_see_a_lossless_and_a_lost_adapter() {
        let w = vec![1.0f32, -2.0, 0.5, 0.25];
        let d = vec![0.1f32, 0.0, -0.1, 0.2];
        let exact: Vec<f32> = w.iter().zip(&d).map(|(a, b)| a + b).collect();
        let mut s = RequantStats::default();
        s.add(&w, &d, &exact);
        assert!(s.relative_error() < 1e-6);
        assert!((s.gain() - 1.0).abs() < 1e-6);
        let mut lost = RequantStats::default();
        lost.add(&w, &d, &w);
        assert!((lost.relative_error() - 1.0).abs() < 1e-6);
        assert!(lost.gain().abs() < 1e-6);
    }
}
