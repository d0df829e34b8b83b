//! One function per subcommand: validated arguments in, output on stdout, progress on stderr.

mod bench;
mod export;
mod generate;
mod inspect;
mod plan;
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
        Command::Plan(a) => plan::run(a),
    }
}

pub(crate) use crate::session::{open_file as open, tokenizer};

/// The model (on the device asked for) and its tokenizer.
pub(crate) fn load(a: &crate::cli::ModelArg) -> Result<(GgufFile, Model, Tokenizer)> {
    let device = a.device.open_and_report()?;
    let exec = crate::model::Execution::choose(device, a.dtype, a.backend)
        .map_err(|e| anyhow::anyhow!("--dtype {:?} --backend {}: {e}", a.dtype, a.backend))?;
    let l = crate::session::Loaded::open_on(&a.model, &exec)?;
    Ok((l.file, l.model, l.tok))
}

/// A PEFT adapter for `model`, if one was asked for.
pub(crate) fn adapter(
    dir: Option<&std::path::Path>,
    model: &Model,
) -> Result<Option<crate::model::Lora>> {
    match dir {
        Some(d) => Ok(Some(crate::model::peft::load(d, model, model.device())?)),
        None => Ok(None),
    }
}
