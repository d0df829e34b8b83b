//! The merged model as one GGUF file, for llama.cpp / Ollama / LM Studio.
//!
//! Owns: copying the base's metadata and tensors, merging the adapter into each adapted linear
//! (in llama.cpp's row order), and re-quantizing: to the tensor's own base type (`--quant base`,
//! untouched tensors copied byte for byte) or every matrix to one type. What re-quantizing costs
//! the adapter is measured ([`RequantStats`]) and reported.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};

use super::merge::{self, Layout, RequantStats};
use super::quant::{self, QuantChoice};
use super::Report;
use crate::gguf::write::write_gguf;
use crate::model::{Lora, Target};
use crate::session::Loaded;

/// Below this cosine between the merged change and the adapter, the export warns that the
/// adapter did not survive re-quantization (measured: Q4_1 0.07, Q4_K_M mix 0.09, Q8_0 0.4-0.9).
const LOST: f64 = 0.5;

/// The file name inside the export folder.
pub const FILE: &str = "model.gguf";

pub fn write(
    base: &Loaded,
    lora: &Lora,
    q: QuantChoice,
    dir: &Path,
    report: &mut Report,
) -> Result<()> {
    let f = &base.file;
    let c = &base.model.config;
    let mut metadata: Vec<(String, Value)> = f
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        // candle writes 32-byte alignment; a copied different value would misplace every tensor.
        .filter(|(k, _)| k != "general.alignment")
        .collect();
    // general.* first, then the rest, each sorted: stable files, and llama.cpp's usual order.
    metadata.sort_by(|(a, _), (b, _)| {
        (!a.starts_with("general."), a).cmp(&(!b.starts_with("general."), b))
    });
    if let QuantChoice::All(t) = q {
        set(
            &mut metadata,
            "general.file_type",
            Value::U32(quant::file_type(t)),
        );
    }
    // The chat template the run used (the model's, or `data.chat_template`'s).
    if let Some(t) = base.tok.chat_template() {
        set(
            &mut metadata,
            "tokenizer.chat_template",
            Value::String(t.source().to_string()),
        );
    }
    let name = f.opt_str("general.name")?.unwrap_or("model").to_string();
    set(
        &mut metadata,
        "general.name",
        Value::String(format!("{name} (dpo-lora merged)")),
    );

    let mut stats = RequantStats::default();
    let mut fallbacks: Vec<String> = Vec::new();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for tname in f.tensor_names() {
        let target = linear_of(tname, c.n_layer);
        let delta = match target {
            Some((il, t)) => merge::delta(lora, c, il, t, Layout::Gguf)?,
            None => None,
        };
        let stored = f
            .content
            .tensor_infos
            .get(tname)
            .context("tensor directory")?
            .ggml_dtype;
        let shape = f.tensor_shape(tname).context("tensor directory")?.to_vec();
        let want = match (q, shape.len()) {
            (QuantChoice::Base, _) | (_, 1) => stored,
            (QuantChoice::All(t), _) => t,
        };
        let qt = match delta {
            None if want == stored => merge::read_q(f, tname)?,
            None => {
                let w = merge::read_f32(f, tname)?;
                requantize(&w.to_tensor()?, want, tname, &mut fallbacks)?
            }
            Some(d) => {
                let w = merge::read_f32(f, tname)?;
                let mut merged = w.data.clone();
                merge::add_into(&mut merged, &d, tname)?;
                let m = candle_core::Tensor::from_vec(
                    merged,
                    shape.as_slice(),
                    &candle_core::Device::Cpu,
                )?;
                let qt = requantize(&m, want, tname, &mut fallbacks)?;
                let back = qt
                    .dequantize(&candle_core::Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                stats.add(&w.data, &d, &back);
                qt
            }
        };
        tensors.push((tname.to_string(), qt));
    }
    write_gguf(&dir.join(FILE), &metadata, &tensors)?;
    report.notes.push(format!("quant {q}: {}", stats.summary()));
    if stats.tensors > 0 && stats.retained_cosine() < LOST {
        let finer = match q {
            QuantChoice::All(GgmlDType::Q8_0) => "f16 or f32",
            _ => "q8_0 or f16",
        };
        report.notes.push(format!(
            "warning: re-quantizing to {q} loses most of the adapter (it is smaller than the quantization step); for the trained behaviour use --quant {finer}, or --format gguf-lora"
        ));
    }
    if !fallbacks.is_empty() {
        report.notes.push(format!(
            "{} tensors took a fallback type (k-quants need rows of 256): {}",
            fallbacks.len(),
            fallbacks.join(", ")
        ));
    }
    Ok(())
}

fn requantize(
    w: &candle_core::Tensor,
    want: GgmlDType,
    name: &str,
    fallbacks: &mut Vec<String>,
) -> Result<QTensor> {
    let cols = *w.dims().last().unwrap_or(&1);
    let t = quant::fit(want, cols);
    if t != want {
        fallbacks.push(format!("{name} {}", quant::type_name(t)));
    }
    QTensor::quantize(w, t)
        .with_context(|| format!("quantizing `{name}` to {}", quant::type_name(t)))
}

/// `(layer, target)` of a linear weight named in llama.cpp's scheme.
pub fn linear_of(name: &str, n_layer: usize) -> Option<(usize, Target)> {
    let rest = name.strip_prefix("blk.")?;
    let (il, rest) = rest.split_once('.')?;
    let il: usize = il.parse().ok()?;
    if il >= n_layer {
        return None;
    }
    let stem = rest.strip_suffix(".weight")?;
    Target::ALL
        .into_iter()
        .find(|t| super::names::gguf_linear(*t) == stem)
        .map(|t| (il, t))
}

fn set(md: &mut Vec<(String, Value)>, key: &str, v: Value) {
    match md.iter_mut().find(|(k, _)| k == key) {
        Some((_, old)) => *old = v,
        None => md.push((key.to_string(), v)),
    }
}
