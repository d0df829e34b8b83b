//! Everything a run needs before its first step, in the order it is done: the output folder
//! checked, the device opened, the memory plan (from the GGUF header alone, so a run that cannot
//! fit stops in seconds), the model and tokenizer loaded, the pairs read, the plan again with
//! the data's own lengths, the adapters (fresh, or `lora.init_from`), the loss and the reference.
//!
//! Owns: [`Prepared`] and [`prepare`], the memory preflight, the output folder's checks, the
//! reference's precompute (through `reference`'s cache). Does not: resume (see `resume`) or
//! step (see the loop in `train`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::reference::{self, Precomputed};
use super::{checkpoint, memory, progress_bar, sets, Options};
use crate::data::batch::{Limits, Order, PairSet, TrainPair};
use crate::model::peft::BaseInfo;
use crate::model::{Execution, Lora, LoraConfig};
use crate::recipe::{Recipe, Reference, RunSpec};
use crate::session::{Choices, Loaded, Naming};

/// Everything a step needs, prepared once.
pub struct Prepared<'a> {
    /// The recipe resolved: its sections, the loss, the reference.
    pub spec: RunSpec<'a>,
    pub loaded: Loaded,
    pub train: PairSet,
    pub eval: Option<PairSet>,
    /// The reference, its precomputed values read or computed.
    pub reference: Reference<Precomputed>,
    /// The frozen `lora.init_from` adapter the reference runs with under
    /// [`Reference::AdaptersOff`] (`None` otherwise).
    pub frozen: Option<Lora>,
    pub base: BaseInfo,
    /// The adapters being trained.
    pub lora: Lora,
    /// `batch_size · grad_accum`.
    pub pairs_per_step: usize,
    /// Optimizer steps of the whole run (`max_steps`, or `epochs` of the training pairs).
    pub total_steps: usize,
}

/// Check the output folder, open the device, plan the memory, load the model, read the data,
/// make the adapters and the reference.
pub fn prepare<'a>(spec: RunSpec<'a>, opts: &Options) -> Result<Prepared<'a>> {
    let recipe = spec.recipe;
    let out_dir = &recipe.output.dir;
    prepare_output(out_dir, opts.resume)?;
    let exec = execution(recipe)?;
    // The memory plan, from the GGUF header alone: a run that cannot fit stops here, in seconds.
    let (keep, why) = preflight(recipe, &exec, opts)?;
    let mut loaded = Loaded::open_on(&recipe.model.path, &exec).context("model.path")?;
    loaded
        .model
        .set_checkpointing(recipe.train.gradient_checkpointing);
    loaded
        .tok
        .set_chat_template(
            recipe.data.chat_template.as_deref(),
            &recipe.data.template_kwargs,
        )
        .map_err(|e| anyhow::anyhow!("data.chat_template: {e}"))?;
    let sets::RunData {
        train,
        eval,
        files: data_files,
    } = sets::Reader {
        loaded: &loaded,
        seed: recipe.train.seed,
        cache_dir: Some(out_dir),
        progress: opts.progress,
    }
    .load(&recipe.data)?;
    if recipe.train.gradient_checkpointing {
        loaded.model.set_checkpoint_keep(keep.keep());
        eprintln!("{why}");
    }
    let t = &recipe.train;
    let pairs_per_step = t.batch_size * t.grad_accum;
    let by_epochs = t.epochs.map(|e| {
        ((e * train.pairs.len() as f64) / pairs_per_step as f64)
            .ceil()
            .max(1.0) as usize
    });
    let total_steps = match (t.max_steps, by_epochs) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => bail!("train.max_steps or train.epochs is needed"),
    };
    plan_for_data(
        recipe,
        &loaded,
        &exec,
        keep,
        (&train, eval.as_ref()),
        total_steps,
        opts,
    );

    let (lora, frozen_init) = adapters(recipe, &loaded)?;
    let base = BaseInfo::of(&loaded.model, Some(&loaded.path));
    let mut p = Prepared {
        spec,
        loaded,
        train,
        eval,
        reference: Reference::None,
        frozen: None,
        base,
        lora,
        pairs_per_step,
        total_steps,
    };
    p.reference = build_reference(&p, &data_files, frozen_init.as_ref(), opts.progress)?;
    if matches!(p.reference, Reference::AdaptersOff) {
        p.frozen = frozen_init;
    }
    Ok(p)
}

/// The device, activation type and backend the recipe asks for (the device opened and reported).
pub fn execution(recipe: &Recipe) -> Result<Execution> {
    Choices {
        device: recipe.device,
        dtype: recipe.dtype,
        backend: recipe.backend,
    }
    .execution(true, Naming::Recipe)
}

