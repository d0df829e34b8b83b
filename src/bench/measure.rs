//! One bench mode, measured in a process of its own (the parent re-runs this binary with a hidden
//! flag), so its peak RSS is its own: the kernel's high-water mark `VmHWM` of this process.
//!
//! Every mode trains the same LoRA (rank 8, alpha 16, the 7 projections, dropout 0) with the same
//! AdamW update as `dpo-lora run` ([`train::step_backward`], [`optim::apply`]), 2 pairs per step, the
//! pairs of the workload file in order. A step is timed from the policy forward to the end of the
//! optimizer update; warm-up steps are not timed. The model and the adapters are loaded as `dpo-lora
//! run` loads them (`session`); the workload's pairs and the reference of each mode are the
//! bench's own, since they are what it measures.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use super::flops::{self, Shapes};
use super::{Mode, Row, Workload};
use crate::data::batch::{load_pairs, Limits, TrainPair};
use crate::loss::PreferenceLoss;
use crate::model::{Adapters, LoraConfig, Model, Target};
use crate::recipe::{LossSection, Truncation};
use crate::session::{Choices, Loaded, Naming};
use crate::train::memory::{self, KeepName};
use crate::train::{self, optim, pairwise, reference, RefVals};

/// Pairs per optimizer step (one micro-batch; no accumulation).
pub const PAIRS_PER_STEP: usize = 2;
pub const LORA_RANK: usize = 8;
pub const LORA_ALPHA: f64 = 16.0;
/// DPO's beta (TRL's default).
pub const BETA: f64 = 0.1;
/// Constant learning rate; TRL's default for `DPOConfig`.
pub const LR: f64 = 1e-6;
/// TRL's (transformers') default `max_grad_norm`.
pub const MAX_GRAD_NORM: f64 = 1.0;

/// What the child is asked to measure.
pub struct Job<'a> {
    pub model: &'a str,
    pub device: crate::device::DeviceChoice,
    pub dtype: crate::device::ComputeDtype,
    pub backend: crate::model::BackendChoice,
    pub gradient_checkpointing: bool,
    pub prefix_sharing: bool,
    pub mode: Mode,
    /// What a checkpointed block keeps (`train.checkpoint_keep`).
    pub keep: KeepName,
    pub workload: Workload,
    pub data: &'a Path,
    pub warmup: usize,
    pub steps: usize,
}

/// This process's peak resident set (`VmHWM`), MiB; `None` where `/proc` is missing.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The shape of the policy forward over `pairs` (every chosen, then every rejected sequence).
/// The shapes the forward of `pairs` runs (one packed row per pair when the prompt is shared).
fn shapes(model: &Model, pairs: &[&TrainPair]) -> Result<Shapes> {
    let packed = model.pack_pairs(&reference::pair_sequences(pairs))?;
    Ok(Shapes {
        n_seq: packed.rows.len(),
        seq_len: packed.seq_len,
        n_scored: packed.scored.iter().map(Vec::len).sum(),
    })
}

/// A row from per-step times, tokens and FLOPs (measured steps only), beside the plan's peak.
fn row(
    job: &Job,
    (mode, what): (&str, &str),
    predicted: &memory::Plan,
    secs: &[f64],
    tokens: &[usize],
    flop: &[f64],
) -> Row {
    let n = secs.len().max(1) as f64;
    let med = median(secs);
    let tokens_per_step = tokens.iter().sum::<usize>() as f64 / n;
    let gflop_per_step = flop.iter().sum::<f64>() / n / 1e9;
    Row {
        workload: job.workload.name().to_string(),
        mode: mode.to_string(),
        what: what.to_string(),
        step_s: secs.to_vec(),
        step_s_median: med,
        tokens_per_step,
        tokens_per_s: tokens_per_step / med,
        peak_rss_mib: peak_rss_mib().unwrap_or(f64::NAN),
        gflop_per_step: Some(gflop_per_step),
        gflops: Some(gflop_per_step / med),
        peak_share: None,
        keep: job
            .gradient_checkpointing
            .then(|| job.keep.name().to_string()),
        predicted_peak_mib: Some(predicted.predicted_peak_bytes as f64 / (1 << 20) as f64),
    }
}

