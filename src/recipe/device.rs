//! Where and how a run computes, as the recipe (and `--device`, `--dtype`, `--backend`) names
//! it: `device: auto|cpu|cuda[:N]|metal`, `dtype: auto|f32|bf16|f16`, `backend:
//! auto|cpu-kernels|candle`.
//!
//! Owns: these values, their names and parsing. Does not: open a device or resolve `auto` (see
//! `device`, `model::backend`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A device as the user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first of CUDA device 0, Metal, the CPU that this build and machine have.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
    Metal,
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            "metal" | "mps" => Ok(Self::Metal),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(format!(
                    "unknown device `{s}`; use auto, cpu, cuda, cuda:N or metal"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal => f.write_str("metal"),
        }
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The activation type of the forward: `dtype: auto|f32|bf16|f16`. The log-softmax, the loss,
/// the LoRA master weights and the optimizer state are f32 whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDtype {
    /// bf16 on CUDA, f32 on the CPU (its kernels are f32) and on Metal (untested there).
    #[default]
    Auto,
    F32,
    Bf16,
    F16,
}

/// The backend as a user names it: `auto` (the CPU kernels for f32 on the CPU, candle's ops
/// elsewhere), `cpu-kernels` or `candle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BackendChoice {
    #[default]
    Auto,
    CpuKernels,
    Candle,
}

impl std::fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::CpuKernels => "cpu-kernels",
            Self::Candle => "candle",
        })
    }
}
