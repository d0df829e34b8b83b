//! `dpo-lora score`: summed completion log-probs per record, TRL's tokenization.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::ScoreArgs;
use crate::data::{encode_pair, read_all, ReadSpec, Sources};
use crate::model::{Adapters, Scored};

pub fn run(a: ScoreArgs) -> Result<()> {
    let mut l = super::load(&a.model)?;
    l.tok
        .set_chat_template(
            a.chat_template.as_deref(),
            &a.template_kwargs.clone().unwrap_or_default(),
        )
        .map_err(|e| anyhow::anyhow!("--chat-template: {e}"))?;
    let lora = super::adapter(a.adapter.as_deref(), &l)?;
    let (model, tok) = (&l.model, &l.tok);
    let adapters = lora.as_ref().map_or(Adapters::Off, Adapters::On);
    let records = read_all(
        &Sources::one(a.data.to_string_lossy()),
        &ReadSpec {
            format: a.format,
            ..ReadSpec::default()
        },
    )?;
    let limit = a.max_length.unwrap_or(model.config.context_length);
    let mut pairs = Vec::with_capacity(records.len());
    for r in &records {
        let p = encode_pair(tok, r).with_context(|| r.at.to_string())?;
        for (name, side) in [("chosen", &p.chosen), ("rejected", &p.rejected)] {
            if side.ids.len() > limit {
                anyhow::bail!(
                    "{}: the {name} sequence has {} tokens, over {} ({}); shorten the record or pass a larger --max-length",
                    r.at,
                    side.ids.len(),
                    limit,
                    if a.max_length.is_some() { "--max-length" } else { "the model's context length" }
                );
            }
        }
        for side in [&p.chosen, &p.rejected] {
            if side.prompt_len == 0 {
                anyhow::bail!(
                    "{}: the prompt is empty and the model adds no BOS token, so the first completion token has no context; give a non-empty prompt",
                    r.at
                );
            }
        }
        pairs.push(p);
    }
    let total: u64 = pairs
        .iter()
        .map(|p| (p.chosen.ids.len() + p.rejected.ids.len()) as u64)
        .sum();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} tokens  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    for (r, p) in records.iter().zip(&pairs) {
        let seqs = [
            Scored {
                ids: &p.chosen.ids,
                score_from: p.chosen.prompt_len,
            },
            Scored {
                ids: &p.rejected.ids,
                score_from: p.rejected.prompt_len,
            },
        ];
        let lp = model.sequence_logps(&seqs, adapters)?;
        let sums = lp.sums.to_vec1::<f32>()?;
        let mut line = serde_json::json!({
            "index": r.index,
            "chosen": sums[0] as f64,
            "rejected": sums[1] as f64,
            "chosen_tokens": p.chosen.completion().len(),
            "rejected_tokens": p.rejected.completion().len(),
        });
        if a.ids {
            line["chosen_ids"] = serde_json::json!(p.chosen.ids);
            line["chosen_from"] = serde_json::json!(p.chosen.prompt_len);
            line["rejected_ids"] = serde_json::json!(p.rejected.ids);
            line["rejected_from"] = serde_json::json!(p.rejected.prompt_len);
        }
        writeln!(out, "{line}")?;
        bar.inc((p.chosen.ids.len() + p.rejected.ids.len()) as u64);
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "scored {} records, {total} tokens in {secs:.2} s ({:.0} tokens/s)",
        records.len(),
        total as f64 / secs.max(1e-9)
    );
    Ok(())
}
