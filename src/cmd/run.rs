//! `dpo-lora run RECIPE.yaml [--set key=value]... [--resume]`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;

use crate::cli::RunArgs;
use crate::recipe::Recipe;
use crate::train::{self, Options, Outcome};

pub fn run(a: RunArgs) -> Result<()> {
    let mut recipe = Recipe::load(&a.recipe, &a.set)?;
    if let Some(d) = a.device {
        recipe.device = d;
    }
    if let Some(b) = a.backend {
        recipe.backend = b;
    }
    // A push that cannot work is found now, not after training.
    if recipe.output.export.iter().any(|e| e.push_to_hub.is_some())
        && crate::export::hub::HubAccess::from_env().token.is_none()
    {
        return Err(crate::export::hub::HubError::NoToken {
            dir: recipe.output.dir.join("export"),
        }
        .into());
    }
    // `--quiet` keeps stderr to what went wrong: the resolved recipe is in the run folder anyway.
    if !a.quiet {
        eprintln!(
            "# resolved recipe ({})\n{}",
            a.recipe.display(),
            recipe.to_yaml().trim_end()
        );
    }
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
        memory: a.memory,
        ignore_plan: a.ignore_plan,
    };
    match train::run(&recipe, &opts)? {
        Outcome::Finished { adapter, steps } => {
            eprintln!(
                "done: {steps} steps; adapter in {}, curves in {}",
                adapter.display(),
                recipe.output.dir.join("plot.png").display()
            );
            export_all(&recipe, &adapter)
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

/// The recipe's `output.export` list, into `<output.dir>/export/<name>`, replacing older ones.
fn export_all(recipe: &Recipe, adapter: &std::path::Path) -> Result<()> {
    if recipe.output.export.is_empty() {
        return Ok(());
    }
    let mut base = crate::session::Loaded::open(&recipe.model.path)?;
    super::export::use_run_template(
        &mut base,
        recipe.data.chat_template.as_deref(),
        &recipe.data.template_kwargs,
    )?;
    let lora = base.adapter(adapter)?;
    let prov =
        crate::export::Provenance::from_run(&recipe.output.dir, super::export::command_line());
    let merged = recipe.output.export.iter().any(|s| {
        matches!(
            s.format,
            crate::export::Format::Gguf | crate::export::Format::Hf
        )
    });
    let held = match merged {
        true => super::export::held_out(
            Some((recipe, recipe.output.dir.as_path())),
            None,
            &base,
            crate::export::fidelity::DEFAULT_PAIRS,
        )?,
        false => None,
    };
    for spec in &recipe.output.export {
        let out = recipe.output.dir.join("export").join(spec.dir_name());
        let opts = crate::export::Options {
            format: spec.format,
            dtype: spec.dtype,
            quant: spec.quant,
            base_only: spec.base_only,
            force: true,
        };
        super::export::export_one(&base, Some(&lora), &prov, &opts, held.as_ref(), &out)?;
        if let Some(repo) = &spec.push_to_hub {
            super::export::push(&out, repo, spec.private)?;
        }
    }
    Ok(())
}
