//! PEFT adapter folders: `adapter_config.json` + `adapter_model.safetensors`, read and written.
//!
//! Owns: PEFT's file layout and tensor names
//! (`base_model.model.model.layers.{i}.{self_attn|mlp}.{q_proj..}.lora_{A|B}.weight`), a
//! `dpo_lora.json` sidecar naming the base it was trained on, and the checks that an adapter fits
//! a model. Because the base is loaded in Hugging Face's row order (llama Q/K un-permuted), the
//! tensors are written as trained: the export is a rename.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::lora::{Lora, LoraConfig, LoraLinear, Target};
use super::Model;

#[derive(Debug, thiserror::Error)]
pub enum PeftError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("{path}: the adapter does not fit this model: {msg}")]
    Mismatch { path: PathBuf, msg: String },
}

/// The subset of PEFT's `LoraConfig` that dpo-lora writes and reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    pub task_type: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: Vec<String>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default = "none_str")]
    pub bias: String,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub inference_mode: bool,
    #[serde(default)]
    pub use_dora: bool,
}

fn none_str() -> String {
    "none".into()
}

/// What dpo-lora records beside PEFT's files: the base the adapter was trained on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaseInfo {
    pub architecture: String,
    pub n_layer: usize,
    pub hidden: usize,
    pub vocab: usize,
    #[serde(default)]
    pub base_file: Option<String>,
}

impl BaseInfo {
    pub fn of(model: &Model, base_file: Option<&Path>) -> Self {
        let c = &model.config;
        Self {
            architecture: c.arch.gguf_name().to_string(),
            n_layer: c.n_layer,
            hidden: c.hidden,
            vocab: c.vocab,
            base_file: base_file
                .and_then(|p| p.file_name())
                .map(|f| f.to_string_lossy().into_owned()),
        }
    }
}

pub fn tensor_name(layer: usize, target: Target, ab: char) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{}.lora_{ab}.weight",
        target.hf_parent(),
        target.hf_name()
    )
}

/// Write `lora` as a PEFT folder at `dir`, atomically (see [`crate::atomic::Staging`]): an old
/// `dir` is replaced only once the new one is complete.
pub fn save(
    lora: &Lora,
    dir: &Path,
    base: &BaseInfo,
    base_model_name: Option<&str>,
) -> Result<(), PeftError> {
    let ferr = |e: anyhow::Error| PeftError::File {
        path: dir.to_path_buf(),
        msg: format!("{e:#}"),
    };
    let staging = crate::atomic::Staging::new(dir, true).map_err(ferr)?;
    write_files(lora, staging.dir(), base, base_model_name)?;
    staging.commit().map_err(ferr)
}

/// Write the PEFT files of `lora` into the existing folder `dir` (not atomic: see [`save`]).
pub fn write_files(
    lora: &Lora,
    dir: &Path,
    base: &BaseInfo,
    base_model_name: Option<&str>,
) -> Result<(), PeftError> {
    let ferr = |msg: String| PeftError::File {
        path: dir.to_path_buf(),
        msg,
    };
    let c = &lora.config;
    let cfg = AdapterConfig {
        peft_type: "LORA".into(),
        task_type: Some("CAUSAL_LM".into()),
        r: c.rank,
        lora_alpha: c.alpha,
        lora_dropout: c.dropout,
        target_modules: c.targets.iter().map(|t| t.hf_name().to_string()).collect(),
        use_rslora: c.use_rslora,
        base_model_name_or_path: base_model_name.map(str::to_string),
        bias: "none".into(),
        fan_in_fan_out: false,
        inference_mode: true,
        use_dora: false,
    };
    let write = |file: &str, text: String| {
        std::fs::write(dir.join(file), text).map_err(|e| ferr(format!("{file}: {e}")))
    };
    write(
        "adapter_config.json",
        serde_json::to_string_pretty(&cfg).unwrap_or_default(),
    )?;
    write(
        "dpo_lora.json",
        serde_json::to_string_pretty(base).unwrap_or_default(),
    )?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for ((il, t), l) in &lora.layers {
        tensors.insert(tensor_name(*il, *t, 'A'), l.a.as_tensor().clone());
        tensors.insert(tensor_name(*il, *t, 'B'), l.b.as_tensor().clone());
    }
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors"))
        .map_err(|e| ferr(format!("adapter_model.safetensors: {e}")))
}

