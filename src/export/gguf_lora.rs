//! The adapter as a llama.cpp LoRA GGUF (`llama-cli --lora FILE`).
//!
//! Owns: llama.cpp's adapter layout: `general.type = adapter`, `adapter.type = lora`,
//! `adapter.lora.alpha`, and per adapted linear `blk.N.<name>.weight.lora_a` (A, `(r, in)`) and
//! `.lora_b` (B, `(out, r)`), f32. llama.cpp scales by `alpha / r`, so rsLoRA's `alpha / sqrt(r)`
//! is written as the alpha that gives the same scale; llama Q/K rows of B go back to llama.cpp's
//! RoPE order.

use std::path::Path;

use anyhow::Result;
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::names::{gguf_linear, permute_qk, permute_rows};
use super::Report;
use crate::gguf::write::{string, write_gguf};
use crate::model::{Arch, Lora, Target};
use crate::session::Loaded;

pub const FILE: &str = "adapter.gguf";

pub fn write(base: &Loaded, lora: &Lora, dir: &Path, report: &mut Report) -> Result<()> {
    let c = &base.model.config;
    let r = lora.config.rank;
    // llama.cpp: scale = alpha / rank; ours may be rsLoRA's alpha / sqrt(rank).
    let alpha = (lora.config.scale() * r as f64) as f32;
    let name = base
        .file
        .opt_str("general.name")?
        .unwrap_or("model")
        .to_string();
    let metadata = vec![
        (
            "general.architecture".to_string(),
            string(c.arch.gguf_name()),
        ),
        ("general.type".to_string(), string("adapter")),
        (
            "general.name".to_string(),
            string(format!("{name} dpo-lora adapter")),
        ),
        ("adapter.type".to_string(), string("lora")),
        ("adapter.lora.alpha".to_string(), Value::F32(alpha)),
    ];
    let mut tensors = Vec::with_capacity(lora.layers.len() * 2);
    for ((il, t), l) in &lora.layers {
        let stem = format!("blk.{il}.{}.weight", gguf_linear(*t));
        let a = l.a.as_tensor().to_dtype(candle_core::DType::F32)?;
        let mut b = l.b.as_tensor().to_dtype(candle_core::DType::F32)?;
        let n_head = match (c.arch, t) {
            (Arch::Llama, Target::QProj) => Some(c.n_head),
            (Arch::Llama, Target::KProj) => Some(c.n_kv_head),
            _ => None,
        };
        if let Some(n) = n_head {
            let (rows, cols) = b.dims2()?;
            let data = b.flatten_all()?.to_vec1::<f32>()?;
            let p = permute_rows(&data, cols, &permute_qk(n, c.head_dim));
            b = Tensor::from_vec(p, (rows, cols), &Device::Cpu)?;
        }
        tensors.push((
            format!("{stem}.lora_a"),
            QTensor::quantize(&a, GgmlDType::F32)?,
        ));
        tensors.push((
            format!("{stem}.lora_b"),
            QTensor::quantize(&b, GgmlDType::F32)?,
        ));
    }
    write_gguf(&dir.join(FILE), &metadata, &tensors)?;
    report.notes.push(format!(
        "{} adapted linears, rank {r}, adapter.lora.alpha {alpha} (scale {:.4})",
        lora.layers.len(),
        lora.config.scale()
    ));
    Ok(())
}