/// Print the memory plan and choose the keep level; refuse a plan over the free memory (or
/// `opts.memory`) unless `opts.ignore_plan`, naming the changes that would fit.
fn preflight(
    recipe: &Recipe,
    exec: &Execution,
    opts: &Options,
) -> Result<(memory::KeepName, String)> {
    let (hdr, cfg) = memory::open_header(recipe).context("model.path")?;
    // A rank above a target's smaller side adds nothing and, large enough, exhausts memory.
    if recipe.lora.init_from.is_none() {
        for &t in &recipe.lora.target_modules {
            let (i, o) = memory::linear_dims(&cfg, t);
            if recipe.lora.rank == 0 || recipe.lora.rank > i.min(o) {
                bail!(
                    "lora.rank: {} for {} ({i} in, {o} out) of {}; use 1 to {} (a rank above the smaller side adds nothing)",
                    recipe.lora.rank,
                    t.hf_name(),
                    recipe.model.path,
                    i.min(o)
                );
            }
        }
    }
    let compute = memory::Compute::of(exec);
    let knobs = memory::Knobs::of(recipe);
    let avail = opts
        .memory
        .or_else(|| crate::device::free_memory(&exec.device));
    let (keep, why) = memory::choose_keep(
        recipe.train.checkpoint_keep,
        &hdr,
        &cfg,
        &knobs,
        compute,
        avail,
    );
    let plan = memory::plan(&hdr, &cfg, &knobs, compute, keep);
    // Under --quiet the breakdown is left out (a refusal below carries its numbers).
    if opts.progress {
        for l in plan.lines() {
            eprintln!("{l}");
        }
    }
    if let Some(avail) = avail {
        if plan.predicted_peak_bytes > avail && !opts.ignore_plan {
            let fixes = memory::suggestions(&hdr, &cfg, &knobs, compute, avail);
            let fixes = if fixes.is_empty() {
                "nothing in the recipe brings it under; use a smaller model or a machine with more memory".to_string()
            } else {
                fixes
                    .iter()
                    .map(|(c, p)| format!("--set {c} ({:.0} MiB)", *p as f64 / (1 << 20) as f64))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            bail!(
                "{}: the memory plan predicts a peak of {:.0} MiB but {:.0} MiB is available; {fixes}; or pass --ignore-plan to try anyway",
                recipe.model.path,
                plan.predicted_peak_bytes as f64 / (1 << 20) as f64,
                avail as f64 / (1 << 20) as f64
            );
        }
    }
    Ok((keep, why))
}

/// Print the plan again with the data's own lengths (the preflight assumes `max_length`): the
/// longest pair, and the most tokens any micro-batch of this run will hold (the visiting order
/// is a function of the seed, so the batches are known now).
fn plan_for_data(
    recipe: &Recipe,
    loaded: &Loaded,
    exec: &Execution,
    keep: memory::KeepName,
    (train, eval): (&PairSet, Option<&PairSet>),
    total_steps: usize,
    opts: &Options,
) {
    let t = &recipe.train;
    let longest = memory::longest_pair(
        train
            .pairs
            .iter()
            .chain(eval.iter().flat_map(|e| e.pairs.iter())),
    );
    let longest_batch = Order::new(train.pairs.len(), t.seed)
        .batches(total_steps * t.grad_accum, t.batch_size)
        .map(|idx| memory::batch_tokens(idx.iter().map(|&i| &train.pairs[i])))
        .max();
    let refined = memory::plan(
        &loaded.file,
        &loaded.model.config,
        &memory::Knobs {
            longest_pair: Some(longest),
            longest_batch,
            ..memory::Knobs::of(recipe)
        },
        memory::Compute::of(exec),
        keep,
    );
    if opts.progress {
        eprintln!(
            "memory plan for this data (longest pair {longest} tokens packed, fullest micro-batch {} tokens): predicted peak {:.0} MiB",
            longest_batch.unwrap_or(0),
            refined.predicted_peak_bytes as f64 / (1 << 20) as f64
        );
    }
}

/// The adapters to train: fresh, or continued from `lora.init_from`, which is then also the
/// frozen reference (the second value).
fn adapters(recipe: &Recipe, loaded: &Loaded) -> Result<(Lora, Option<Lora>)> {
    let lc = &recipe.lora;
    match &lc.init_from {
        Some(dir) => {
            let l = loaded.adapter(dir).context("lora.init_from")?;
            if l.config.rank != lc.rank
                || l.config.targets != lc.target_modules
                || l.config.alpha != lc.alpha
            {
                eprintln!(
                    "note: lora.init_from sets rank {}, alpha {}, targets {:?}; lora.rank/alpha/target_modules of the recipe are not used",
                    l.config.rank, l.config.alpha, l.config.targets.iter().map(|t| t.hf_name()).collect::<Vec<_>>()
                );
            }
            let frozen = l.frozen_copy()?;
            Ok((l, Some(frozen)))
        }
        None => {
            let config = LoraConfig {
                rank: lc.rank,
                alpha: lc.alpha,
                dropout: lc.dropout,
                targets: lc.target_modules.clone(),
                use_rslora: lc.use_rslora,
            };
            Ok((loaded.fresh_lora(config, recipe.train.seed)?, None))
        }
    }
}

/// The run's reference: none (a reference-free loss), the base with adapters off (plus the
/// `frozen` start adapter) at every step, or values precomputed once over `data_files`' pairs
/// (read from the cache when an earlier run with the same inputs stored them).
fn build_reference(
    p: &Prepared,
    data_files: &[PathBuf],
    frozen: Option<&Lora>,
    progress: bool,
) -> Result<Reference<Precomputed>> {
    let r = p.spec.recipe;
    let dir = match &p.spec.reference {
        Reference::None => return Ok(Reference::None),
        Reference::AdaptersOff => return Ok(Reference::AdaptersOff),
        Reference::Precomputed(dir) => dir,
    };
    let files: Vec<&Path> = data_files.iter().map(PathBuf::as_path).collect();
    let reading = format!(
        "{} | {} | {:?} | {:?}",
        r.data.train,
        r.data
            .eval
            .as_ref()
            .map(|e| e.to_string())
            .unwrap_or_default(),
        r.data.format,
        r.data.columns
    );
    let limits = Limits::from_recipe(&r.data, &p.loaded.tok);
    let model = &p.loaded.model;
    let key = reference::cache_key(&reference::KeyInputs {
        model_file: &p.loaded.path,
        data_files: &files,
        reading: &reading,
        limits: &limits,
        init_from: r.lora.init_from.as_deref(),
        eval_split: (r.data.eval_fraction, r.train.seed),
        dtype: model.dtype(),
        device: model.device().location(),
        backend: model.backend(),
    })
    .context("reference cache key")?;
    let n_eval = p.eval.as_ref().map_or(0, |e| e.pairs.len());
    if let Some((train, eval)) = reference::load_cached(dir, &key, p.train.pairs.len(), n_eval) {
        eprintln!(
            "reference: precomputed log-probs reused from {}",
            dir.join(format!("{key}.json")).display()
        );
        return Ok(Reference::Precomputed(Precomputed { train, eval }));
    }
    let started = Instant::now();
    let all: Vec<(&TrainPair, bool)> = p
        .train
        .pairs
        .iter()
        .map(|pair| (pair, false))
        .chain(
            p.eval
                .iter()
                .flat_map(|e| e.pairs.iter().map(|pair| (pair, true))),
        )
        .collect();
    let bar = progress_bar(progress, all.len(), 0);
    bar.set_message("precomputing reference log-probs");
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for chunk in all.chunks(r.train.batch_size) {
        let pairs: Vec<&TrainPair> = chunk.iter().map(|(pair, _)| *pair).collect();
        let vals = reference::compute(&p.loaded.model, frozen, &pairs)?;
        for ((_, is_eval), v) in chunk.iter().zip(vals) {
            if *is_eval {
                eval.push(v)
            } else {
                train.push(v)
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let path = reference::store(dir, &key, &train, &eval)
        .with_context(|| format!("{}: cannot write the reference cache", dir.display()))?;
    eprintln!(
        "reference: precomputed {} pairs in {:.1} s, cached at {}",
        all.len(),
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(Reference::Precomputed(Precomputed { train, eval }))
}

/// The output folder must be new (or hold this run when resuming) and writable.
fn prepare_output(dir: &Path, resume: bool) -> Result<()> {
    let has_run = dir.join("metrics.jsonl").exists()
        || checkpoint::root(dir).exists()
        || dir.join("adapter").exists();
    if has_run && !resume {
        bail!("output.dir {} already holds a run; pass --resume to continue it, or choose another folder (--set output.dir=...)", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "output.dir {} cannot be created; choose a writable folder",
            dir.display()
        )
    })?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| {
        format!(
            "output.dir {} is not writable; choose a writable folder",
            dir.display()
        )
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}
