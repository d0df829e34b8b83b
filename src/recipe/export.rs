//! The `output.export` list and the names of what an export writes: formats, `hf` dtypes,
//! `gguf` quant types, the Hub repo a push goes to. One entry of the list is a format name, or a
//! map with its options:
//!
//! ```yaml
//! output:
//!   dir: runs/x
//!   export:
//!     - peft
//!     - gguf-lora
//!     - {format: gguf, quant: q8_0}
//!     - {format: hf, dtype: f32, push_to_hub: alice/x-dpo, private: true}
//! ```
//! Each lands in `<output.dir>/export/<name>` ([`ExportSpec::dir_name`]) when training finishes.
//!
//! Owns: these values, parsing and printing their names, and the checks that need no model.
//! Does not: export (see `export`).

use std::fmt;
use std::str::FromStr;

use candle_core::quantized::GgmlDType;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// One `output.export` entry as a map (what `Deserialize` for [`ExportSpec`] reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Full {
    format: Format,
    #[serde(default)]
    dtype: HfDtype,
    #[serde(default)]
    quant: QuantChoice,
    #[serde(default)]
    base_only: bool,
    #[serde(default)]
    push_to_hub: Option<String>,
    #[serde(default)]
    private: bool,
}

/// An export to make at the end of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportSpec {
    pub format: Format,
    pub dtype: HfDtype,
    pub quant: QuantChoice,
    pub base_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_to_hub: Option<String>,
    pub private: bool,
}

impl From<Full> for ExportSpec {
    fn from(f: Full) -> Self {
        Self {
            format: f.format,
            dtype: f.dtype,
            quant: f.quant,
            base_only: f.base_only,
            push_to_hub: f.push_to_hub,
            private: f.private,
        }
    }
}

impl ExportSpec {
    pub fn of(format: Format) -> Self {
        Self {
            format,
            dtype: HfDtype::default(),
            quant: QuantChoice::default(),
            base_only: false,
            push_to_hub: None,
            private: false,
        }
    }

    /// The folder under `<output.dir>/export/`: the format, plus what tells two of it apart.
    pub fn dir_name(&self) -> String {
        match self.format {
            Format::Peft | Format::GgufLora => self.format.name().to_string(),
            Format::Hf if self.base_only => format!("hf-base-{}", self.dtype.torch_name()),
            Format::Hf => format!("hf-{}", self.dtype.torch_name()),
            Format::Gguf => format!("gguf-{}", self.quant),
        }
    }

    /// Option combinations that cannot work, as `(key, message)`.
    pub fn check(&self) -> Result<(), String> {
        if self.base_only && self.format != Format::Hf {
            return Err("base_only applies to format hf only".into());
        }
        if let Some(r) = &self.push_to_hub {
            // The words of `HubError::InvalidRepoId`, which `dpo-lora export --push-to-hub` says.
            split_repo_id(r).map_err(|reason| {
                format!("invalid Hub repo id {r:?}: {reason} (expected OWNER/NAME, e.g. alice/my-dpo-adapter)")
            })?;
        }
        Ok(())
    }
}

fn parse_format(s: &str) -> Result<Format, String> {
    <Format as clap::ValueEnum>::from_str(s, false)
        .map_err(|_| format!("unknown export format `{s}`; use peft, hf, gguf or gguf-lora"))
}

impl<'de> Deserialize<'de> for ExportSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExportSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a format name (peft, hf, gguf, gguf-lora) or a map with `format`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ExportSpec, E> {
                parse_format(s).map(ExportSpec::of).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<ExportSpec, A::Error> {
                Full::deserialize(de::value::MapAccessDeserializer::new(m)).map(Into::into)
            }
        }
        d.deserialize_any(V)
    }
}

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// PEFT adapter folder (adapter_config.json + adapter_model.safetensors).
    Peft,
    /// Merged model in the transformers layout.
    Hf,
    /// Merged GGUF for llama.cpp, Ollama, LM Studio.
    Gguf,
    /// The adapter as a llama.cpp LoRA GGUF (`--lora`).
    GgufLora,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Peft => "peft",
            Format::Hf => "hf",
            Format::Gguf => "gguf",
            Format::GgufLora => "gguf-lora",
        }
    }
}

/// `--dtype` of the `hf` export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HfDtype {
    #[default]
    Bf16,
    F16,
    F32,
}

impl HfDtype {
    /// The name transformers uses in config.json.
    pub fn torch_name(self) -> &'static str {
        match self {
            HfDtype::Bf16 => "bfloat16",
            HfDtype::F16 => "float16",
            HfDtype::F32 => "float32",
        }
    }
}

