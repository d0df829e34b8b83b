//! One function per subcommand: validated arguments in, output on stdout, progress on stderr.

mod generate;
mod inspect;
mod score;
mod tokenize;

use anyhow::{Context, Result};
use candle_core::Device;

use crate::cli::{Cli, Command};
use crate::gguf::GgufFile;
use crate::model::Model;
use crate::source::ModelSource;
use crate::tokenizer::Tokenizer;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Score(a) => score::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Inspect(a) => inspect::run(a),
    }
}

/// Open a model file (fetching a Hub name first).
pub(crate) fn open(model: &str) -> Result<GgufFile> {
    let path = ModelSource::parse(model)?.resolve()?;
    Ok(GgufFile::open(&path)?)
}

pub(crate) fn tokenizer(f: &GgufFile) -> Result<Tokenizer> {
    Tokenizer::from_gguf(f).with_context(|| format!("{}: tokenizer", f.path.display()))
}

/// The model and its tokenizer, on the CPU.
pub(crate) fn load(model: &str) -> Result<(GgufFile, Model, Tokenizer)> {
    let f = open(model)?;
    let tok = tokenizer(&f)?;
    let m = Model::load(&f, &Device::Cpu)?;
    if tok.vocab_size() > m.config.vocab {
        anyhow::bail!(
            "{}: the tokenizer has {} tokens but token_embd.weight has {} rows",
            f.path.display(),
            tok.vocab_size(),
            m.config.vocab
        );
    }
    Ok((f, m, tok))
}
