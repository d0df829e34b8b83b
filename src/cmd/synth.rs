//! `dpo-lora synth`: a random GGUF model, tiny (any supported architecture) or of a real model's
//! shape (`--shape`), written tensor by tensor with a progress bar.

use std::io::IsTerminal;

use anyhow::{bail, Result};
use candle_core::quantized::GgmlDType;

use crate::cli::SynthArgs;
use crate::export::QuantChoice;
use crate::synth::{shapes, SynthArch, SynthSpec};

pub fn run(a: SynthArgs) -> Result<()> {
    let mut spec = match &a.shape {
        Some(name) => {
            let Some(shape) = shapes::find(name) else {
                bail!("--shape {name}: choose one of {}", shapes::names())
            };
            SynthSpec::from_shape(shape)
        }
        None => {
            let Some(arch) = SynthArch::ALL.into_iter().find(|x| x.gguf_name() == a.arch) else {
                bail!(
                    "--arch {}: choose one of llama, qwen2, qwen3, gemma3",
                    a.arch
                )
            };
            SynthSpec::tiny(arch)
        }
    };
    if let Some(w) = &a.weight_type {
        spec.weight_type = weight_type(w)?;
        if a.shape.is_some() {
            spec.embed_type = spec.weight_type;
        }
    }
    if a.vocab.is_some() {
        spec.vocab = a.vocab;
    }
    spec.seed = a.seed;
    spec.zeros = a.zeros;
    for (size, given) in [
        (&mut spec.hidden, a.hidden),
        (&mut spec.ffn, a.ffn),
        (&mut spec.n_layer, a.n_layer),
        (&mut spec.n_head, a.n_head),
        (&mut spec.n_kv_head, a.n_kv_head),
        (&mut spec.head_dim, a.head_dim),
    ] {
        if let Some(v) = given {
            *size = v;
        }
    }
    if let Some(t) = &a.chat_template {
        spec.chat_template =
            Some(std::fs::read_to_string(t).map_err(|e| {
                anyhow::anyhow!("--chat-template {}: cannot read: {e}", t.display())
            })?);
    }
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", dir.display()))?;
    }
    spec.write_with(&a.out, std::io::stderr().is_terminal())?;
    println!("{}", a.out.display());
    Ok(())
}

/// A `--weight-type` name, as `--quant` names types.
fn weight_type(name: &str) -> Result<GgmlDType> {
    match name.parse::<QuantChoice>() {
        Ok(QuantChoice::All(t)) => Ok(t),
        Ok(_) => bail!("--weight-type {name}: name one type (f32, f16, q8_0, q4_k, ...)"),
        Err(e) => bail!("--weight-type {name}: {e}"),
    }
}