/// Run `job` in this process: its rows (two for `dpo-precomputed`: the one-off precompute, then
/// training). `progress(done, total)` is called after every step.
pub fn run(job: &Job, progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<Row>> {
    let choices = Choices {
        device: job.device,
        dtype: job.dtype,
        backend: job.backend,
    };
    let exec = choices.execution(false, Naming::Flags)?;
    let mut loaded = Loaded::open_on(job.model, &exec)?;
    loaded.model.set_checkpointing(job.gradient_checkpointing);
    loaded.model.set_checkpoint_keep(job.keep.keep());
    loaded.model.set_prefix_sharing(job.prefix_sharing);
    let model = &loaded.model;
    let limits = Limits {
        max_length: super::workload::MAX_LENGTH,
        max_prompt_length: None,
        truncation: Truncation::KeepEnd,
        bos: if loaded.tok.add_bos() {
            loaded.tok.bos_id()
        } else {
            None
        },
    };
    let what = format!("{}: bench workload", job.data.display());
    let records = crate::data::read_all(
        &crate::data::Sources::one(job.data.to_string_lossy()),
        &crate::data::ReadSpec::default(),
    )
    .with_context(|| what.clone())?;
    let set = load_pairs(&records, &what, &loaded.tok, &limits).with_context(|| what.clone())?;
    let n = set.pairs.len();
    let total = job.warmup + job.steps;
    let batch = |s: usize| -> Vec<&TrainPair> {
        (0..PAIRS_PER_STEP)
            .map(|j| &set.pairs[(s * PAIRS_PER_STEP + j) % n])
            .collect()
    };
    // What `dpo-lora plan` predicts for this run: the same knobs a recipe would give.
    let knobs = memory::Knobs {
        batch_size: PAIRS_PER_STEP,
        max_length: super::workload::MAX_LENGTH,
        longest_pair: Some(memory::longest_pair(set.pairs.iter())),
        longest_batch: (0..total)
            .map(|s| memory::batch_tokens(batch(s).into_iter()))
            .max(),
        gradient_checkpointing: job.gradient_checkpointing,
        rank: LORA_RANK,
        targets: Target::ALL.to_vec(),
    };
    let mut predicted = memory::plan(
        &loaded.file,
        &model.config,
        &knobs,
        memory::Compute::of(&exec),
        job.keep,
    );
    if job.mode == Mode::SecondCopy {
        predicted = predicted.with_second_copy();
    }
    let lora = loaded.fresh_lora(
        LoraConfig {
            rank: LORA_RANK,
            alpha: LORA_ALPHA,
            dropout: 0.0,
            targets: Target::ALL.to_vec(),
            use_rslora: false,
        },
        0,
    )?;
    let vars = lora.vars();
    let mut opt = optim::AdamW::new(&vars, 0.0)?;
    // DPO at BETA; SimPO and ORPO at a recipe's defaults.
    let d = LossSection::default();
    let loss = match job.mode {
        Mode::Simpo => PreferenceLoss::Simpo {
            beta: d.beta,
            gamma: d.gamma,
        },
        Mode::Orpo => PreferenceLoss::Orpo { lambda: d.lambda },
        _ => PreferenceLoss::Sigmoid {
            beta: BETA,
            label_smoothing: d.label_smoothing,
        },
    };

    let mut rows = Vec::new();
    // Mode-specific state, built before the first step (and outside the timing).
    let second_copy: Option<Model> = match job.mode {
        Mode::SecondCopy => {
            Some(Model::load(&loaded.file, &exec).context("loading the second copy of the base")?)
        }
        _ => None,
    };
    let mut precomputed: Vec<Vec<(f32, f32)>> = Vec::new();
    if job.mode == Mode::Precomputed {
        // One no-gradient pass over the steps' batches, as `dpo-lora run` does before training.
        let (mut secs, mut tokens, mut flop) = (Vec::new(), Vec::new(), Vec::new());
        for s in 0..total {
            let pairs = batch(s);
            let t = Instant::now();
            precomputed.push(reference::compute(model, None, &pairs)?);
            secs.push(t.elapsed().as_secs_f64());
            tokens.push(
                pairs
                    .iter()
                    .map(|p| p.chosen.ids.len() + p.rejected.ids.len())
                    .sum(),
            );
            flop.push(flops::forward(model, None, shapes(model, &pairs)?));
            progress(s + 1, total);
        }
        rows.push(row(
            job,
            (
                "reference-precompute",
                "one-off: reference forward (adapters off, no graph) over each step's 2 pairs",
            ),
            &predicted,
            &secs,
            &tokens,
            &flop,
        ));
    }

    let (mut secs, mut tokens, mut flop) = (Vec::new(), Vec::new(), Vec::new());
    for s in 0..total {
        let pairs = batch(s);
        let t = Instant::now();
        let (n_tok, grads) = match job.mode {
            Mode::PolicyOnly => {
                // Mean NLL of every completion token, chosen and rejected: the fine-tuning floor.
                let n_c: usize = pairs
                    .iter()
                    .map(|p| p.chosen.completion().len() + p.rejected.completion().len())
                    .sum();
                let f = pairwise::forward(
                    model,
                    &pairs,
                    Adapters::Train(&lora, s as u64),
                    &RefVals::None,
                )?;
                let ((), grads) = f.backward(&vars, |pc, pr| {
                    let nll = ((pc.sum_all()? + pr.sum_all()?)? / -(n_c as f64))?;
                    Ok((nll, ()))
                })?;
                (f.tokens, grads)
            }
            mode => {
                let refs = match mode {
                    Mode::AdaptersOff => RefVals::Compute {
                        model,
                        frozen: None,
                    },
                    Mode::SecondCopy => RefVals::Compute {
                        model: second_copy.as_ref().unwrap_or(model),
                        frozen: None,
                    },
                    Mode::Precomputed => RefVals::Given(
                        precomputed
                            .get(s)
                            .cloned()
                            .context("no precomputed reference for this step")?,
                    ),
                    _ => RefVals::None,
                };
                let (r, grads) = train::step_backward(
                    model,
                    &loss,
                    None,
                    &pairs,
                    (&lora, s as u64),
                    refs,
                    &vars,
                    1.0,
                )?;
                (r.tokens, grads)
            }
        };
        optim::apply(&mut opt, &vars, grads, LR, Some(MAX_GRAD_NORM))?;
        let elapsed = t.elapsed().as_secs_f64();
        if s >= job.warmup {
            secs.push(elapsed);
            tokens.push(n_tok);
            let sh = shapes(model, &pairs)?;
            let reference_fwd = match job.mode {
                Mode::AdaptersOff | Mode::SecondCopy => flops::forward(model, None, sh),
                _ => 0.0,
            };
            flop.push(flops::forward_backward(model, &lora, sh) + reference_fwd);
        }
        progress(s + 1, total);
    }
    rows.push(row(
        job,
        (job.mode.name(), job.mode.describe()),
        &predicted,
        &secs,
        &tokens,
        &flop,
    ));
    Ok(rows)
}
