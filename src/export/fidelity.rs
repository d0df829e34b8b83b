//! Whether a merged export still does what training taught, measured on behaviour: held-out
//! pairs scored with the exported weights, with base + adapter, and with the base alone.
//!
//! Owns: the scoring of the three models over the same pairs (a progress bar, pairs a few at a
//! time), the numbers ([`Fidelity`]: the trained change kept, preference agreement, per-
//! completion log-prob deltas), their table for the log and the model card, and the warning when
//! an export keeps too little. Does not: read data (see `train::sets`) or build the exported
//! model (see `gguf` and `hf`, which load what they wrote).
//!
//! Definitions, per pair: margin = log π(chosen) − log π(rejected), each a summed completion
//! log-prob. The trained change of a model is its margin minus the base's. `kept` = the mean
//! trained change of the export over the mean trained change of base + adapter (ratio of means:
//! a pair the adapter hardly moved cannot blow it up). Agreement = the share of pairs on which a
//! model prefers the same completion as base + adapter.

use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::data::batch::TrainPair;
use crate::model::{Adapters, Lora, Model};

/// An export warns unless it keeps between this share of the trained change and its inverse (a
/// change much larger than the adapter's is rounding noise, not training)...
pub const KEEP_AT_LEAST: f64 = 0.8;
/// ... and prefers what base + adapter prefers on at least this share of the pairs.
pub const AGREE_AT_LEAST: f64 = 0.95;

/// Held-out pairs scored by default: enough for the mean change to settle (the quick start's 44
/// all fit), few enough that scoring three ways stays a small part of an export.
pub const DEFAULT_PAIRS: usize = 64;

/// Pairs scored at once (each pair's prompt computed once for both completions).
const PAIRS_PER_PASS: usize = 4;

/// The file written into the export folder.
pub const FILE: &str = "fidelity.json";

/// What an export keeps of the trained behaviour, over `pairs` held-out pairs.
#[derive(Debug, Clone, Serialize)]
pub struct Fidelity {
    /// Where the pairs came from.
    pub data: String,
    pub pairs: usize,
    /// Mean margin (nats) of the base, base + adapter, and the export.
    pub margin_base: f64,
    pub margin_adapted: f64,
    pub margin_export: f64,
    /// Mean trained change (nats): base + adapter's margin minus the base's, and the export's.
    pub change_adapted: f64,
    pub change_export: f64,
    /// `change_export / change_adapted`.
    pub kept: f64,
    /// Share of pairs where the export / the base prefer what base + adapter prefers.
    pub agreement: f64,
    pub agreement_base: f64,
    /// |export − base + adapter| of each completion's summed log-prob, mean and max (nats).
    pub mean_abs_delta: f64,
    pub max_abs_delta: f64,
}

/// The three scores of one completion.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    base: f64,
    adapted: f64,
    export: f64,
}

