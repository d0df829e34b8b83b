//! `dpo-lora generate`: sample from the model. No KV cache (the forward is the training one), so
//! each step reruns the sequence; fine for the short answers this is for.

use std::io::Write;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};

use crate::cli::GenerateArgs;
use crate::data::encode::with_bos;
use crate::model::Adapters;
use crate::tokenizer::Message;

pub fn run(a: GenerateArgs) -> Result<()> {
    let l = super::load(&a.model)?;
    let lora = super::adapter(a.adapter.as_deref(), &l)?;
    let (model, tok) = (&l.model, &l.tok);
    let adapters = lora.as_ref().map_or(Adapters::Off, Adapters::On);
    if !(a.temperature >= 0.0 && a.temperature.is_finite()) {
        anyhow::bail!(
            "--temperature must be >= 0 (0 = greedy), got {}",
            a.temperature
        );
    }
    let mut ids = if a.chat {
        let tpl = tok
            .chat_template()
            .with_context(|| format!("{}: no chat template; drop --chat", l.path.display()))?;
        let text = tpl.render(
            &[Message {
                role: "user".into(),
                content: a.prompt.clone(),
            }],
            true,
        )?;
        with_bos(tok, &text, true)
    } else {
        with_bos(tok, &a.prompt, false)
    };
    if ids.is_empty() {
        anyhow::bail!("the prompt is empty and the model adds no BOS; give a prompt");
    }
    let limit = model.config.context_length;
    if ids.len() >= limit {
        anyhow::bail!(
            "the prompt has {} tokens and the model's context is {limit}; shorten the prompt",
            ids.len()
        );
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let mut out = std::io::stdout().lock();
    let mut generated = Vec::new();
    let mut printed = 0;
    for _ in 0..a.max_tokens {
        if ids.len() >= limit {
            break;
        }
        let t = ids.len();
        let h = model.forward_hidden(&ids, &[t], t, adapters)?;
        let last = h
            .squeeze(0)?
            .narrow(0, t - 1, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let logits = model.output_weight().matmul_t(&last, 1)?;
        let next = sample(&logits, a.temperature, &mut rng);
        if tok.is_eog(next) {
            break;
        }
        ids.push(next);
        generated.push(next);
        // Print what decodes to complete characters so far.
        let text = tok.decode(&generated);
        if text.len() > printed && !text.ends_with('\u{FFFD}') {
            write!(out, "{}", &text[printed..])?;
            out.flush()?;
            printed = text.len();
        }
    }
    let text = tok.decode(&generated);
    if text.len() > printed {
        write!(out, "{}", &text[printed..])?;
    }
    writeln!(out)?;
    Ok(())
}

fn sample(logits: &[f32], temperature: f64, rng: &mut impl Rng) -> u32 {
    let argmax = logits
        .iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
        )
        .0;
    if temperature == 0.0 {
        return argmax as u32;
    }
    let max = logits[argmax] as f64;
    let w: Vec<f64> = logits
        .iter()
        .map(|&x| ((x as f64 - max) / temperature).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut r = rng.random::<f64>() * total;
    for (i, x) in w.iter().enumerate() {
        r -= x;
        if r <= 0.0 {
            return i as u32;
        }
    }
    argmax as u32
}
