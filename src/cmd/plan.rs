//! `dpo-lora plan RECIPE [--set ...] [--device ...] [--memory SIZE] [--json]`: the memory plan of
//! a run (see `train::memory`) on the device it would use and on a GPU in bf16, whether it fits,
//! and what would make it fit. Reads the GGUF header only.

use anyhow::{Context, Result};
use serde_json::json;

use crate::cli::PlanArgs;
use crate::recipe::Recipe;
use crate::train::memory::{self, Compute, Knobs};

pub fn run(a: PlanArgs) -> Result<()> {
    let mut recipe = Recipe::load(&a.recipe, &a.set)?;
    if let Some(d) = a.device {
        recipe.device = d;
    }
    let exec = crate::train::execution(&recipe)?;
    let (f, c) = memory::open_header(&recipe).context("model.path")?;
    let knobs = Knobs::of(&recipe);
    let here = Compute::of(&exec);
    let avail = a
        .memory
        .or_else(|| crate::device::free_memory(&exec.device));
    let (keep, why) =
        memory::choose_keep(recipe.train.checkpoint_keep, &f, &c, &knobs, here, avail);
    let chosen = memory::plan(&f, &c, &knobs, here, keep);
    let mut others = Vec::new();
    for compute in [
        Compute::CpuKernels {
            threads: rayon::current_num_threads(),
        },
        Compute::GPU_BF16,
    ] {
        if compute != here {
            let (k, _) =
                memory::choose_keep(recipe.train.checkpoint_keep, &f, &c, &knobs, compute, None);
            others.push(memory::plan(&f, &c, &knobs, compute, k));
        }
    }
    let fits = avail.map(|m| chosen.predicted_peak_bytes <= m);
    let fixes = match (avail, fits) {
        (Some(m), Some(false)) => memory::suggestions(&f, &c, &knobs, here, m),
        _ => Vec::new(),
    };
    if a.json {
        let v = json!({
            "model": recipe.model.path,
            "compute": here,
            "keep": keep.name(),
            "predicted_peak_bytes": chosen.predicted_peak_bytes,
            "available_bytes": avail,
            "fits": fits,
            "plan": chosen,
            "other_plans": others,
            "suggestions": fixes.iter().map(|(c, p)| json!({"set": c, "predicted_peak_bytes": p})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    for l in chosen.lines() {
        println!("{l}");
    }
    println!("{why}");
    match (avail, fits) {
        (Some(m), Some(true)) => println!("fits: {:.0} MiB available", mib(m)),
        (Some(m), _) => {
            println!("does NOT fit: {:.0} MiB available", mib(m));
            for (c, p) in &fixes {
                println!("  would fit with --set {c}: {:.0} MiB", mib(*p));
            }
        }
        (None, _) => println!("free memory of the device unknown (pass --memory)"),
    }
    for p in &others {
        println!();
        for l in p.lines() {
            println!("{l}");
        }
    }
    Ok(())
}
