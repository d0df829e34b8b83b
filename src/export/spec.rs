//! One entry of a recipe's `output.export` list: a format name, or a map with its options.
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

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::{Format, HfDtype, QuantChoice};

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
            super::hub::split_repo_id(r).map_err(|e| e.to_string())?;
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