/// Read a PEFT folder written by dpo-lora or PEFT and check it fits `model`.
pub fn load(dir: &Path, model: &Model, device: &Device) -> Result<Lora, PeftError> {
    let ferr = |msg: String| PeftError::File {
        path: dir.to_path_buf(),
        msg,
    };
    let mism = |msg: String| PeftError::Mismatch {
        path: dir.to_path_buf(),
        msg,
    };
    let cfg_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
        ferr(format!(
            "adapter_config.json: {e} (is this a PEFT adapter folder?)"
        ))
    })?;
    let cfg: AdapterConfig =
        serde_json::from_str(&text).map_err(|e| ferr(format!("adapter_config.json: {e}")))?;
    if cfg.peft_type != "LORA" || cfg.use_dora || cfg.bias != "none" || cfg.fan_in_fan_out {
        return Err(ferr(format!("only plain LoRA adapters are supported (peft_type LORA, bias none, no DoRA); found peft_type {}", cfg.peft_type)));
    }
    if cfg.r == 0 {
        return Err(ferr("adapter_config.json: r must be at least 1".into()));
    }
    let mut targets = Vec::new();
    for name in &cfg.target_modules {
        let t = Target::from_hf_name(name).ok_or_else(|| mism(format!("target module `{name}` is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj")))?;
        targets.push(t);
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("dpo_lora.json")) {
        if let Ok(info) = serde_json::from_str::<BaseInfo>(&text) {
            let here = BaseInfo::of(model, None);
            if info.architecture != here.architecture
                || info.n_layer != here.n_layer
                || info.hidden != here.hidden
            {
                return Err(mism(format!(
                    "trained on a {} model ({} layers, hidden {}), this one is {} ({} layers, hidden {})",
                    info.architecture, info.n_layer, info.hidden, here.architecture, here.n_layer, here.hidden
                )));
            }
        }
    }
    let st = dir.join("adapter_model.safetensors");
    let tensors = candle_core::safetensors::load(&st, device).map_err(|e| {
        ferr(format!(
            "adapter_model.safetensors: {}",
            e.to_string().lines().next().unwrap_or("")
        ))
    })?;
    let config = LoraConfig {
        rank: cfg.r,
        alpha: cfg.lora_alpha,
        dropout: cfg.lora_dropout,
        targets: targets.clone(),
        use_rslora: cfg.use_rslora,
    };
    let mut layers = BTreeMap::new();
    let mut used = 0;
    for il in 0..model.config.n_layer {
        for &t in &targets {
            let (i, o) = model.linear_dims(il, t);
            let get = |ab: char, want: (usize, usize)| -> Result<Tensor, PeftError> {
                let name = tensor_name(il, t, ab);
                let x = tensors
                    .get(&name)
                    .ok_or_else(|| mism(format!("tensor {name} is missing")))?;
                if x.dims() != [want.0, want.1] {
                    return Err(mism(format!(
                        "{name} has shape {:?}, this model needs {:?} (rank {})",
                        x.dims(),
                        [want.0, want.1],
                        cfg.r
                    )));
                }
                x.to_dtype(candle_core::DType::F32)
                    .map_err(|e| ferr(e.to_string()))
            };
            let a = get('A', (cfg.r, i))?;
            let b = get('B', (o, cfg.r))?;
            used += 2;
            let var = |x: Tensor| Var::from_tensor(&x).map_err(|e| ferr(e.to_string()));
            layers.insert(
                (il, t),
                LoraLinear {
                    a: var(a)?,
                    b: var(b)?,
                    scale: config.scale(),
                },
            );
        }
    }
    if used != tensors.len() {
        let extra: Vec<&String> = tensors
            .keys()
            .filter(|k| {
                !layers.keys().any(|(il, t)| {
                    [tensor_name(*il, *t, 'A'), tensor_name(*il, *t, 'B')].contains(k)
                })
            })
            .take(3)
            .collect();
        return Err(mism(format!(
            "{} tensors do not belong to any layer of this model, e.g. {extra:?}",
            tensors.len() - used
        )));
    }
    Ok(Lora { config, layers })
}
