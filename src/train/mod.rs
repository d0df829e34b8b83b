//! The training loop: DPO (or another preference loss) over LoRA adapters on a frozen base.
//!
//! ```text
//! prepare: recipe -> model + tokenizer -> pairs (truncated, split) -> adapters -> reference
//! step:    for each micro-batch, a pair per core (`pairwise`): reference (no graph), policy
//!          forward (adapters on, graph) -> loss / grad_accum -> each pair's backward
//!          -> accumulate; clip; AdamW; log; eval; checkpoint
//! finish:  final eval, adapter/ (PEFT), plot.png
//! ```
//! One loaded model serves as both policy and reference: the reference is the same forward with
//! [`Adapters::Off`] (or the frozen `init_from` adapter). Reference: torchtune's LoRA DPO recipe,
//! TRL's `DPOTrainer` (metric names), Rafailov et al. 2023.

pub mod checkpoint;
pub mod memory;
pub mod optim;
pub mod pairwise;
pub mod reference;
pub mod schedule;
pub mod sets;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::data::batch::{Limits, Order, PairSet, TrainPair};
use crate::loss::{LossInputs, LossOutput, PairMetrics, PreferenceLoss};
use crate::model::peft::{self, BaseInfo};
use crate::model::{Adapters, Lora, LoraConfig, Model};
use crate::recipe::{Recipe, ReferenceMode};
use crate::rng::SplitMix64;
use crate::session::Loaded;
use checkpoint::State;
use optim::AdamW;
use reference::Reference;

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    Finished { adapter: PathBuf, steps: usize },
    Interrupted { checkpoint: PathBuf, step: usize },
}

pub struct Options {
    pub resume: bool,
    /// Set (by Ctrl-C) to stop after the current step with a checkpoint.
    pub interrupt: Arc<AtomicBool>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Memory to plan against instead of the device's free memory (`--memory`).
    pub memory: Option<u64>,
    /// Train even when the memory plan says it will not fit (`--ignore-plan`).
    pub ignore_plan: bool,
}

/// Everything a step needs, prepared once.
struct Ctx<'a> {
    recipe: &'a Recipe,
    loaded: &'a Loaded,
    train: PairSet,
    eval: Option<PairSet>,
    /// The data files read, train then eval (what the reference cache key hashes).
    data_files: Vec<PathBuf>,
    loss: PreferenceLoss,
    reference: Reference,
    base: BaseInfo,
    pairs_per_step: usize,
}

/// Where a micro-batch's reference log-probs come from.
pub enum RefVals<'a> {
    /// Run π_ref now, with no gradient graph: `model` with the `frozen` adapter on, or bare. The
    /// training loop passes the policy's own base; `dpo-lora bench` also passes a second copy.
    Compute {
        model: &'a Model,
        frozen: Option<&'a Lora>,
    },
    /// Precomputed `(chosen, rejected)` sums, one per pair.
    Given(Vec<(f32, f32)>),
    /// The loss needs none (SimPO, ORPO).
    None,
}

/// The result of one micro-batch.
pub struct StepOut {
    /// The loss (a function of the policy's sums) and the rewards.
    pub out: LossOutput,
    pub loss: f64,
    pub logps_chosen: Vec<f32>,
    pub logps_rejected: Vec<f32>,
    /// Tokens in the forward (prompt + completion of every sequence, no padding).
    pub tokens: usize,
}

/// Loss and metrics of one micro-batch, no gradient: the policy forward (`policy`), the
/// reference's values (`refs`), the loss. Evaluation calls this; training calls
/// [`step_backward`].
pub fn step(
    model: &Model,
    loss: &PreferenceLoss,
    rpo_alpha: Option<f64>,
    pairs: &[&TrainPair],
    policy: Adapters,
    refs: RefVals,
) -> Result<StepOut> {
    let f = pairwise::forward(model, pairs, policy, &refs)?;
    let (pc, pr) = f.sums()?;
    step_out(loss, rpo_alpha, pairs, &f, &pc, &pr)
}

