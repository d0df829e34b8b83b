//! `dpo-lora run RECIPE.yaml [--set key=value]... [--resume]`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;

use crate::cli::RunArgs;
use crate::recipe::Recipe;
use crate::train::{self, Options, Outcome};

pub fn run(a: RunArgs) -> Result<()> {
    let recipe = Recipe::load(&a.recipe, &a.set)?;
    eprintln!(
        "# resolved recipe ({})\n{}",
        a.recipe.display(),
        recipe.to_yaml().trim_end()
    );
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    // A second Ctrl-C while the checkpoint is written is left to the default handler's absence:
    // the first one only asks the loop to stop after the current step.
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nstill writing the checkpoint; please wait");
        } else {
            eprintln!("\ninterrupt: stopping after this step and writing a checkpoint");
        }
    });
    let opts = Options {
        resume: a.resume,
        interrupt,
        progress: !a.quiet,
    };
    match train::run(&recipe, &opts)? {
        Outcome::Finished { adapter, steps } => {
            eprintln!(
                "done: {steps} steps; adapter in {}, curves in {}",
                adapter.display(),
                recipe.output.dir.join("plot.png").display()
            );
            Ok(())
        }
        Outcome::Interrupted { checkpoint, step } => {
            eprintln!(
                "interrupted after step {step}; checkpoint {}; continue with --resume",
                checkpoint.display()
            );
            std::process::exit(130);
        }
    }
}
