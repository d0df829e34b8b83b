//! GGUF tensor names to Hugging Face names, and the conversions between the two layouts.
//!
//! Owns: `blk.N.attn_q.weight` -> `model.layers.N.self_attn.q_proj.weight` per architecture, the
//! llama Q/K row permutation (llama.cpp's converter interleaves RoPE pairs; Hugging Face keeps
//! halves), and gemma's norm shift (GGUF stores `1 + w`, Hugging Face stores `w`).

pub use crate::model::unpermute_qk;
use crate::model::{Arch, Config, Target};

/// What to do to a GGUF tensor on its way to the Hugging Face layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// Copy as is.
    None,
    /// Undo llama.cpp's RoPE row interleave for `n_head` heads.
    UnpermuteRows { n_head: usize },
    /// Subtract the 1 that llama.cpp's converter adds to gemma's RMSNorm weights.
    NormShift,
}

/// Where a GGUF tensor goes in a Hugging Face checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfTensor {
    pub name: String,
    pub conversion: Conversion,
    /// The LoRA target this weight receives, if any.
    pub target: Option<(usize, Target)>,
}

/// llama.cpp's name (without `blk.N.` and `.weight`) of the linear a LoRA target adapts.
pub fn gguf_linear(target: Target) -> &'static str {
    match target {
        Target::QProj => "attn_q",
        Target::KProj => "attn_k",
        Target::VProj => "attn_v",
        Target::OProj => "attn_output",
        Target::GateProj => "ffn_gate",
        Target::UpProj => "ffn_up",
        Target::DownProj => "ffn_down",
    }
}

/// The Hugging Face name and conversion of GGUF tensor `name`; `None` for tensors that have no
/// Hugging Face counterpart (e.g. `rope_freqs.weight`, which lives in config.json instead).
pub fn hf_tensor(c: &Config, name: &str) -> Option<HfTensor> {
    let gemma = c.arch == Arch::Gemma3;
    let norm = |hf: String| HfTensor {
        name: hf,
        conversion: if gemma {
            Conversion::NormShift
        } else {
            Conversion::None
        },
        target: None,
    };
    let plain = |hf: String| HfTensor {
        name: hf,
        conversion: Conversion::None,
        target: None,
    };
    match name {
        "token_embd.weight" => return Some(plain("model.embed_tokens.weight".into())),
        "output.weight" => return Some(plain("lm_head.weight".into())),
        "output_norm.weight" => return Some(norm("model.norm.weight".into())),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (il, rest) = rest.split_once('.')?;
    let il: usize = il.parse().ok()?;
    if il >= c.n_layer {
        return None;
    }
    let p = format!("model.layers.{il}");
    for t in Target::ALL {
        let g = gguf_linear(t);
        let (suffix, is_bias) = if rest == format!("{g}.weight") {
            ("weight", false)
        } else if rest == format!("{g}.bias") {
            ("bias", true)
        } else {
            continue;
        };
        let conversion = match (c.arch, t) {
            (Arch::Llama, Target::QProj) => Conversion::UnpermuteRows { n_head: c.n_head },
            (Arch::Llama, Target::KProj) => Conversion::UnpermuteRows {
                n_head: c.n_kv_head,
            },
            _ => Conversion::None,
        };
        return Some(HfTensor {
            name: format!("{p}.{}.{}.{suffix}", t.hf_parent(), t.hf_name()),
            conversion,
            target: (!is_bias).then_some((il, t)),
        });
    }
    let hf = match rest {
        "attn_norm.weight" => "input_layernorm",
        // llama/qwen: the norm before the MLP is HF's post_attention_layernorm; gemma3 has a
        // separate post-attention norm and calls this one pre_feedforward_layernorm.
        "ffn_norm.weight" if gemma => "pre_feedforward_layernorm",
        "ffn_norm.weight" => "post_attention_layernorm",
        "post_attention_norm.weight" => "post_attention_layernorm",
        "post_ffw_norm.weight" => "post_feedforward_layernorm",
        "attn_q_norm.weight" => "self_attn.q_norm",
        "attn_k_norm.weight" => "self_attn.k_norm",
        _ => return None,
    };
    Some(norm(format!("{p}.{hf}.weight")))
}

/// The inverse of [`unpermute_qk`]: row `i` of the GGUF matrix is row `perm[i]` of the HF one.
pub fn permute_qk(n_head: usize, head_dim: usize) -> Vec<usize> {
    let un = unpermute_qk(n_head, head_dim);
    let mut perm = vec![0; un.len()];
    for (hf_row, &gguf_row) in un.iter().enumerate() {
        perm[gguf_row] = hf_row;
    }
    perm
}

/// Reorder the rows of a row-major `(rows, cols)` matrix: row `i` of the result is row
/// `perm[i]` of `m`.
pub fn permute_rows(m: &[f32], cols: usize, perm: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(m.len());
    for &r in perm {
        out.extend_from_slice(&m[r * cols..(r + 1) * cols]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_inverse_and_interleave_pairs() {
        let (nh, hd) = (3, 8);
        let un = unpermute_qk(nh, hd);
        let re = permute_qk(nh, hd);
        for i in 0..nh * hd {
            assert_eq!(re[un[i]], i);
            assert_eq!(un[re[i]], i);
        }
        // HF row 1 (first half, pair 1) is GGUF row 2 (interleaved x0 y0 x1 y1 ...).
        assert_eq!(un[1], 2);
        assert_eq!(un[hd / 2], 1);
        let m: Vec<f32> = (0..nh * hd * 2).map(|x| x as f32).collect();
        let back = permute_rows(&permute_rows(&m, 2, &un), 2, &re);
        assert_eq!(back, m);
    }
}
