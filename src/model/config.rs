//! Architecture and dimensions, read from GGUF metadata.
//!
//! Owns: the `Arch` enum (the one place that maps `general.architecture` strings) and every
//! per-architecture constant that llama.cpp hard-codes rather than stores (gemma3's local RoPE
//! base and its 5-sliding : 1-global layer pattern). Keys follow llama.cpp's `llama-arch.cpp`.

use crate::gguf::{GgufError, GgufFile};

/// The architectures dpo-lora can load. Each differs from llama only where listed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3, SmolLM2, Mistral: Q/K rows permuted by the converter (undone at load).
    Llama,
    /// Qwen2: biases on q/k/v.
    Qwen2,
    /// Qwen3: per-head RMSNorm on q and k before RoPE.
    Qwen3,
    /// Gemma 3: GELU-tanh, embeddings scaled by sqrt(hidden), norms stored as 1 + w, pre and post
    /// norms around attention and MLP, q/k norms, sliding-window layers with their own RoPE base.
    Gemma3,
}

pub const SUPPORTED: &str = "llama, qwen2, qwen3, gemma3";

impl Arch {
    pub fn from_gguf_name(name: &str) -> Option<Self> {
        match name {
            "llama" | "mistral" => Some(Arch::Llama),
            "qwen2" => Some(Arch::Qwen2),
            "qwen3" => Some(Arch::Qwen3),
            "gemma3" => Some(Arch::Gemma3),
            _ => None,
        }
    }

    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }

    pub fn activation(self) -> Activation {
        match self {
            Arch::Gemma3 => Activation::GeluTanh,
            _ => Activation::Silu,
        }
    }

    pub fn has_qkv_bias(self) -> bool {
        matches!(self, Arch::Qwen2)
    }

    pub fn has_qk_norm(self) -> bool {
        matches!(self, Arch::Qwen3 | Arch::Gemma3)
    }

    pub fn has_post_norms(self) -> bool {
        matches!(self, Arch::Gemma3)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub arch: Arch,
    pub n_layer: usize,
    pub hidden: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub rms_eps: f64,
    pub rope_base: f32,
    /// RoPE base of sliding-window layers (gemma3: 10,000, hard-coded by llama.cpp and HF).
    pub rope_base_local: f32,
    /// Linear RoPE position scaling factor for global layers (1.0 = none).
    pub rope_linear_factor: f32,
    pub context_length: usize,
    /// Sliding window (keys visible to a query, itself included) on sliding layers.
    pub sliding_window: Option<usize>,
    /// Every `n`-th layer is global (gemma3: 6); the others slide.
    pub global_every: usize,
    /// Multiplier on q·k (1/sqrt(head_dim) for all supported models).
    pub attn_scale: f64,
}

