//! The training loop: DPO (or another preference loss) over LoRA adapters on a frozen base.
//!
//! ```text
//! prepare: recipe -> model + tokenizer -> pairs (truncated, split) -> adapters -> reference
//! resume:  the latest checkpoint's adapter and optimizer state (--resume)
//! loop:    for each micro-batch, a pair per core (`pairwise`): reference (no graph), policy
//!          forward (adapters on, graph) -> loss / grad_accum -> each pair's backward
//!          -> accumulate; clip; AdamW; log; eval; checkpoint
//! finish:  final eval, adapter/ (PEFT), plot.png
//! ```
//! One loaded model serves as both policy and reference: the reference is the same forward with
//! [`Adapters::Off`] (or the frozen `init_from` adapter). Reference: torchtune's LoRA DPO recipe,
//! TRL's `DPOTrainer` (metric names), Rafailov et al. 2023.
//!
//! Owns: [`run`] and its loop; the other parts each have a file: `prepare`, `resume`, `step`
//! (one micro-batch), `metrics` (metrics.jsonl), `checkpoint`, `optim`, `schedule`,
//! `reference`, `sets` (the pair sets), `memory` (the plan), `pairwise`.

pub mod checkpoint;
pub mod memory;
pub mod metrics;
pub mod optim;
pub mod pairwise;
pub mod prepare;
pub mod reference;
pub mod resume;
pub mod schedule;
pub mod sets;
pub mod step;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::data::batch::{Order, TrainPair};
use crate::loss::PairMetrics;
use crate::model::{peft, Adapters};
use crate::recipe::{Recipe, Reference};
use crate::rng::SplitMix64;
use checkpoint::State;
use metrics::Metrics;
use optim::AdamW;
pub use prepare::{execution, Prepared};
pub use step::{step, step_backward, RefVals, StepOut};

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

/// Train as the recipe says. Writes into `recipe.output.dir`.
pub fn run(recipe: &Recipe, opts: &Options) -> Result<Outcome> {
    let spec = recipe
        .spec()
        .map_err(|(key, msg)| anyhow::anyhow!("{key} {msg}"))?;
    let p = prepare::prepare(spec, opts)?;
    let out_dir = &recipe.output.dir;
    let mut opt = AdamW::new(&p.lora.vars(), recipe.train.weight_decay)?;
    let start_step = match opts.resume {
        true => resume::restore(
            out_dir,
            &p.loaded.model,
            &p.lora,
            &mut opt,
            recipe.train.seed,
        )?,
        false => 0,
    };
    crate::atomic::write_file(&out_dir.join("recipe.yaml"), recipe.to_yaml().as_bytes())
        .with_context(|| format!("{}: cannot write recipe.yaml", out_dir.display()))?;
    let mut metrics = Metrics::open(out_dir, start_step)?;
    let bars = MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    if let Some(stopped) = train_loop(&p, &mut opt, &mut metrics, start_step, &bars, opts)? {
        return Ok(stopped);
    }
    finish(&p, &mut metrics, &bars)
}