/// `--quant` of the `gguf` export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuantChoice {
    /// Untouched tensors copied as stored; each merged tensor the smallest type, from its own
    /// type in the base upwards, that keeps the adapter's change (see `gguf::keep_type`).
    #[default]
    Keep,
    /// Each merged tensor back to its own type in the base; untouched tensors copied as stored.
    Base,
    /// Every matrix to one type (1-D tensors stay f32, as llama.cpp keeps them).
    All(GgmlDType),
}

/// Names accepted for `--quant`, lowercase as llama.cpp prints them.
const TYPES: [(&str, GgmlDType); 13] = [
    ("f32", GgmlDType::F32),
    ("f16", GgmlDType::F16),
    ("bf16", GgmlDType::BF16),
    ("q4_0", GgmlDType::Q4_0),
    ("q4_1", GgmlDType::Q4_1),
    ("q5_0", GgmlDType::Q5_0),
    ("q5_1", GgmlDType::Q5_1),
    ("q8_0", GgmlDType::Q8_0),
    ("q2_k", GgmlDType::Q2K),
    ("q3_k", GgmlDType::Q3K),
    ("q4_k", GgmlDType::Q4K),
    ("q5_k", GgmlDType::Q5K),
    ("q6_k", GgmlDType::Q6K),
];

pub fn type_name(t: GgmlDType) -> String {
    TYPES
        .iter()
        .find(|(_, d)| *d == t)
        .map(|(n, _)| n.to_string())
        .unwrap_or_else(|| format!("{t:?}").to_lowercase())
}

impl FromStr for QuantChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.to_ascii_lowercase();
        match s.as_str() {
            "base" => return Ok(QuantChoice::Base),
            "keep" => return Ok(QuantChoice::Keep),
            _ => {}
        }
        TYPES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, t)| QuantChoice::All(*t))
            .ok_or_else(|| {
                let names: Vec<&str> = TYPES.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown quant type `{s}`; use keep, base or one of {}",
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for QuantChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantChoice::Keep => f.write_str("keep"),
            QuantChoice::Base => f.write_str("base"),
            QuantChoice::All(t) => f.write_str(&type_name(*t)),
        }
    }
}

impl Serialize for QuantChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for QuantChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Check `OWNER/NAME` against the Hub's rules (those of `huggingface_hub.validate_repo_id`,
/// ASCII only): letters, digits, `-`, `_`, `.`; no `--` or `..`; no leading or trailing `-`
/// or `.`; at most 96 characters per part; the name not ending in `.git`. `Err` says why not.
pub fn split_repo_id(repo_id: &str) -> Result<(&str, &str), String> {
    let bad = |reason: &str| reason.to_string();
    let (owner, name) = repo_id
        .split_once('/')
        .ok_or_else(|| bad("missing the OWNER/ part"))?;
    if name.contains('/') {
        return Err(bad("more than one '/'"));
    }
    for (what, part) in [("owner", owner), ("name", name)] {
        if part.is_empty() {
            return Err(bad(&format!("the {what} is empty")));
        }
        if part.len() > 96 {
            return Err(bad(&format!("the {what} is longer than 96 characters")));
        }
        if let Some(c) = part
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
        {
            return Err(bad(&format!(
                "{c:?} is not allowed (letters, digits, '-', '_', '.')"
            )));
        }
        if part.contains("--") || part.contains("..") {
            return Err(bad("'--' and '..' are not allowed"));
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
            return Err(bad(&format!(
                "the {what} cannot start or end with '-' or '.'"
            )));
        }
    }
    if name.ends_with(".git") {
        return Err(bad("the name cannot end with .git"));
    }
    Ok((owner, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Vec<ExportSpec>, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn names_and_maps() {
        let v = parse("- peft\n- {format: gguf, quant: q8_0}\n- {format: hf, base_only: true}\n")
            .unwrap();
        assert_eq!(v[0], ExportSpec::of(Format::Peft));
        assert_eq!(v[1].dir_name(), "gguf-q8_0");
        assert_eq!(v[2].dir_name(), "hf-base-bfloat16");
        assert!(parse("- onnx\n")
            .unwrap_err()
            .contains("unknown export format `onnx`"));
        assert!(parse("- {format: gguf, qaunt: q8_0}\n")
            .unwrap_err()
            .contains("qaunt"));
        assert!(parse("- {format: gguf, quant: q9}\n")
            .unwrap_err()
            .contains("q9"));
        assert!(ExportSpec {
            base_only: true,
            ..ExportSpec::of(Format::Gguf)
        }
        .check()
        .is_err());
    }
}
