//! A model loaded for use: the resolved file, its GGUF directory, the model and its tokenizer.

use std::path::PathBuf;

use crate::gguf::GgufFile;
use crate::model::{Execution, Model};
use crate::source::ModelSource;
use crate::tokenizer::Tokenizer;
use anyhow::{Context, Result};

pub struct Loaded {
    pub path: PathBuf,
    pub file: GgufFile,
    pub model: Model,
    pub tok: Tokenizer,
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
