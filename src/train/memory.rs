//! What a training step will hold, planned before the first step runs.
//!
//! Owns: resolving `train.checkpoint_keep: auto` from the memory available and the largest
//! micro-batch the recipe allows. Does not: measure anything (see `dpo-lora bench`) or
//! allocate; a wrong guess costs speed (`none` recomputes more) or memory, never correctness:
//! every level gives the same numbers (`cargo test --test model gradient_checkpointing`).

use crate::model::{Keep, Model};
use crate::recipe::CheckpointKeep;

/// The share of the available memory the kept outputs may take under `auto`.
const KEPT_SHARE: f64 = 0.25;

/// The keep level for `choice`, and one line that says why.
pub fn checkpoint_keep(
    choice: CheckpointKeep,
    model: &Model,
    pairs_per_step: usize,
    max_length: usize,
) -> (Keep, String) {
    let fixed = |k: Keep| (k, format!("checkpoint_keep: {}", name(k)));
    match choice {
        CheckpointKeep::None => fixed(Keep::None),
        CheckpointKeep::Mlp => fixed(Keep::Mlp),
        CheckpointKeep::Projections => fixed(Keep::Projections),
        CheckpointKeep::Auto => {
            let c = &model.config;
            // A packed pair is at most a prompt and two completions: 2 x max_length tokens.
            let tokens = pairs_per_step * 2 * max_length;
            let bytes = |k: Keep| {
                (c.n_layer * tokens * k.floats_per_token(c.hidden, c.ffn)) as f64
                    * model.dtype().size_in_bytes() as f64
            };
            let Some(avail) = crate::device::free_memory(model.device()) else {
                let k = Keep::Mlp;
                return (
                    k,
                    format!(
                        "checkpoint_keep: auto -> {} (the device's free memory is not known; \
                         kept outputs <= {:.0} MiB per micro-batch)",
                        name(k),
                        bytes(k) / MIB
                    ),
                );
            };
            let k = [Keep::Projections, Keep::Mlp, Keep::None]
                .into_iter()
                .find(|&k| bytes(k) <= KEPT_SHARE * avail as f64)
                .unwrap_or(Keep::None);
            (
                k,
                format!(
                    "checkpoint_keep: auto -> {} (kept outputs <= {:.0} MiB per micro-batch, \
                     {:.1} GiB available)",
                    name(k),
                    bytes(k) / MIB,
                    avail as f64 / (1024.0 * MIB)
                ),
            )
        }
    }
}

const MIB: f64 = (1 << 20) as f64;

fn name(k: Keep) -> &'static str {
    match k {
        Keep::None => "none",
        Keep::Mlp => "mlp",
        Keep::Projections => "projections",
    }
}