/// Score `pairs` with `base` (adapters off and on `lora`) and with `export` (no adapter).
pub fn measure(
    base: &Model,
    lora: &Lora,
    export: &Model,
    pairs: &[TrainPair],
    data: &str,
    progress: bool,
) -> Result<Fidelity> {
    anyhow::ensure!(!pairs.is_empty(), "{data}: no held-out pairs to score");
    let bar = if progress {
        ProgressBar::new(pairs.len() as u64).with_style(
            ProgressStyle::with_template(
                "fidelity {bar:30} {pos}/{len} pairs  {per_sec}  eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    } else {
        ProgressBar::hidden()
    };
    let mut chosen = Vec::with_capacity(pairs.len());
    let mut rejected = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(PAIRS_PER_PASS) {
        let refs: Vec<&TrainPair> = chunk.iter().collect();
        let seqs = crate::train::reference::pair_sequences(&refs);
        let sums = |m: &Model, a: Adapters| -> Result<Vec<f32>> {
            Ok(m.pair_logps(&seqs, a)?.sums.to_vec1::<f32>()?)
        };
        let b = sums(base, Adapters::Off)?;
        let a = sums(base, Adapters::On(lora))?;
        let e = sums(export, Adapters::Off)?;
        let n = chunk.len();
        for i in 0..n {
            let at = |j: usize| Sums {
                base: b[j] as f64,
                adapted: a[j] as f64,
                export: e[j] as f64,
            };
            chosen.push(at(i));
            rejected.push(at(n + i));
        }
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(summarize(&chosen, &rejected, data))
}

fn summarize(chosen: &[Sums], rejected: &[Sums], data: &str) -> Fidelity {
    let n = chosen.len() as f64;
    let (mut mb, mut ma, mut me) = (0.0, 0.0, 0.0);
    let (mut agree, mut agree_base) = (0usize, 0usize);
    let (mut sum_abs, mut max_abs) = (0.0f64, 0.0f64);
    for (c, r) in chosen.iter().zip(rejected) {
        let (b, a, e) = (c.base - r.base, c.adapted - r.adapted, c.export - r.export);
        mb += b;
        ma += a;
        me += e;
        agree += usize::from((e > 0.0) == (a > 0.0));
        agree_base += usize::from((b > 0.0) == (a > 0.0));
        for s in [c, r] {
            let d = (s.export - s.adapted).abs();
            sum_abs += d;
            max_abs = max_abs.max(d);
        }
    }
    let (mb, ma, me) = (mb / n, ma / n, me / n);
    let change_adapted = ma - mb;
    let change_export = me - mb;
    Fidelity {
        data: data.to_string(),
        pairs: chosen.len(),
        margin_base: mb,
        margin_adapted: ma,
        margin_export: me,
        change_adapted,
        change_export,
        kept: change_export / change_adapted,
        agreement: agree as f64 / n,
        agreement_base: agree_base as f64 / n,
        mean_abs_delta: sum_abs / (2.0 * n),
        max_abs_delta: max_abs,
    }
}

impl Fidelity {
    /// One line for the log.
    pub fn summary(&self) -> String {
        format!(
            "fidelity on {} held-out pairs: kept {:.1} % of the trained change ({:.2} of {:.2} nats of margin), agreement with base + adapter {:.1} % (base alone {:.1} %), |delta| per completion mean {:.3} max {:.3} nats",
            self.pairs,
            100.0 * self.kept,
            self.change_export,
            self.change_adapted,
            100.0 * self.agreement,
            100.0 * self.agreement_base,
            self.mean_abs_delta,
            self.max_abs_delta
        )
    }

    /// A warning when the export does not keep the trained behaviour ([`KEEP_AT_LEAST`],
    /// [`AGREE_AT_LEAST`]), naming what would keep it.
    pub fn warning(&self, finer: &str) -> Option<String> {
        let kept_ok = (KEEP_AT_LEAST..=1.0 / KEEP_AT_LEAST).contains(&self.kept);
        let agree_ok = self.agreement >= AGREE_AT_LEAST;
        (!(kept_ok && agree_ok)).then(|| {
            format!(
                "warning: this export does not do what training taught: it keeps {:.1} % of the trained change (want {:.0}-{:.0} %) and agrees with base + adapter on {:.1} % of the pairs (want at least {:.0} %); re-quantization rounded the adapter away or buried it in noise. Use {finer}, or --format gguf-lora",
                100.0 * self.kept,
                100.0 * KEEP_AT_LEAST,
                100.0 / KEEP_AT_LEAST,
                100.0 * self.agreement,
                100.0 * AGREE_AT_LEAST
            )
        })
    }

    /// The model card's table.
    pub fn markdown(&self) -> String {
        format!(
            "Scored on {} held-out pairs (`{}`); margin = chosen minus rejected summed log-prob (nats).\n\n\
             | | base | base + adapter | this export |\n|---|---|---|---|\n\
             | mean margin | {:.3} | {:.3} | {:.3} |\n\
             | trained change kept | 0 % | 100 % | {:.1} % |\n\
             | agreement with base + adapter | {:.1} % | 100 % | {:.1} % |\n\n\
             Per-completion log-prob vs base + adapter: mean |delta| {:.4}, max {:.4} nats.\n",
            self.pairs,
            self.data,
            self.margin_base,
            self.margin_adapted,
            self.margin_export,
            100.0 * self.kept,
            100.0 * self.agreement_base,
            100.0 * self.agreement,
            self.mean_abs_delta,
            self.max_abs_delta
        )
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(dir.join(FILE), text).context(FILE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(base: f64, adapted: f64, export: f64) -> Sums {
        Sums {
            base,
            adapted,
            export,
        }
    }

    #[test]
    fn an_exact_export_keeps_everything_and_a_lost_one_nothing() {
        // pair 0: adapter moves margin 1 -> 5; pair 1: -1 -> 1 (the adapter flips it).
        let chosen = [s(-10.0, -8.0, -8.0), s(-5.0, -4.0, -4.0)];
        let rejected = [s(-11.0, -13.0, -13.0), s(-4.0, -5.0, -5.0)];
        let f = summarize(&chosen, &rejected, "x");
        assert!((f.kept - 1.0).abs() < 1e-12);
        assert_eq!(f.agreement, 1.0);
        assert_eq!(f.agreement_base, 0.5);
        assert_eq!(f.max_abs_delta, 0.0);
        assert!(f.warning("f16").is_none());
        // The export is the base again: nothing kept, agreement as the base's.
        let lost_c = [s(-10.0, -8.0, -10.0), s(-5.0, -4.0, -5.0)];
        let lost_r = [s(-11.0, -13.0, -11.0), s(-4.0, -5.0, -4.0)];
        let f = summarize(&lost_c, &lost_r, "x");
        assert!(f.kept.abs() < 1e-12);
        assert_eq!(f.agreement, 0.5);
        assert!((f.max_abs_delta - 2.0).abs() < 1e-12);
        assert!(f.warning("f16").unwrap().contains("f16"));
        // Noise much larger than the adapter's change is not kept training either.
        let noisy_c = [s(-10.0, -8.0, -2.0), s(-5.0, -4.0, -4.0)];
        let f = summarize(&noisy_c, &chosen_r(), "x");
        assert!(f.kept > 1.25 && f.agreement == 1.0);
        assert!(f.warning("f16").is_some());
    }

    fn chosen_r() -> [Sums; 2] {
        [s(-11.0, -13.0, -13.0), s(-4.0, -5.0, -5.0)]
    }
}