impl Config {
    pub fn from_gguf(f: &GgufFile) -> Result<Self, GgufError> {
        let name = f.get_str("general.architecture")?;
        let arch = Arch::from_gguf_name(name).ok_or_else(|| GgufError::Tensor {
            path: f.path.clone(),
            name: "general.architecture".into(),
            reason: format!("unknown architecture `{name}`; supported: {SUPPORTED}"),
        })?;
        let a = arch.gguf_name();
        let key = |k: &str| format!("{a}.{k}");
        let hidden = f.get_usize(&key("embedding_length"))?;
        let n_head = f.get_usize(&key("attention.head_count"))?;
        let n_kv_head = f
            .opt_usize(&key("attention.head_count_kv"))?
            .unwrap_or(n_head);
        let head_dim = match f.opt_usize(&key("attention.key_length"))? {
            Some(d) => d,
            None => match f.opt_usize(&key("rope.dimension_count"))? {
                Some(d) => d,
                None if n_head > 0 => hidden / n_head,
                None => 0,
            },
        };
        let bad = |what: String| GgufError::Tensor {
            path: f.path.clone(),
            name: a.to_string(),
            reason: what,
        };
        if hidden == 0 || n_head == 0 || n_kv_head == 0 || head_dim == 0 || n_head % n_kv_head != 0
        {
            return Err(bad(format!(
                "inconsistent attention dimensions: hidden {hidden}, {n_head} heads, {n_kv_head} kv heads, head_dim {head_dim}"
            )));
        }
        if head_dim % 2 != 0 {
            return Err(bad(format!("head_dim {head_dim} is odd; RoPE needs pairs")));
        }
        if let Some(rd) = f.opt_usize(&key("rope.dimension_count"))? {
            if rd != head_dim {
                return Err(bad(format!(
                    "partial RoPE ({rd} of {head_dim} dimensions) is not supported"
                )));
            }
        }
        if let Some(v) = f.opt_usize(&key("attention.value_length"))? {
            if v != head_dim {
                return Err(bad(format!(
                    "value_length {v} != key_length {head_dim} is not supported"
                )));
            }
        }
        let vocab = match f.tensor_shape("token_embd.weight") {
            Some([v, h]) if *h == hidden => *v,
            Some(s) => {
                return Err(GgufError::Shape {
                    path: f.path.clone(),
                    name: "token_embd.weight".into(),
                    found: s.to_vec(),
                    expected: vec![0, hidden],
                })
            }
            None => {
                return Err(GgufError::MissingTensor {
                    path: f.path.clone(),
                    name: "token_embd.weight".into(),
                })
            }
        };
        let rope_linear_factor = match f.opt_str(&key("rope.scaling.type"))? {
            None | Some("none") => 1.0,
            Some("linear") => f.opt_f64(&key("rope.scaling.factor"))?.unwrap_or(1.0) as f32,
            Some(other) => {
                return Err(bad(format!(
                    "RoPE scaling `{other}` is not supported (supported: none, linear, llama3 rope_freqs)"
                )))
            }
        };
        let (sliding_window, global_every) = match arch {
            Arch::Gemma3 => (
                f.opt_usize(&key("attention.sliding_window"))?,
                f.opt_usize(&key("attention.sliding_window_pattern"))?
                    .unwrap_or(6)
                    .max(1),
            ),
            _ => (None, 1),
        };
        // A count read from the file sizes the block list: it must be possible before anything
        // is allocated from it (each block has several tensors; the fuzzer's `gguf` target found
        // a block_count of ~10^11 that aborted the process on the allocation).
        let n_layer = f.get_usize(&key("block_count"))?;
        let tensors = f.content.tensor_infos.len();
        if n_layer == 0 || n_layer > tensors {
            return Err(bad(format!(
                "block_count {n_layer} is impossible: the file has {tensors} tensors"
            )));
        }
        let rms_eps = f.get_f64(&key("attention.layer_norm_rms_epsilon"))?;
        let rope_base = f.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0) as f32;
        Ok(Self {
            arch,
            n_layer,
            hidden,
            n_head,
            n_kv_head,
            head_dim,
            ffn: f.get_usize(&key("feed_forward_length"))?,
            vocab,
            rms_eps,
            rope_base,
            rope_base_local: 10_000.0,
            rope_linear_factor,
            context_length: f.opt_usize(&key("context_length"))?.unwrap_or(4096),
            sliding_window,
            global_every,
            attn_scale: 1.0 / (head_dim as f64).sqrt(),
        })
    }

    /// Whether layer `il` uses the sliding window (llama.cpp `swa_layers`: `il % n < n - 1`).
    pub fn is_sliding(&self, il: usize) -> bool {
        self.sliding_window.is_some() && il % self.global_every < self.global_every - 1
    }
}

/// The gated MLP's activation (both forms: `ops::activation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x · sigmoid(x)`: llama, qwen2, qwen3.
    Silu,
    /// tanh-approximated GELU (`gelu_pytorch_tanh`): gemma3. candle-transformers'
    /// quantized_gemma3 uses SiLU here, which doubles the perplexity (FACTS.md).
    GeluTanh,
}
