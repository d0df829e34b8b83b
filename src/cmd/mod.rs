//! One function per subcommand: validated arguments in, output on stdout, progress on stderr.

mod bench;
mod export;
mod generate;
mod inspect;
mod run;
mod score;
mod synth;
mod tokenize;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::gguf::GgufFile;
use crate::model::Model;
use crate::tokenizer::Tokenizer;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Score(a) => score::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Export(a) => export::run(a),
        Command::Bench(a) => bench::run(a),
    }
}

pub(crate) use crate::session::{open_file as open, tokenizer};

/// The model and its tokenizer, on the CPU.
pub(crate) fn load(model: &str) -> Result<(GgufFile, Model, Tokenizer)> {
    let l = crate::session::Loaded::open(model)?;
    Ok((l.file, l.model, l.tok))
}

/// A PEFT adapter for `model`, if one was asked for.
pub(crate) fn adapter(
    dir: Option<&std::path::Path>,
    model: &Model,
) -> Result<Option<crate::model::Lora>> {
    match dir {
        Some(d) => Ok(Some(crate::model::peft::load(
            d,
            model,
            &candle_core::Device::Cpu,
        )?)),
        None => Ok(None),
    }
}
