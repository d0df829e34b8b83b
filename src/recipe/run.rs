//! A recipe resolved into what the stages receive (ripgrep's raw args -> `HiArgs`): the
//! sections as written, the loss as one tagged value ([`Loss`]) and the reference as one enum
//! ([`Reference`]), each decided once here instead of in the stage that uses it.
//!
//! Owns: [`RunSpec`], [`Reference`] and where precomputed reference values are cached by
//! default. Does not: check ranges (see `validate`: a recipe read by `Recipe::load` has passed
//! them) or build anything.

use std::path::PathBuf;

use super::{Loss, Recipe, ReferenceMode};

/// Where π_ref's log-probs come from: `reference.mode` resolved against the loss. `P` is what
/// stands for the precomputed values: in a [`RunSpec`] the folder they are cached in, in a run
/// the values themselves (`train::reference::Precomputed`). The per-micro-batch values handed
/// to a forward are `train::RefVals`, a different thing: borrowed, one micro-batch's, and able
/// to name another model (`dpo-lora bench`'s second copy of the base).
#[derive(Debug, Clone, PartialEq)]
pub enum Reference<P = PathBuf> {
    /// The loss needs none (SimPO, ORPO).
    None,
    /// The same loaded base with adapters off (plus `lora.init_from`, frozen), at every step.
    AdaptersOff,
    /// One no-gradient pass over the data before training, cached on disk.
    Precomputed(P),
}

/// A validated recipe resolved: what `train` prepares, loops and finishes with.
#[derive(Debug, Clone)]
pub struct RunSpec<'a> {
    /// The sections as written (data, lora, train, output, ...).
    pub recipe: &'a Recipe,
    pub loss: Loss,
    pub reference: Reference,
}

impl Recipe {
    /// This recipe resolved, or `Err((key, what is wrong))` where it does not pass `validate`'s
    /// loss checks.
    pub fn spec(&self) -> Result<RunSpec<'_>, (String, String)> {
        let loss = self.loss.resolve()?;
        let reference = match (loss.kind.uses_reference(), self.reference.mode) {
            (false, _) => Reference::None,
            (true, ReferenceMode::AdaptersOff) => Reference::AdaptersOff,
            (true, ReferenceMode::Precomputed) => Reference::Precomputed(
                self.reference
                    .cache_dir
                    .clone()
                    .unwrap_or_else(default_cache_dir),
            ),
        };
        Ok(RunSpec {
            recipe: self,
            loss,
            reference,
        })
    }
}

/// `$DPO_LORA_CACHE/reference`, else `~/.cache/dpo-lora/reference`.
pub fn default_cache_dir() -> PathBuf {
    match std::env::var_os("DPO_LORA_CACHE") {
        Some(d) => PathBuf::from(d).join("reference"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/dpo-lora/reference"),
    }
}
