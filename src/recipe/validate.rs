//! The checks a recipe needs no model for: ranges and combinations, each failure naming the key
//! and how to fix it.

use super::{Recipe, ReferenceMode};

impl Recipe {
    /// Range and combination checks: `Err((key, what is wrong and how to fix it))`.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: String| Err((k.to_string(), m));
        let (t, d, l, s) = (&self.train, &self.data, &self.lora, &self.loss);
        if !positive(t.lr) {
            return bad(
                "train.lr",
                format!("must be a positive number, got {}", t.lr),
            );
        }
        if t.batch_size == 0 || t.grad_accum == 0 {
            return bad(
                "train.batch_size",
                "and train.grad_accum must be at least 1".into(),
            );
        }
        if t.max_steps.is_none() && t.epochs.is_none() {
            return bad(
                "train.max_steps",
                "is missing: give train.max_steps and/or train.epochs".into(),
            );
        }
        if t.max_steps == Some(0) || t.epochs.is_some_and(|e| !positive(e)) {
            return bad(
                "train.max_steps",
                "and train.epochs must be positive".into(),
            );
        }
        if !(0.0..1.0).contains(&t.weight_decay) {
            return bad(
                "train.weight_decay",
                format!("must be in [0, 1), got {}", t.weight_decay),
            );
        }
        if t.max_grad_norm.is_some_and(|c| !positive(c)) {
            return bad(
                "train.max_grad_norm",
                "must be positive (or null for no clipping)".into(),
            );
        }
        if t.keep_checkpoints == 0 {
            return bad("train.keep_checkpoints", "must be at least 1".into());
        }
        if d.max_length < 4 {
            return bad(
                "data.max_length",
                format!("must be at least 4, got {}", d.max_length),
            );
        }
        if let Some(p) = d.max_prompt_length {
            if p == 0 || p >= d.max_length {
                return bad(
                    "data.max_prompt_length",
                    format!(
                        "must be in 1..{} (below data.max_length), got {p}",
                        d.max_length
                    ),
                );
            }
        }
        for (key, sources) in [
            ("data.train", Some(&d.train)),
            ("data.eval", d.eval.as_ref()),
        ] {
            for spec in sources.iter().flat_map(|s| s.0.iter()) {
                if let Some(x) = spec.fraction {
                    if !(x > 0.0 && x <= 1.0) {
                        return bad(
                            key,
                            format!("{}: fraction must be in (0, 1], got {x}", spec.path),
                        );
                    }
                }
            }
        }
        if !(0.0..1.0).contains(&d.eval_fraction) {
            return bad(
                "data.eval_fraction",
                format!("must be in [0, 1), got {}", d.eval_fraction),
            );
        }
        if let Some(r) = t.warmup_ratio {
            if !(0.0..1.0).contains(&r) {
                return bad("train.warmup_ratio", format!("must be in [0, 1), got {r}"));
            }
            if t.warmup_steps > 0 {
                return bad(
                    "train.warmup_ratio",
                    "and train.warmup_steps are both set; give one (warmup_ratio is a share of the run's steps)".into(),
                );
            }
        }
        if l.rank == 0 {
            return bad("lora.rank", "must be at least 1".into());
        }
        if !positive(l.alpha) {
            return bad("lora.alpha", format!("must be positive, got {}", l.alpha));
        }
        if !(0.0..1.0).contains(&l.dropout) {
            return bad(
                "lora.dropout",
                format!("must be in [0, 1), got {}", l.dropout),
            );
        }
        if l.target_modules.is_empty() {
            return bad("lora.target_modules", "is empty: name at least one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj".into());
        }
        s.resolve()?;
        for (i, e) in self.output.export.iter().enumerate() {
            if let Err(m) = e.check() {
                return bad(&format!("output.export[{i}]"), m);
            }
        }
        if !s.kind.uses_reference() && self.reference.mode == ReferenceMode::Precomputed {
            return bad(
                "reference.mode",
                format!(
                    "precomputed is pointless with the reference-free loss `{}`; drop it",
                    s.kind.name()
                ),
            );
        }
        Ok(())
    }
}

/// A finite number above zero (NaN is not).
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}
