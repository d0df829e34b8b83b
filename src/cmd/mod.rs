//! One function per subcommand: validated arguments in, output on stdout, progress on stderr;
//! and how `score` and `generate` load their model and adapter (through `session`, as `run` and
//! `bench` do).

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
use crate::session::{Choices, Loaded, Naming};

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
pub(crate) fn load(a: &crate::cli::ModelArg) -> Result<Loaded> {
    let choices = Choices {
        device: a.device,
        dtype: a.dtype,
        backend: a.backend,
    };
    Loaded::open_on(&a.model, &choices.execution(true, Naming::Flags)?)
}

/// A PEFT adapter for the model, if one was asked for.
pub(crate) fn adapter(
    dir: Option<&std::path::Path>,
    l: &Loaded,
) -> Result<Option<crate::model::Lora>> {
    match dir {
        Some(d) => Ok(Some(l.adapter(d)?)),
        None => Ok(None),
    }
}
