//! `dpo-lora bench`: what a training step costs in time and memory, mode by mode, on fixed
//! workloads, and how much of this machine's matrix-product peak it reaches.
//!
//! ```text
//! parent: model file -> workloads (JSONL, tokenized to length) -> matmul peak
//!         -> for each (workload, mode): this binary again, `--child MODE` -> rows (JSON on stdout)
//!         -> bench.json, bench.md, bench.png, table on stdout
//! child:  measure::run: load, warm up, time N steps, report its own peak RSS (VmHWM)
//! ```
//! Each mode runs in its own process so that its peak RSS is its own and no mode inherits another's
//! allocator state. Timing: median over the measured steps; tokens/s = mean tokens per step (no
//! padding) / median step time; GFLOP/s from [`flops`]' count, the same way.
//!
//! Owns: the modes, the orchestration and the report. Does not: train differently from `dpo-lora
//! run` (every mode calls [`crate::train::step_backward`] (policy-only: its `pairwise` parts) /
//! [`crate::train::optim::apply`]).

pub mod flops;
pub mod measure;
pub mod report;
pub mod workload;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

pub use workload::Workload;

use crate::train::memory::KeepName;

/// What is measured. Every mode trains the same adapters with the same optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// a. Forward + backward of the policy on chosen and rejected, no reference.
    PolicyOnly,
    /// b. DPO, reference = the same loaded base with adapters off (`reference.mode: adapters_off`).
    AdaptersOff,
    /// c. DPO with reference log-probs precomputed before training (`reference.mode: precomputed`).
    Precomputed,
    /// d. DPO with a second loaded copy of the base as the reference (mlx-lm-lora's way).
    SecondCopy,
    /// e. SimPO (reference-free).
    Simpo,
    /// e. ORPO (reference-free).
    Orpo,
}

impl Mode {
    pub const ALL: [Mode; 6] = [
        Mode::PolicyOnly,
        Mode::AdaptersOff,
        Mode::Precomputed,
        Mode::SecondCopy,
        Mode::Simpo,
        Mode::Orpo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::PolicyOnly => "policy-only",
            Mode::AdaptersOff => "dpo-adapters-off",
            Mode::Precomputed => "dpo-precomputed",
            Mode::SecondCopy => "dpo-second-copy",
            Mode::Simpo => "simpo",
            Mode::Orpo => "orpo",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Exactly what one step of the mode runs (the table's "what").
    pub fn describe(self) -> &'static str {
        match self {
            Mode::PolicyOnly => "policy forward + backward on chosen and rejected, loss = mean NLL of their completion tokens, no reference (the fine-tuning floor)",
            Mode::AdaptersOff => "DPO (sigmoid, beta 0.1); reference = the same loaded base with adapters off, no graph, every step",
            Mode::Precomputed => "DPO (sigmoid, beta 0.1); reference log-probs precomputed before training (cost in the reference-precompute row)",
            Mode::SecondCopy => "DPO (sigmoid, beta 0.1); reference = a second loaded copy of the base (mlx-lm-lora's way), no graph, every step",
            Mode::Simpo => "SimPO (reference-free, length-normalised)",
            Mode::Orpo => "ORPO (reference-free, with its NLL term)",
        }
    }
}

/// One measured line: a mode on a workload (TRL's side writes the same shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub workload: String,
    pub mode: String,
    pub what: String,
    /// Every measured step, seconds (warm-up excluded).
    pub step_s: Vec<f64>,
    pub step_s_median: f64,
    /// Mean tokens per step (prompt + completion of the 4 sequences, no padding).
    pub tokens_per_step: f64,
    /// `tokens_per_step / step_s_median`.
    pub tokens_per_s: f64,
    /// Peak resident set of the process that ran the mode (VmHWM / ru_maxrss), MiB.
    pub peak_rss_mib: f64,
    /// Matrix-product FLOPs of a step (`flops` module), mean over the measured steps.
    pub gflop_per_step: Option<f64>,
    /// `gflop_per_step / step_s_median`.
    pub gflops: Option<f64>,
    /// `gflops` / this machine's measured matmul peak.
    pub peak_share: Option<f64>,
    /// The checkpoint keep level (`None` without checkpointing, and on TRL's side).
    #[serde(default)]
    pub keep: Option<String>,
    /// The memory plan's predicted peak for this mode (`dpo-lora plan`'s model), MiB.
    #[serde(default)]
    pub predicted_peak_mib: Option<f64>,
}