/// [`step`] under [`Adapters::Train`]`(lora, seed)`, and the gradient of `scale · loss` w.r.t.
/// `vars`, pair by pair across the CPU's cores (see `pairwise`).
#[allow(clippy::too_many_arguments)]
pub fn step_backward(
    model: &Model,
    loss: &PreferenceLoss,
    rpo_alpha: Option<f64>,
    pairs: &[&TrainPair],
    (lora, seed): (&Lora, u64),
    refs: RefVals,
    vars: &[&candle_core::Var],
    scale: f64,
) -> Result<(StepOut, Vec<Option<Tensor>>)> {
    let f = pairwise::forward(model, pairs, Adapters::Train(lora, seed), &refs)?;
    Ok(f.backward(vars, |pc, pr| {
        let out = step_out(loss, rpo_alpha, pairs, &f, pc, pr)
            .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))?;
        Ok(((&out.out.loss * scale)?, out))
    })?)
}

/// The loss of a micro-batch from the policy's `(b,)` sums `pc`, `pr` and `f`'s reference.
fn step_out(
    loss: &PreferenceLoss,
    rpo_alpha: Option<f64>,
    pairs: &[&TrainPair],
    f: &pairwise::Forward,
    pc: &Tensor,
    pr: &Tensor,
) -> Result<StepOut> {
    let dev = pc.device();
    let b = pairs.len();
    let (rc, rr) = match &f.reference {
        Some(v) => (
            Some(Tensor::from_vec(
                v.iter().map(|x| x.0).collect::<Vec<_>>(),
                b,
                dev,
            )?),
            Some(Tensor::from_vec(
                v.iter().map(|x| x.1).collect::<Vec<_>>(),
                b,
                dev,
            )?),
        ),
        None => (None, None),
    };
    let len = |f: fn(&TrainPair) -> usize| {
        Tensor::from_vec(
            pairs.iter().map(|p| f(p) as f32).collect::<Vec<_>>(),
            b,
            dev,
        )
    };
    let (lc, lr) = (
        len(|p| p.chosen.completion().len())?,
        len(|p| p.rejected.completion().len())?,
    );
    let inputs = LossInputs {
        policy_chosen: pc,
        policy_rejected: pr,
        ref_chosen: rc.as_ref(),
        ref_rejected: rr.as_ref(),
        chosen_len: &lc,
        rejected_len: &lr,
    };
    let out = loss.compute(&inputs, rpo_alpha)?;
    let loss = out.loss.to_scalar::<f32>()? as f64;
    Ok(StepOut {
        loss,
        logps_chosen: pc.detach().to_vec1()?,
        logps_rejected: pr.detach().to_vec1()?,
        out,
        tokens: f.tokens,
    })
}

impl Ctx<'_> {
    fn refs_for(&self, idx: &[usize], eval: bool) -> RefVals<'_> {
        match &self.reference {
            Reference::AdaptersOff(frozen) => RefVals::Compute {
                model: &self.loaded.model,
                frozen: frozen.as_ref(),
            },
            Reference::Precomputed { train, eval: ev } => RefVals::Given(
                idx.iter()
                    .map(|&i| if eval { ev[i] } else { train[i] })
                    .collect(),
            ),
            Reference::None => RefVals::None,
        }
    }

    /// [`step`] with the run's model and loss.
    fn batch(&self, pairs: &[&TrainPair], policy: Adapters, refs: RefVals) -> Result<StepOut> {
        step(
            &self.loaded.model,
            &self.loss,
            self.recipe.loss.rpo_alpha,
            pairs,
            policy,
            refs,
        )
    }

    /// The held-out metrics, with a bar of the evaluation's own under the training bar in
    /// `bars` (an evaluation of a few dozen pairs can take a minute).
    fn evaluate(&self, lora: &Lora, bars: &MultiProgress) -> Result<Option<PairMetrics>> {
        let Some(eval) = &self.eval else {
            return Ok(None);
        };
        let bar = bars.add(eval_bar(eval.pairs.len()));
        let mut m = PairMetrics::default();
        let bsz = self.recipe.train.batch_size;
        for start in (0..eval.pairs.len()).step_by(bsz) {
            let idx: Vec<usize> = (start..(start + bsz).min(eval.pairs.len())).collect();
            let pairs: Vec<&TrainPair> = idx.iter().map(|&i| &eval.pairs[i]).collect();
            let r = self.batch(&pairs, Adapters::On(lora), self.refs_for(&idx, true))?;
            m.add(r.loss, &r.out, &r.logps_chosen, &r.logps_rejected);
            bar.inc(idx.len() as u64);
        }
        bar.finish_and_clear();
        bars.remove(&bar);
        Ok(Some(m))
    }
}

