//! `--resume`: a run goes on from the latest complete checkpoint in its folder (see
//! `checkpoint`), its adapter and optimizer moments put back.
//!
//! The data position needs nothing more: the visiting order and the dropout masks are
//! functions of `train.seed` and the position (`data::batch::Order`, `SplitMix64::keyed`), and
//! the position after `step` optimizer steps is `step · batch_size · grad_accum` pairs, so a run
//! resumed at step k goes on exactly as the uninterrupted one. Hence a checkpoint made with
//! another seed is refused.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::checkpoint;
use super::optim::AdamW;
use crate::model::{peft, Lora, Model};

/// Put the latest checkpoint in `out_dir` into `lora` and `opt`; the optimizer steps it had
/// done (0, with a note, when there is none).
pub fn restore(
    out_dir: &Path,
    model: &Model,
    lora: &Lora,
    opt: &mut AdamW,
    seed: u64,
) -> Result<usize> {
    let Some((dir, st)) = checkpoint::latest(out_dir) else {
        eprintln!(
            "--resume: no checkpoint in {}, starting at step 0",
            checkpoint::root(out_dir).display()
        );
        return Ok(0);
    };
    let saved = peft::load(&dir.join("adapter"), model, model.device())
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
    opt.load(&dir.join("optimizer.safetensors"), st.step, model.device())?;
    if st.seed != seed {
        bail!("{}: the checkpoint was made with train.seed {}, the recipe says {}; resume with the same recipe", dir.display(), st.seed, seed);
    }
    eprintln!("resuming from {} (step {})", dir.display(), st.step);
    Ok(st.step)
}
