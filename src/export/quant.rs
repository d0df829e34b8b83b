//! Tensor types of the exports: `--dtype` for the Hugging Face folder, `--quant` for merged GGUF.
//!
//! Owns: parsing the names users type, llama.cpp's fallback when a k-quant does not fit a row
//! length (k-quants need rows that are multiples of 256), and `general.file_type` for a file
//! quantized to one type.

use std::fmt;
use std::str::FromStr;

use candle_core::quantized::GgmlDType;
use candle_core::DType;
use serde::{Deserialize, Serialize};

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
    pub fn dtype(self) -> DType {
        match self {
            HfDtype::Bf16 => DType::BF16,
            HfDtype::F16 => DType::F16,
            HfDtype::F32 => DType::F32,
        }
    }

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
    /// Each merged tensor back to its own type in the base; untouched tensors copied as stored.
    #[default]
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
        if s == "base" {
            return Ok(QuantChoice::Base);
        }
        TYPES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, t)| QuantChoice::All(*t))
            .ok_or_else(|| {
                let names: Vec<&str> = TYPES.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown quant type `{s}`; use base or one of {}",
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for QuantChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
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

/// The type a matrix with rows of `cols` values gets when `want` is asked for: `want` if its
/// block fits, else llama.cpp's fallback (k-quants need 256-value blocks).
pub fn fit(want: GgmlDType, cols: usize) -> GgmlDType {
    if cols.is_multiple_of(want.block_size()) {
        return want;
    }
    let fallback = match want {
        GgmlDType::Q2K | GgmlDType::Q3K => GgmlDType::Q4_0,
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        _ => GgmlDType::F16,
    };
    if cols.is_multiple_of(fallback.block_size()) {
        fallback
    } else {
        GgmlDType::F16
    }
}

/// llama.cpp's `general.file_type` (`llama_ftype`) for a file of one type.
pub fn file_type(t: GgmlDType) -> u32 {
    match t {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q8_0 => 7,
        GgmlDType::Q5_0 => 8,
        GgmlDType::Q5_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 11,
        GgmlDType::Q4K => 14,
        GgmlDType::Q5K => 16,
        GgmlDType::Q6K => 18,
        GgmlDType::BF16 => 32,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_falls_back_like_llama_cpp() {
        assert_eq!("base".parse::<QuantChoice>(), Ok(QuantChoice::Base));
        assert_eq!(
            "Q8_0".parse::<QuantChoice>(),
            Ok(QuantChoice::All(GgmlDType::Q8_0))
        );
        assert!("q9_9".parse::<QuantChoice>().unwrap_err().contains("q4_k"));
        assert_eq!(fit(GgmlDType::Q4K, 2048), GgmlDType::Q4K);
        assert_eq!(fit(GgmlDType::Q4K, 640), GgmlDType::Q5_0);
        assert_eq!(fit(GgmlDType::Q6K, 576), GgmlDType::Q8_0);
        assert_eq!(fit(GgmlDType::Q4_0, 48), GgmlDType::F16);
    }
}