/// Print the memory plan and choose the keep level; refuse a plan over the free memory (or
/// `opts.memory`) unless `opts.ignore_plan`, naming the changes that would fit.
fn preflight(
    recipe: &Recipe,
    exec: &crate::model::Execution,
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

/// The device, activation type and backend the recipe asks for (the device opened and reported).
pub fn execution(recipe: &Recipe) -> Result<crate::model::Execution> {
    let device = recipe.device.open_and_report().context("device")?;
    crate::model::Execution::choose(device, recipe.dtype, recipe.backend).map_err(|e| {
        anyhow::anyhow!(
            "dtype: {:?}, backend: {}: {e}",
            recipe.dtype,
            recipe.backend
        )
    })
}

/// Train as the recipe says. Writes into `recipe.output.dir`.
pub fn run(recipe: &Recipe, opts: &Options) -> Result<Outcome> {
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

    // The plan again with the data's own lengths (the bound above assumes max_length): the
    // longest pair, and the most tokens any micro-batch of this run will hold (the visiting
    // order is a function of the seed, so the batches are known now).
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
        memory::Compute::of(&exec),
        keep,
    );
    if opts.progress {
        eprintln!(
            "memory plan for this data (longest pair {longest} tokens packed, fullest micro-batch {} tokens): predicted peak {:.0} MiB",
            longest_batch.unwrap_or(0),
            refined.predicted_peak_bytes as f64 / (1 << 20) as f64
        );
    }

    // Adapters: fresh, or continued from `init_from` (which is then also the frozen reference).
    let model = &loaded.model;
    let (lora, frozen_init) = match &recipe.lora.init_from {
        Some(dir) => {
            let l = peft::load(dir, model, loaded.model.device()).context("lora.init_from")?;
            let lc = &recipe.lora;
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
            (l, Some(frozen))
        }
        None => {
            let lc = &recipe.lora;
            let config = LoraConfig {
                rank: lc.rank,
                alpha: lc.alpha,
                dropout: lc.dropout,
                targets: lc.target_modules.clone(),
                use_rslora: lc.use_rslora,
            };
            (
                Lora::init(
                    config,
                    model.config.n_layer,
                    |il, t| model.linear_dims(il, t),
                    t.seed,
                    loaded.model.device(),
                )?,
                None,
            )
        }
    };
    let loss = PreferenceLoss::from_recipe(&recipe.loss);
    let base = BaseInfo::of(model, Some(&loaded.path));
    let mut ctx = Ctx {
        recipe,
        loaded: &loaded,
        train,
        eval,
        data_files,
        loss,
        reference: Reference::None,
        base,
        pairs_per_step,
    };
    ctx.reference = build_reference(&ctx, frozen_init, opts.progress)?;

    let vars = lora.vars();
    let mut opt = AdamW::new(&vars, t.weight_decay)?;
    let mut start_step = 0;
    if opts.resume {
        if let Some((dir, st)) = checkpoint::latest(out_dir) {
            let saved = peft::load(&dir.join("adapter"), model, loaded.model.device())
                .with_context(|| format!("{}: resume", dir.display()))?;
            for (k, l) in &lora.layers {
                let s = saved.layers.get(k).with_context(|| {
                    format!(
                        "{}: the checkpoint lacks layer {} {}",
                        dir.display(),
                        k.0,
                        k.1.hf_name()
                    )
                })?;
                l.a.set(s.a.as_tensor())?;
                l.b.set(s.b.as_tensor())?;
            }
            opt.load(
                &dir.join("optimizer.safetensors"),
                st.step,
                loaded.model.device(),
            )?;
            if st.seed != t.seed {
                bail!("{}: the checkpoint was made with train.seed {}, the recipe says {}; resume with the same recipe", dir.display(), st.seed, t.seed);
            }
            start_step = st.step;
            eprintln!("resuming from {} (step {})", dir.display(), st.step);
        } else {
            eprintln!(
                "--resume: no checkpoint in {}, starting at step 0",
                checkpoint::root(out_dir).display()
            );
        }
    }
    crate::atomic::write_file(&out_dir.join("recipe.yaml"), recipe.to_yaml().as_bytes())
        .with_context(|| format!("{}: cannot write recipe.yaml", out_dir.display()))?;
    let metrics_path = out_dir.join("metrics.jsonl");
    truncate_metrics(&metrics_path, start_step)?;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("{}: cannot open", metrics_path.display()))?;

    let order = Order::new(ctx.train.pairs.len(), t.seed);
    let bars = MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let bar = bars.add(progress_bar(opts.progress, total_steps, start_step));
    let mut last_ckpt: Option<PathBuf> = checkpoint::latest(out_dir).map(|(d, _)| d);
    if start_step == 0 {
        if let Some(m) = ctx.evaluate(&lora, &bars)? {
            write_metrics(&mut metrics, "eval", 0, 0.0, &m, None)?;
        }
    }
    for step in start_step..total_steps {
        let started = Instant::now();
        let mut acc: Vec<Option<Tensor>> = vec![None; vars.len()];
        let mut m = PairMetrics::default();
        let mut tokens = 0;
        for micro in 0..t.grad_accum {
            let pos = step * ctx.pairs_per_step + micro * t.batch_size;
            let idx = order.take(pos, t.batch_size);
            let pairs: Vec<&TrainPair> = idx.iter().map(|&i| &ctx.train.pairs[i]).collect();
            let seed = SplitMix64::keyed(&[t.seed, 0xd50, step as u64, micro as u64]).next_u64();
            let (r, grads) = step_backward(
                &ctx.loaded.model,
                &ctx.loss,
                ctx.recipe.loss.rpo_alpha,
                &pairs,
                (&lora, seed),
                ctx.refs_for(&idx, false),
                &vars,
                1.0 / t.grad_accum as f64,
            )?;
            if !r.loss.is_finite() {
                bar.abandon();
                bail!(
                    "step {}: the loss is {}; training stopped. {} Lower train.lr or set train.max_grad_norm",
                    step + 1,
                    r.loss,
                    match &last_ckpt {
                        Some(d) => format!("The last good checkpoint is {} (resume with --resume).", d.display()),
                        None => "No checkpoint was written yet.".to_string(),
                    }
                );
            }
            optim::accumulate(&mut acc, grads)?;
            m.add(r.loss, &r.out, &r.logps_chosen, &r.logps_rejected);
            tokens += r.tokens;
        }
        let warmup = t
            .warmup_ratio
            .map_or(t.warmup_steps, |r| (r * total_steps as f64).ceil() as usize);
        let lr = schedule::lr_at(t.schedule, t.lr, warmup, total_steps, step);
        let grad_norm = optim::apply(&mut opt, &vars, acc, lr, t.max_grad_norm)?;
        let done = step + 1;
        let secs = started.elapsed().as_secs_f64();
        let epoch = (done * ctx.pairs_per_step) as f64 / ctx.train.pairs.len() as f64;
        write_metrics(
            &mut metrics,
            "train",
            done,
            epoch,
            &m,
            Some((grad_norm, lr, tokens as f64 / secs.max(1e-9))),
        )?;
        bar.set_message(format!("loss {:.4}  acc {:.2}", m.loss, m.accuracies));
        bar.inc(1);
        if t.eval_every.is_some_and(|n| done % n == 0) && done < total_steps {
            if let Some(em) = ctx.evaluate(&lora, &bars)? {
                write_metrics(&mut metrics, "eval", done, epoch, &em, None)?;
                let _ = bars.println(format!("eval @ step {done}: loss {:.4}, rewards/accuracies {:.3}, rewards/margins {:.3}", em.loss, em.accuracies, em.margins));
            }
        }
        let interrupted = opts.interrupt.load(Ordering::SeqCst);
        if t.save_every.is_some_and(|n| done % n == 0) || (interrupted && done < total_steps) {
            let st = State {
                step: done,
                pairs_consumed: done * ctx.pairs_per_step,
                seed: t.seed,
            };
            last_ckpt = Some(checkpoint::write(
                out_dir,
                &lora,
                &opt,
                &st,
                &ctx.base,
                t.keep_checkpoints,
            )?);
        }
        if interrupted && done < total_steps {
            bar.abandon();
            let ck = last_ckpt.clone().unwrap_or_default();
            return Ok(Outcome::Interrupted {
                checkpoint: ck,
                step: done,
            });
        }
    }
    bar.finish_and_clear();
    if let Some(em) = ctx.evaluate(&lora, &bars)? {
        let epoch = (total_steps * ctx.pairs_per_step) as f64 / ctx.train.pairs.len() as f64;
        write_metrics(&mut metrics, "eval", total_steps, epoch, &em, None)?;
        eprintln!("eval @ step {total_steps}: loss {:.4}, rewards/accuracies {:.3}, rewards/margins {:.3}", em.loss, em.accuracies, em.margins);
    }
    let adapter = out_dir.join("adapter");
    peft::save(&lora, &adapter, &ctx.base, Some(&loaded.base_name()))?;
    let points = crate::plot::read_metrics(&metrics_path)?;
    let title = format!("{} on {}", recipe.loss.kind.name(), loaded.base_name());
    crate::plot::plot_run(&points, &title, &out_dir.join("plot.png"))?;
    Ok(Outcome::Finished {
        adapter,
        steps: total_steps,
    })
}