impl Row {
    /// The mode, with its keep level where a report measures several.
    pub fn label(&self, several_keeps: bool) -> String {
        match (&self.keep, several_keeps) {
            (Some(k), true) => format!("{} @{k}", self.mode),
            _ => self.mode.clone(),
        }
    }
}

/// Everything `bench.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub model: String,
    /// The model file's size, bytes (the scale checks compare peaks with it).
    #[serde(default)]
    pub model_file_bytes: u64,
    pub threads: usize,
    pub settings: serde_json::Value,
    pub workloads: serde_json::Value,
    pub matmul: Vec<flops::MatmulPoint>,
    pub matmul_peak_gflops: f64,
    pub results: Vec<Row>,
}

pub struct Options {
    pub model: String,
    pub device: crate::device::DeviceChoice,
    pub dtype: crate::device::ComputeDtype,
    pub backend: crate::model::BackendChoice,
    /// Recompute each block in the backward (the training default) instead of keeping its
    /// activations.
    pub gradient_checkpointing: bool,
    /// One row per pair with the prompt computed once (the training default).
    pub prefix_sharing: bool,
    pub workloads: Vec<Workload>,
    pub modes: Vec<Mode>,
    /// Checkpoint keep levels; every mode runs at each (one when checkpointing is off).
    pub keeps: Vec<crate::train::memory::KeepName>,
    pub warmup: usize,
    pub steps: usize,
    pub out: Option<PathBuf>,
    pub progress: bool,
}

/// Parse `--modes` / `--workloads` values; the error names every accepted value.
pub fn parse_list<T: Copy>(
    what: &str,
    items: &[String],
    all: &[T],
    parse: fn(&str) -> Option<T>,
    name: fn(T) -> &'static str,
) -> Result<Vec<T>> {
    if items.is_empty() {
        return Ok(all.to_vec());
    }
    items
        .iter()
        .map(|s| {
            parse(s.trim()).with_context(|| {
                format!(
                    "--{what}: unknown value `{s}`; choose from {}",
                    all.iter().map(|x| name(*x)).collect::<Vec<_>>().join(", ")
                )
            })
        })
        .collect()
}

/// The default output folder: `runs/bench/<model file stem>`.
pub fn default_out(model: &Path) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    PathBuf::from("runs/bench").join(stem)
}

