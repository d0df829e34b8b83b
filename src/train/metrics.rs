//! `metrics.jsonl`, the run's curves: one JSON line per optimizer step (`"kind": "train"`, with
//! `grad_norm`, `learning_rate`, `tokens/s`) and per evaluation (`"kind": "eval"`), under the
//! names TRL users know (`loss`, `rewards/chosen`, ...; see `loss::PairMetrics`).
//!
//! Owns: opening the file for a run (on resume, first dropping the lines past the checkpoint,
//! which the resumed run writes again) and writing a line. Does not: read it back (see `plot`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::loss::PairMetrics;

/// The run's `metrics.jsonl`, open for appending.
pub struct Metrics {
    path: PathBuf,
    file: std::fs::File,
}

impl Metrics {
    /// `<out_dir>/metrics.jsonl` for a run going on from optimizer step `start_step` (0: a new
    /// run): the lines of later steps are dropped.
    pub fn open(out_dir: &Path, start_step: usize) -> Result<Self> {
        let path = out_dir.join("metrics.jsonl");
        truncate(&path, start_step)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        Ok(Self { path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The line of optimizer step `step`: its metrics, gradient norm (before clipping),
    /// learning rate and tokens per second.
    pub fn train(
        &mut self,
        step: usize,
        epoch: f64,
        m: &PairMetrics,
        (grad_norm, lr, tokens_per_s): (f64, f64, f64),
    ) -> Result<()> {
        write(
            &mut self.file,
            "train",
            step,
            epoch,
            m,
            Some((grad_norm, lr, tokens_per_s)),
        )
    }

    /// The line of an evaluation after `step` optimizer steps.
    pub fn eval(&mut self, step: usize, epoch: f64, m: &PairMetrics) -> Result<()> {
        write(&mut self.file, "eval", step, epoch, m, None)
    }
}

/// On resume, drop the metric lines past the checkpoint (they will be written again).
fn truncate(path: &Path, keep_up_to: usize) -> Result<()> {
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

fn write(
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