fn build_reference(ctx: &Ctx, frozen: Option<Lora>, progress: bool) -> Result<Reference> {
    let r = ctx.recipe;
    if !ctx.loss.uses_reference() {
        return Ok(Reference::None);
    }
    if r.reference.mode == ReferenceMode::AdaptersOff {
        return Ok(Reference::AdaptersOff(frozen));
    }
    let files: Vec<&Path> = ctx.data_files.iter().map(PathBuf::as_path).collect();
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
    let limits = Limits::from_recipe(&r.data, &ctx.loaded.tok);
    let model = &ctx.loaded.model;
    let key = reference::cache_key(&reference::KeyInputs {
        model_file: &ctx.loaded.path,
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
    let dir = r
        .reference
        .cache_dir
        .clone()
        .unwrap_or_else(reference::default_cache_dir);
    let n_eval = ctx.eval.as_ref().map_or(0, |e| e.pairs.len());
    if let Some((train, eval)) = reference::load_cached(&dir, &key, ctx.train.pairs.len(), n_eval) {
        eprintln!(
            "reference: precomputed log-probs reused from {}",
            dir.join(format!("{key}.json")).display()
        );
        return Ok(Reference::Precomputed { train, eval });
    }
    let started = Instant::now();
    let all: Vec<(&TrainPair, bool)> = ctx
        .train
        .pairs
        .iter()
        .map(|p| (p, false))
        .chain(
            ctx.eval
                .iter()
                .flat_map(|e| e.pairs.iter().map(|p| (p, true))),
        )
        .collect();
    let bar = progress_bar(progress, all.len(), 0);
    bar.set_message("precomputing reference log-probs");
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for chunk in all.chunks(r.train.batch_size) {
        let pairs: Vec<&TrainPair> = chunk.iter().map(|(p, _)| *p).collect();
        let vals = reference::compute(&ctx.loaded.model, frozen.as_ref(), &pairs)?;
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
    let path = reference::store(&dir, &key, &train, &eval)
        .with_context(|| format!("{}: cannot write the reference cache", dir.display()))?;
    eprintln!(
        "reference: precomputed {} pairs in {:.1} s, cached at {}",
        all.len(),
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(Reference::Precomputed { train, eval })
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

/// On resume, drop the metric lines past the checkpoint (they will be written again).
fn truncate_metrics(path: &Path, keep_up_to: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= keep_up_to)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::atomic::write_file(path, kept.as_bytes())
        .with_context(|| format!("{}: cannot rewrite", path.display()))
}

fn write_metrics(
    w: &mut std::fs::File,
    kind: &str,
    step: usize,
    epoch: f64,
    m: &PairMetrics,
    train: Option<(f64, f64, f64)>,
) -> Result<()> {
    let mut o = serde_json::Map::new();
    o.insert("kind".into(), kind.into());
    o.insert("step".into(), step.into());
    o.insert(
        "epoch".into(),
        serde_json::json!((epoch * 1000.0).round() / 1000.0),
    );
    o.extend(m.to_json());
    if let Some((gn, lr, tps)) = train {
        o.insert("grad_norm".into(), serde_json::json!(gn));
        o.insert("learning_rate".into(), serde_json::json!(lr));
        o.insert("tokens/s".into(), serde_json::json!(tps));
    }
    writeln!(w, "{}", serde_json::Value::Object(o))?;
    w.flush()?;
    Ok(())
}

/// The evaluation's bar: pairs scored of `n`, with rate and ETA.
fn eval_bar(n: usize) -> ProgressBar {
    ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} eval pairs  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

fn progress_bar(show: bool, len: usize, pos: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} steps  {per_sec}  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(pos as u64);
    bar
}
