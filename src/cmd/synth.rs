//! `dpo-lora synth`: a tiny random GGUF model of any supported architecture.

use anyhow::{bail, Result};
use candle_core::quantized::GgmlDType;

use crate::cli::SynthArgs;
use crate::synth::{SynthArch, SynthSpec};

pub fn run(a: SynthArgs) -> Result<()> {
    let Some(arch) = SynthArch::ALL.into_iter().find(|x| x.gguf_name() == a.arch) else {
        bail!(
            "--arch {}: choose one of llama, qwen2, qwen3, gemma3",
            a.arch
        )
    };
    let wt = match a.weight_type.to_ascii_lowercase().as_str() {
        "f32" => GgmlDType::F32,
        "f16" => GgmlDType::F16,
        "bf16" => GgmlDType::BF16,
        "q4_0" => GgmlDType::Q4_0,
        "q4_1" => GgmlDType::Q4_1,
        "q5_0" => GgmlDType::Q5_0,
        "q5_1" => GgmlDType::Q5_1,
        "q8_0" => GgmlDType::Q8_0,
        "q2_k" => GgmlDType::Q2K,
        "q3_k" => GgmlDType::Q3K,
        "q4_k" => GgmlDType::Q4K,
        "q5_k" => GgmlDType::Q5K,
        "q6_k" => GgmlDType::Q6K,
        other => bail!("--weight-type {other}: choose one of f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k"),
    };
    let mut spec = SynthSpec::tiny(arch);
    spec.weight_type = wt;
    spec.seed = a.seed;
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
    spec.write(&a.out)?;
    println!("{}", a.out.display());
    Ok(())
}
