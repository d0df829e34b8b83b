//! Checkpoints: `OUTPUT/checkpoints/step-NNNNNN/` holding the adapter (PEFT layout), the
//! optimizer moments and `state.json` (step, pairs consumed). Written into a temporary folder and
//! renamed, so a crash mid-write never leaves a broken checkpoint where a good one was; the last
//! `keep` are kept. Data order and dropout masks are functions of (seed, position), so these files
//! are all an exact resume needs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::optim::AdamW;
use crate::model::peft::{self, BaseInfo};
use crate::model::Lora;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// Optimizer steps completed.
    pub step: usize,
    /// Training pairs consumed so far (the data position).
    pub pairs_consumed: usize,
    pub seed: u64,
}

pub fn root(output: &Path) -> PathBuf {
    output.join("checkpoints")
}

fn name(step: usize) -> String {
    format!("step-{step:06}")
}

/// Write a checkpoint for `state.step` and prune to the last `keep`.
pub fn write(
    output: &Path,
    lora: &Lora,
    opt: &AdamW,
    state: &State,
    base: &BaseInfo,
    keep: usize,
) -> Result<PathBuf> {
    let root = root(output);
    let final_dir = root.join(name(state.step));
    let res = (|| -> Result<()> {
        std::fs::create_dir_all(&root)
            .with_context(|| format!("{}: cannot create", root.display()))?;
        let staging = crate::atomic::Staging::new(&final_dir, true)?;
        let tmp = staging.dir();
        peft::save(lora, &tmp.join("adapter"), base, None)?;
        opt.save(&tmp.join("optimizer.safetensors"))?;
        std::fs::write(tmp.join("state.json"), serde_json::to_string_pretty(state)?)?;
        staging.commit()
    })();
    res.map_err(|e| failed(output, &final_dir, &e))?;
    let all = list(output);
    if all.len() > keep {
        for (dir, _) in &all[..all.len() - keep] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    Ok(final_dir)
}

/// A failed checkpoint write as one line that says what is still good and how to go on from it.
fn failed(output: &Path, dir: &Path, e: &anyhow::Error) -> anyhow::Error {
    let good = match latest(output) {
        Some((d, st)) => format!(
            "the last good checkpoint is {} (step {}); free space (or fix the folder) and rerun with --resume to continue from it",
            d.display(),
            st.step
        ),
        None => "no checkpoint was written before it; free space (or fix the folder) and rerun".into(),
    };
    anyhow::anyhow!(
        "{}: writing the checkpoint failed: {}; {good}",
        dir.display(),
        crate::errors::one_line(e)
    )
}

/// Complete checkpoints, oldest first.
pub fn list(output: &Path) -> Vec<(PathBuf, State)> {
    let Ok(rd) = std::fs::read_dir(root(output)) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, State)> = rd
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("step-"))
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("state.json")).ok()?;
            let st: State = serde_json::from_str(&text).ok()?;
            Some((e.path(), st))
        })
        .collect();
    out.sort_by_key(|(_, s)| s.step);
    out
}

pub fn latest(output: &Path) -> Option<(PathBuf, State)> {
    list(output).pop()
}