/// The optimizer steps from `start_step` to the end: `None` when it got there,
/// [`Outcome::Interrupted`] when Ctrl-C stopped it after a step (with a checkpoint).
fn train_loop(
    p: &Prepared,
    opt: &mut AdamW,
    metrics: &mut Metrics,
    start_step: usize,
    bars: &MultiProgress,
    opts: &Options,
) -> Result<Option<Outcome>> {
    let (t, out_dir, total_steps) = (
        &p.spec.recipe.train,
        &p.spec.recipe.output.dir,
        p.total_steps,
    );
    let vars = p.lora.vars();
    let order = Order::new(p.train.pairs.len(), t.seed);
    let bar = bars.add(progress_bar(opts.progress, total_steps, start_step));
    let mut last_ckpt: Option<PathBuf> = checkpoint::latest(out_dir).map(|(d, _)| d);
    if start_step == 0 {
        if let Some(m) = p.evaluate(bars)? {
            metrics.eval(0, 0.0, &m)?;
        }
    }
    for step in start_step..total_steps {
        let started = Instant::now();
        let mut acc: Vec<Option<Tensor>> = vec![None; vars.len()];
        let mut m = PairMetrics::default();
        let mut tokens = 0;
        for micro in 0..t.grad_accum {
            let pos = step * p.pairs_per_step + micro * t.batch_size;
            let idx = order.take(pos, t.batch_size);
            let pairs: Vec<&TrainPair> = idx.iter().map(|&i| &p.train.pairs[i]).collect();
            let seed = SplitMix64::keyed(&[t.seed, 0xd50, step as u64, micro as u64]).next_u64();
            let (r, grads) = step_backward(
                &p.loaded.model,
                &p.spec.loss.kind,
                p.spec.loss.rpo_alpha,
                &pairs,
                (&p.lora, seed),
                p.refs_for(&idx, false),
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
        let grad_norm = optim::apply(opt, &vars, acc, lr, t.max_grad_norm)?;
        let done = step + 1;
        let secs = started.elapsed().as_secs_f64();
        let epoch = p.epoch(done);
        metrics.train(
            done,
            epoch,
            &m,
            (grad_norm, lr, tokens as f64 / secs.max(1e-9)),
        )?;
        bar.set_message(format!("loss {:.4}  acc {:.2}", m.loss, m.accuracies));
        bar.inc(1);
        if t.eval_every.is_some_and(|n| done % n == 0) && done < total_steps {
            if let Some(em) = p.evaluate(bars)? {
                metrics.eval(done, epoch, &em)?;
                let _ = bars.println(format!("eval @ step {done}: loss {:.4}, rewards/accuracies {:.3}, rewards/margins {:.3}", em.loss, em.accuracies, em.margins));
            }
        }
        let interrupted = opts.interrupt.load(Ordering::SeqCst);
        if t.save_every.is_some_and(|n| done % n == 0) || (interrupted && done < total_steps) {
            let st = State {
                step: done,
                pairs_consumed: done * p.pairs_per_step,
                seed: t.seed,
            };
            last_ckpt = Some(checkpoint::write(
                out_dir,
                &p.lora,
                opt,
                &st,
                &p.base,
                t.keep_checkpoints,
            )?);
        }
        if interrupted && done < total_steps {
            bar.abandon();
            let ck = last_ckpt.clone().unwrap_or_default();
            return Ok(Some(Outcome::Interrupted {
                checkpoint: ck,
                step: done,
            }));
        }
    }
    bar.finish_and_clear();
    Ok(None)
}

/// After the last step: the final evaluation, the adapter (PEFT) and the curves.
fn finish(p: &Prepared, metrics: &mut Metrics, bars: &MultiProgress) -> Result<Outcome> {
    let (out_dir, total_steps) = (&p.spec.recipe.output.dir, p.total_steps);
    if let Some(em) = p.evaluate(bars)? {
        metrics.eval(total_steps, p.epoch(total_steps), &em)?;
        eprintln!("eval @ step {total_steps}: loss {:.4}, rewards/accuracies {:.3}, rewards/margins {:.3}", em.loss, em.accuracies, em.margins);
    }
    let adapter = out_dir.join("adapter");
    peft::save(&p.lora, &adapter, &p.base, Some(&p.loaded.base_name()))?;
    let points = crate::plot::read_metrics(metrics.path())?;
    let title = format!(
        "{} on {}",
        p.spec.recipe.loss.kind.name(),
        p.loaded.base_name()
    );
    crate::plot::plot_run(&points, &title, &out_dir.join("plot.png"))?;
    Ok(Outcome::Finished {
        adapter,
        steps: total_steps,
    })
}

impl Prepared<'_> {
    /// Epochs of the training pairs after `steps` optimizer steps.
    fn epoch(&self, steps: usize) -> f64 {
        (steps * self.pairs_per_step) as f64 / self.train.pairs.len() as f64
    }

    /// The reference values of the pairs `idx` of the train (or, `eval`, the held-out) set.
    fn refs_for(&self, idx: &[usize], eval: bool) -> RefVals<'_> {
        match &self.reference {
            Reference::AdaptersOff => RefVals::Compute {
                model: &self.loaded.model,
                frozen: self.frozen.as_ref(),
            },
            Reference::Precomputed(v) => RefVals::Given(
                idx.iter()
                    .map(|&i| if eval { v.eval[i] } else { v.train[i] })
                    .collect(),
            ),
            Reference::None => RefVals::None,
        }
    }

    /// [`step`] with the run's model and loss.
    fn batch(&self, pairs: &[&TrainPair], policy: Adapters, refs: RefVals) -> Result<StepOut> {
        step(
            &self.loaded.model,
            &self.spec.loss.kind,
            self.spec.loss.rpo_alpha,
            pairs,
            policy,
            refs,
        )
    }

    /// The held-out metrics of the adapters now, with a bar of the evaluation's own under the
    /// training bar in `bars` (an evaluation of a few dozen pairs can take a minute).
    fn evaluate(&self, bars: &MultiProgress) -> Result<Option<PairMetrics>> {
        let Some(eval) = &self.eval else {
            return Ok(None);
        };
        let bar = bars.add(eval_bar(eval.pairs.len()));
        let mut m = PairMetrics::default();
        let bsz = self.spec.recipe.train.batch_size;
        for start in (0..eval.pairs.len()).step_by(bsz) {
            let idx: Vec<usize> = (start..(start + bsz).min(eval.pairs.len())).collect();
            let pairs: Vec<&TrainPair> = idx.iter().map(|&i| &eval.pairs[i]).collect();
            let r = self.batch(&pairs, Adapters::On(&self.lora), self.refs_for(&idx, true))?;
            m.add(r.loss, &r.out, &r.logps_chosen, &r.logps_rejected);
            bar.inc(idx.len() as u64);
        }
        bar.finish_and_clear();
        bars.remove(&bar);
        Ok(Some(m))
    }
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
