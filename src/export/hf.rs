//! The merged model as a Hugging Face folder: `config.json`, `model.safetensors`, the tokenizer
//! files and `generation_config.json`.
//!
//! Owns: the transformers config of each architecture (every dimension from the GGUF metadata),
//! and the tensor walk: dequantize, undo llama.cpp's conversions (see `names`), add the adapter,
//! cast to `--dtype`. Tied embeddings stay tied (no `lm_head.weight`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::merge::{self, Layout};
use super::names::{self, Conversion};
use super::{HfDtype, Report};
use crate::model::{Arch, Config, Lora};
use crate::session::Loaded;

/// Write `config.json`, `model.safetensors` and the tokenizer files of `base` (+ `lora`) into `dir`.
pub fn write(
    base: &Loaded,
    lora: Option<&Lora>,
    dtype: HfDtype,
    dir: &Path,
    report: &mut Report,
) -> Result<()> {
    let c = &base.model.config;
    let cfg = config_json(base, dtype)?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg)? + "\n",
    )
    .context("config.json")?;
    let tensors = merged_tensors(base, lora, dtype)?;
    let n = tensors.len();
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        Some(meta),
        &dir.join("model.safetensors"),
    )
    .context("model.safetensors")?;
    super::tokenizer_files::write_tokenizer_files(&base.file, &base.tok, dir)?;
    report.notes.push(format!(
        "{n} tensors in {} ({}); {}",
        dtype.torch_name(),
        match lora {
            Some(l) => format!("adapter merged into {} linears", l.layers.len()),
            None => "base only".into(),
        },
        conversions(c)
    ));
    Ok(())
}

fn conversions(c: &Config) -> &'static str {
    match c.arch {
        Arch::Llama => "llama Q/K rows un-permuted from llama.cpp's RoPE order",
        Arch::Gemma3 => "gemma norm weights shifted back (GGUF stores 1 + w)",
        _ => "no layout conversions needed",
    }
}

/// Every tensor of the checkpoint, in the base file's order, converted and merged.
fn merged_tensors(
    base: &Loaded,
    lora: Option<&Lora>,
    dtype: HfDtype,
) -> Result<Vec<(String, candle_core::Tensor)>> {
    let f = &base.file;
    let c = &base.model.config;
    let mut out = Vec::new();
    for name in f.tensor_names() {
        let Some(hf) = names::hf_tensor(c, name) else {
            if name == "rope_freqs.weight" {
                bail!(
                    "{}: `rope_freqs.weight` (llama 3 RoPE scaling) has no transformers config equivalent dpo-lora can write; export gguf or peft instead",
                    f.path.display()
                );
            }
            bail!(
                "{}: tensor `{name}` has no Hugging Face name for {}; export gguf or peft instead",
                f.path.display(),
                c.arch.gguf_name()
            );
        };
        let mut t = merge::read_f32(f, name)?;
        match hf.conversion {
            Conversion::None => {}
            Conversion::UnpermuteRows { n_head } => {
                let cols = if t.shape.len() == 1 { 1 } else { t.cols() };
                t.data =
                    names::permute_rows(&t.data, cols, &names::unpermute_qk(n_head, c.head_dim));
            }
            Conversion::NormShift => t.data.iter_mut().for_each(|x| *x -= 1.0),
        }
        if let (Some(lora), Some((il, target))) = (lora, hf.target) {
            if let Some(d) = merge::delta(lora, c, il, target, Layout::Hf)? {
                merge::add_into(&mut t.data, &d, name)?;
            }
        }
        out.push((hf.name, t.to_tensor()?.to_dtype(dtype.dtype())?));
    }
    Ok(out)
}