/// Run every (workload, mode) in a child process and write the report into the output folder.
pub fn run(opts: &Options) -> Result<(Report, PathBuf)> {
    if opts.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let file = crate::session::open_file(&opts.model)?;
    let tok = crate::session::tokenizer(&file)?;
    let config = crate::model::Config::from_gguf(&file)?;
    let model_path = file.path.clone();
    let out = opts.out.clone().unwrap_or_else(|| default_out(&model_path));
    std::fs::create_dir_all(&out)
        .with_context(|| format!("--out {}: cannot create the folder", out.display()))?;

    let n_pairs = (opts.warmup + opts.steps) * measure::PAIRS_PER_STEP;
    let mut workload_info = serde_json::Map::new();
    let mut data_files = Vec::new();
    for &w in &opts.workloads {
        let pairs = workload::generate(w, &tok, n_pairs)?;
        let path = out.join(format!("workload-{}.jsonl", w.name()));
        workload::write_jsonl(&path, &pairs)?;
        let lens: Vec<_> = pairs.iter().map(|(_, l)| *l).collect();
        workload_info.insert(
            w.name().into(),
            serde_json::json!({
                "describe": w.describe(),
                "file": path.file_name().map(|f| f.to_string_lossy().into_owned()),
                "pairs": lens.len(),
                "max_length": workload::MAX_LENGTH,
                "lengths": lens,
            }),
        );
        data_files.push((w, path));
    }

    let bar = if opts.progress {
        ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    } else {
        ProgressBar::hidden()
    };
    // The peak is measured before and after the modes and the better of the two kept per size,
    // so that a burst of other work on the machine at one moment does not set it.
    bar.set_message("matrix-product peak");
    let matmul_before = flops::matmul_peak(config.hidden, config.ffn, 5);

    let keeps = if opts.gradient_checkpointing {
        &opts.keeps[..]
    } else {
        &opts.keeps[..1.min(opts.keeps.len())]
    };
    let jobs: Vec<(Workload, &PathBuf, KeepName, Mode)> = data_files
        .iter()
        .flat_map(|(w, p)| {
            keeps
                .iter()
                .flat_map(move |k| opts.modes.iter().map(move |m| (*w, p, *k, *m)))
        })
        .collect();
    let steps_of =
        |m: Mode| (opts.warmup + opts.steps) * if m == Mode::Precomputed { 2 } else { 1 };
    bar.set_length(jobs.iter().map(|j| steps_of(j.3) as u64).sum());
    let mut results = Vec::new();
    for (w, data, keep, mode) in jobs {
        bar.set_message(format!(
            "{} / {} / keep {}",
            w.name(),
            mode.name(),
            keep.name()
        ));
        let rows = run_child(&model_path, w, data, keep, mode, opts, &bar).with_context(|| {
            format!(
                "bench {} on the {} workload, keep {}",
                mode.name(),
                w.name(),
                keep.name()
            )
        })?;
        results.extend(rows);
    }
    bar.set_message("matrix-product peak");
    let matmul: Vec<flops::MatmulPoint> = matmul_before
        .into_iter()
        .zip(flops::matmul_peak(config.hidden, config.ffn, 5))
        .map(|(a, b)| if a.gflops >= b.gflops { a } else { b })
        .collect();
    let peak = matmul.iter().map(|p| p.gflops).fold(0.0, f64::max);
    bar.finish_and_clear();
    for r in &mut results {
        r.peak_share = r.gflops.map(|g| g / peak);
    }
    let report = Report {
        tool: format!("dpo-lora {}", env!("CARGO_PKG_VERSION")),
        model: model_path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        model_file_bytes: std::fs::metadata(&model_path).map_or(0, |m| m.len()),
        threads: rayon::current_num_threads(),
        settings: serde_json::json!({
            "pairs_per_step": measure::PAIRS_PER_STEP,
            "max_length": workload::MAX_LENGTH,
            "lora_rank": measure::LORA_RANK,
            "lora_alpha": measure::LORA_ALPHA,
            "lora_dropout": 0.0,
            "target_modules": crate::model::Target::ALL.iter().map(|t| t.hf_name()).collect::<Vec<_>>(),
            "beta": measure::BETA,
            "learning_rate": measure::LR,
            "max_grad_norm": measure::MAX_GRAD_NORM,
            "warmup_steps": opts.warmup,
            "measured_steps": opts.steps,
            "gradient_checkpointing": opts.gradient_checkpointing,
            "checkpoint_keep": keeps.iter().map(|k| k.name()).collect::<Vec<_>>(),
            "prefix_sharing": opts.prefix_sharing,
            "backend": opts.backend.to_string(),
        }),
        workloads: serde_json::Value::Object(workload_info),
        matmul,
        matmul_peak_gflops: peak,
        results,
    };
    report::write_all(&report, &out)?;
    Ok((report, out))
}

/// Re-run this binary for one mode and read its rows back.
fn run_child(
    model: &Path,
    w: Workload,
    data: &Path,
    keep: KeepName,
    mode: Mode,
    opts: &Options,
    bar: &ProgressBar,
) -> Result<Vec<Row>> {
    let exe = std::env::current_exe().context("cannot find this program to re-run it")?;
    let mut child = Command::new(exe)
        .arg("bench")
        .arg("--model")
        .arg(model)
        .args(["--child", mode.name(), "--workloads", w.name()])
        .arg("--child-data")
        .arg(data)
        .args([
            "--warmup",
            &opts.warmup.to_string(),
            "--steps",
            &opts.steps.to_string(),
            "--device",
            &opts.device.to_string(),
            "--dtype",
            &format!("{:?}", opts.dtype).to_lowercase(),
            "--backend",
            &opts.backend.to_string(),
            "--keep",
            keep.name(),
        ])
        .args((!opts.gradient_checkpointing).then_some("--no-gradient-checkpointing"))
        .args((!opts.prefix_sharing).then_some("--no-prefix-sharing"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the bench child process")?;
    let mut log = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines() {
            let line = line.unwrap_or_default();
            if line.starts_with("step ") {
                bar.inc(1);
            } else {
                log.push(line);
            }
        }
    }
    let mut stdout = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut stdout)?;
    }
    let status = child.wait()?;
    if !status.success() {
        let last = log.iter().rev().find(|l| !l.trim().is_empty());
        bail!(
            "the child process failed ({status}): {}",
            last.map(String::as_str).unwrap_or("no message")
        );
    }
    serde_json::from_str(stdout.trim()).context("the child process printed no result")
}

/// The hidden child side: measure `job` and print its rows as JSON on stdout.
pub fn child(job: &measure::Job) -> Result<()> {
    let rows = measure::run(job, &mut |done, total| eprintln!("step {done}/{total}"))?;
    println!("{}", serde_json::to_string(&rows)?);
    Ok(())
}
