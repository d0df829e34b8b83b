//! The merged model as one GGUF file, for llama.cpp / Ollama / LM Studio.
//!
//! Owns: copying the base's metadata and tensors, merging the adapter into each adapted linear
//! (in llama.cpp's row order), and re-quantizing: `--quant keep` (untouched tensors copied byte
//! for byte, each merged tensor the smallest type from its base type upwards that keeps the
//! adapter's change, [`KEEP_GAIN`]), `--quant base` (merged tensors back to their base type) or
//! every matrix to one type. What re-quantizing costs the adapter is measured per tensor
//! ([`RequantStats`]); what it costs the behaviour is `fidelity`'s.

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

/// `--quant keep` takes the first type of a merged tensor's ladder whose re-quantization keeps
/// at least this share of the adapter's change to it, along the adapter's direction
/// ([`RequantStats::gain`]). Checked against behaviour (`fidelity`) in docs/export.md's table.
pub const KEEP_GAIN: f64 = 0.9;

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
    let mut metadata = copied_metadata(f);
    if let QuantChoice::All(t) = q {
        // One type for every matrix; `keep` and `base` mix types, as the base file may.
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
    let mut chosen: std::collections::BTreeMap<String, usize> = Default::default();
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
        let cols = *shape.last().unwrap_or(&1);
        let qt = match (delta, q) {
            (None, QuantChoice::Keep | QuantChoice::Base) => merge::read_q(f, tname)?,
            (None, QuantChoice::All(_)) if shape.len() == 1 => merge::read_q(f, tname)?,
            (None, QuantChoice::All(t)) => {
                let w = merge::read_f32(f, tname)?;
                requantize(&w.to_tensor()?, t, tname, &mut fallbacks)?
            }
            (Some(d), q) => {
                let w = merge::read_f32(f, tname)?;
                let mut merged = w.data.clone();
                merge::add_into(&mut merged, &d, tname)?;
                let m = candle_core::Tensor::from_vec(
                    merged,
                    shape.as_slice(),
                    &candle_core::Device::Cpu,
                )?;
                let tries = match q {
                    QuantChoice::Keep => quant::ladder(stored, cols),
                    QuantChoice::Base => vec![stored],
                    QuantChoice::All(t) => vec![t],
                };
                let mut last = None;
                for (i, &t) in tries.iter().enumerate() {
                    let qt = requantize(&m, t, tname, &mut fallbacks)?;
                    let back = qt
                        .dequantize(&candle_core::Device::Cpu)?
                        .flatten_all()?
                        .to_vec1::<f32>()?;
                    let mut one = RequantStats::default();
                    one.add(&w.data, &d, &back);
                    last = Some((qt, one));
                    if i + 1 == tries.len() || one.gain() >= KEEP_GAIN {
                        break;
                    }
                }
                let (qt, one) = last.context("no type to try")?;
                stats.merge(&one);
                *chosen.entry(quant::type_name(qt.dtype())).or_default() += 1;
                qt
            }
        };
        tensors.push((tname.to_string(), qt));
    }
    write_gguf(&dir.join(FILE), &metadata, &tensors)?;
    let size = std::fs::metadata(dir.join(FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    let types: Vec<String> = chosen.iter().map(|(t, n)| format!("{n} {t}")).collect();
    report.notes.push(format!(
        "quant {q}: merged tensors as {}; {}",
        types.join(", "),
        stats.summary()
    ));
    report.notes.push(format!(
        "size {:.1} MB, {:.2}x the base file ({:.1} MB)",
        size as f64 / 1e6,
        size as f64 / f.file_size.max(1) as f64,
        f.file_size as f64 / 1e6
    ));
    if !fallbacks.is_empty() {
        fallbacks.sort();
        fallbacks.dedup();
        report.notes.push(format!(
            "{} tensors took a fallback type (k-quants need rows of 256): {}",
            fallbacks.len(),
            fallbacks.join(", ")
        ));
    }
    Ok(())
}

/// The base's metadata to copy into a new GGUF: all but `general.alignment` (the writer uses
/// 32-byte alignment; a copied different value would misplace every tensor), `general.*` first,
/// then the rest, each sorted (stable files, and llama.cpp's usual order).
pub fn copied_metadata(f: &crate::gguf::GgufFile) -> Vec<(String, Value)> {
    let mut metadata: Vec<(String, Value)> = f
        .metadata()
        .iter()
        .filter(|(k, _)| k.as_str() != "general.alignment")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.sort_by(|(a, _), (b, _)| {
        (!a.starts_with("general."), a).cmp(&(!b.starts_with("general."), b))
    });
    metadata
}

/// The written `model.gguf` in `dir`, loaded for scoring.
pub fn read_back(dir: &Path) -> Result<crate::model::Model> {
    let g = crate::gguf::GgufFile::open(dir.join(FILE))?;
    Ok(crate::model::Model::load(
        &g,
        &crate::model::Execution::cpu(),
    )?)
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
