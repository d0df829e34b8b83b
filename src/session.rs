//! A model loaded for use, the one way every command gets one: the device, activation type and
//! backend as the user chose them ([`Choices`]) turned into an `Execution`, the resolved file,
//! its GGUF directory, the model and its tokenizer ([`Loaded`]), and LoRA adapters on that
//! model, fresh ([`Loaded::fresh_lora`]) or read from a PEFT folder ([`Loaded::adapter`]).
//!
//! `dpo-lora run` (`train::prepare`), `dpo-lora bench` (`bench::measure`) and the commands
//! (`score`, `generate`, `export`) all load through here. What each then reads is its own: a
//! recipe's data sets and reference (`train::sets`, `train::reference`), a bench workload and
//! the reference mode being measured, a records file.

use std::path::{Path, PathBuf};

use crate::device::{ComputeDtype, DeviceChoice};
use crate::gguf::GgufFile;
use crate::model::{peft, BackendChoice, Execution, Lora, LoraConfig, Model};
use crate::source::ModelSource;
use crate::tokenizer::Tokenizer;
use anyhow::{Context, Result};

pub struct Loaded {
    pub path: PathBuf,
    pub file: GgufFile,
    pub model: Model,
    pub tok: Tokenizer,
}

/// Where and how a model computes, as the user chose it: a recipe's `device`, `dtype` and
/// `backend`, or the `--device`, `--dtype` and `--backend` flags.
#[derive(Debug, Clone, Copy)]
pub struct Choices {
    pub device: DeviceChoice,
    pub dtype: ComputeDtype,
    pub backend: BackendChoice,
}

/// How a failure names the choices: as a recipe's keys or as the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    Recipe,
    Flags,
}

impl Choices {
    /// Open the device (saying on stderr which one was picked when `report`) and choose the
    /// activation type and backend for it.
    pub fn execution(&self, report: bool, naming: Naming) -> Result<Execution> {
        let device = match report {
            true => self.device.open_and_report(),
            false => self.device.open(),
        };
        let device = match naming {
            Naming::Recipe => device.context("device")?,
            Naming::Flags => device?,
        };
        let (dtype, backend) = (self.dtype, self.backend);
        Execution::choose(device, dtype, backend).map_err(|e| match naming {
            Naming::Recipe => anyhow::anyhow!("dtype: {dtype:?}, backend: {backend}: {e}"),
            Naming::Flags => anyhow::anyhow!("--dtype {dtype:?} --backend {backend}: {e}"),
        })
    }
}

/// Open a GGUF file (fetching a Hub name first) without loading the weights.
pub fn open_file(spec: &str) -> Result<GgufFile> {
    let path = ModelSource::parse(spec)?.resolve()?;
    Ok(GgufFile::open(&path)?)
}

pub fn tokenizer(f: &GgufFile) -> Result<Tokenizer> {
    Tokenizer::from_gguf(f).with_context(|| format!("{}: tokenizer", f.path.display()))
}
impl Loaded {
    /// The model and its tokenizer, f32 on the CPU kernels; checks they agree on the vocabulary.
    pub fn open(spec: &str) -> Result<Self> {
        Self::open_on(spec, &Execution::cpu())
    }

    /// [`open`](Self::open) with the model loaded as `exec` says (device, dtype, backend).
    pub fn open_on(spec: &str, exec: &Execution) -> Result<Self> {
        let file = open_file(spec)?;
        let tok = tokenizer(&file)?;
        let model = Model::load(&file, exec)?;
        if tok.vocab_size() > model.config.vocab {
            anyhow::bail!(
                "{}: the tokenizer has {} tokens but token_embd.weight has {} rows",
                file.path.display(),
                tok.vocab_size(),
                model.config.vocab
            );
        }
        Ok(Self {
            path: file.path.clone(),
            file,
            model,
            tok,
        })
    }

    /// Fresh adapters on this model, drawn from `seed` (B = 0: the policy starts as the base).
    pub fn fresh_lora(&self, config: LoraConfig, seed: u64) -> Result<Lora> {
        let m = &self.model;
        Ok(Lora::init(
            config,
            m.config.n_layer,
            |il, t| m.linear_dims(il, t),
            seed,
            m.device(),
        )?)
    }

    /// The PEFT adapter in `dir`, checked against this model, on the model's device.
    pub fn adapter(&self, dir: &Path) -> Result<Lora, peft::PeftError> {
        peft::load(dir, &self.model, self.model.device())
    }

    /// A value for PEFT's `base_model_name_or_path`: `general.name`, or the file name.
    pub fn base_name(&self) -> String {
        match self.file.opt_str("general.name") {
            Ok(Some(n)) => n.to_string(),
            _ => self
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }
}