/// transformers' `config.json` for the base's architecture.
fn config_json(base: &Loaded, dtype: HfDtype) -> Result<Value> {
    let c = &base.model.config;
    let tok = &base.tok;
    let (class, model_type) = match c.arch {
        Arch::Llama => ("LlamaForCausalLM", "llama"),
        Arch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        Arch::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
        Arch::Gemma3 => ("Gemma3ForCausalLM", "gemma3_text"),
    };
    let mut v = json!({
        "architectures": [class],
        "model_type": model_type,
        "vocab_size": c.vocab,
        "hidden_size": c.hidden,
        "intermediate_size": c.ffn,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim,
        "max_position_embeddings": c.context_length,
        "rms_norm_eps": short(c.rms_eps as f32),
        "rope_theta": short(c.rope_base),
        "tie_word_embeddings": base.model.is_tied(),
        "bos_token_id": tok.bos_id(),
        "eos_token_id": tok.eos_id(),
        "torch_dtype": dtype.torch_name(),
        "dtype": dtype.torch_name(),
        "use_cache": true,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
    });
    let m = v.as_object_mut().context("config object")?;
    if c.rope_linear_factor != 1.0 {
        m.insert(
            "rope_scaling".into(),
            json!({"rope_type": "linear", "type": "linear", "factor": c.rope_linear_factor}),
        );
    }
    match c.arch {
        Arch::Llama => {
            m.insert("hidden_act".into(), json!("silu"));
            m.insert("attention_bias".into(), json!(false));
            m.insert("mlp_bias".into(), json!(false));
        }
        Arch::Qwen2 => {
            m.insert("hidden_act".into(), json!("silu"));
            m.insert("use_sliding_window".into(), json!(false));
        }
        Arch::Qwen3 => {
            m.insert("hidden_act".into(), json!("silu"));
            m.insert("attention_bias".into(), json!(false));
            m.insert("use_sliding_window".into(), json!(false));
        }
        Arch::Gemma3 => {
            m.insert("hidden_activation".into(), json!("gelu_pytorch_tanh"));
            m.insert("rope_local_base_freq".into(), json!(c.rope_base_local));
            m.insert(
                "query_pre_attn_scalar".into(),
                json!((1.0 / (c.attn_scale * c.attn_scale)).round() as u64),
            );
            m.insert("sliding_window".into(), json!(c.sliding_window));
            m.insert("sliding_window_pattern".into(), json!(c.global_every));
            let types: Vec<&str> = (0..c.n_layer)
                .map(|il| {
                    if c.is_sliding(il) {
                        "sliding_attention"
                    } else {
                        "full_attention"
                    }
                })
                .collect();
            m.insert("layer_types".into(), json!(types));
            m.insert("attention_bias".into(), json!(false));
            m.insert("final_logit_softcapping".into(), Value::Null);
            m.insert("attn_logit_softcapping".into(), Value::Null);
            m.insert("use_bidirectional_attention".into(), json!(false));
        }
    }
    if let Some(pad) = pad_id(base) {
        m.insert("pad_token_id".into(), json!(pad));
    }
    Ok(v)
}

/// An f32 metadata value as its shortest decimal (1e-5, not 9.999999747378752e-6).
fn short(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .map(|v| json!(v))
        .unwrap_or_else(|_| json!(x))
}

fn pad_id(base: &Loaded) -> Option<u64> {
    base.file
        .opt_usize("tokenizer.ggml.padding_token_id")
        .ok()
        .flatten()
        .map(|x| x as u64)
}

/// The model a written `model.safetensors` holds, loaded for scoring: each tensor read back from
/// the file, put back in llama.cpp's layout (the conversions above undone) and kept at the
/// exported precision (matrices as `dtype`, vectors f32 as the model computes them), through a
/// scratch GGUF in `dir` that is removed once loaded.
pub fn read_back(base: &Loaded, dtype: HfDtype, dir: &Path) -> Result<crate::model::Model> {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::Device;
    let f = &base.file;
    let c = &base.model.config;
    let st = dir.join("model.safetensors");
    let mut written = candle_core::safetensors::load(&st, &Device::Cpu)
        .with_context(|| format!("{}: reading it back", st.display()))?;
    let matrix_type = match dtype {
        HfDtype::Bf16 => GgmlDType::BF16,
        HfDtype::F16 => GgmlDType::F16,
        HfDtype::F32 => GgmlDType::F32,
    };
    let mut tensors = Vec::new();
    for name in f.tensor_names() {
        let hf = names::hf_tensor(c, name)
            .with_context(|| format!("`{name}` has no Hugging Face name"))?;
        let t = written
            .remove(&hf.name)
            .with_context(|| format!("{}: no tensor `{}`", st.display(), hf.name))?;
        let shape = f.tensor_shape(name).context("tensor directory")?.to_vec();
        let mut data = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        match hf.conversion {
            Conversion::None => {}
            Conversion::UnpermuteRows { n_head } => {
                let cols = if shape.len() == 1 {
                    1
                } else {
                    shape[shape.len() - 1]
                };
                data = names::permute_rows(&data, cols, &names::permute_qk(n_head, c.head_dim));
            }
            Conversion::NormShift => data.iter_mut().for_each(|x| *x += 1.0),
        }
        let t = candle_core::Tensor::from_vec(data, shape.as_slice(), &Device::Cpu)?;
        let ty = if shape.len() == 1 {
            GgmlDType::F32
        } else {
            matrix_type
        };
        tensors.push((name.to_string(), QTensor::quantize(&t, ty)?));
    }
    let metadata = super::gguf::copied_metadata(f);
    let scratch = dir.join(".read-back.gguf");
    crate::gguf::write::write_gguf(&scratch, &metadata, &tensors)?;
    drop(tensors);
    let loaded = crate::gguf::GgufFile::open(&scratch)
        .map_err(anyhow::Error::from)
        .and_then(|g| {
            Ok(crate::model::Model::load(
                &g,
                &crate::model::Execution::cpu(),
            )?)
        });
    let _ = std::fs::remove_file(&scratch);
    loaded
}
