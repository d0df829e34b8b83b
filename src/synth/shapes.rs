//! The real dimensions of the models people train, for synthetic models of their exact shape
//! (`dpo-lora synth --shape NAME`): what memory and speed are measured and planned on before a
//! multi-gigabyte download.
//!
//! Owns: the preset table. Each row is the model's Hugging Face `config.json` (hidden_size,
//! intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim,
//! vocab_size, tie_word_embeddings; Gemma 3's sliding_window), as published by its makers.

use super::SynthArch;

/// One model's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub name: &'static str,
    pub arch: SynthArch,
    pub hidden: usize,
    pub ffn: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub tied: bool,
    /// Gemma 3's sliding window (0 elsewhere).
    pub sliding_window: usize,
}

const fn shape(
    name: &'static str,
    arch: SynthArch,
    [hidden, ffn, n_layer, n_head, n_kv_head, head_dim]: [usize; 6],
    vocab: usize,
    tied: bool,
    sliding_window: usize,
) -> Shape {
    Shape {
        name,
        arch,
        hidden,
        ffn,
        n_layer,
        n_head,
        n_kv_head,
        head_dim,
        vocab,
        tied,
        sliding_window,
    }
}

use SynthArch::{Gemma3, Llama, Qwen2, Qwen3};

/// `[hidden, ffn, layers, heads, kv heads, head_dim]`, vocabulary, tied, sliding window.
pub const SHAPES: [Shape; 15] = [
    shape(
        "smollm2-135m",
        Llama,
        [576, 1536, 30, 9, 3, 64],
        49152,
        true,
        0,
    ),
    shape(
        "smollm2-360m",
        Llama,
        [960, 2560, 32, 15, 5, 64],
        49152,
        true,
        0,
    ),
    shape(
        "smollm2-1.7b",
        Llama,
        [2048, 8192, 24, 32, 32, 64],
        49152,
        true,
        0,
    ),
    shape(
        "qwen2.5-0.5b",
        Qwen2,
        [896, 4864, 24, 14, 2, 64],
        151936,
        true,
        0,
    ),
    shape(
        "qwen2.5-1.5b",
        Qwen2,
        [1536, 8960, 28, 12, 2, 128],
        151936,
        true,
        0,
    ),
    shape(
        "qwen2.5-7b",
        Qwen2,
        [3584, 18944, 28, 28, 4, 128],
        152064,
        false,
        0,
    ),
    shape(
        "llama-3.2-1b",
        Llama,
        [2048, 8192, 16, 32, 8, 64],
        128256,
        true,
        0,
    ),
    shape(
        "llama-3.2-3b",
        Llama,
        [3072, 8192, 28, 24, 8, 128],
        128256,
        true,
        0,
    ),
    shape(
        "llama-3.1-8b",
        Llama,
        [4096, 14336, 32, 32, 8, 128],
        128256,
        false,
        0,
    ),
    shape(
        "gemma-3-270m",
        Gemma3,
        [640, 2048, 18, 4, 1, 256],
        262144,
        true,
        512,
    ),
    shape(
        "gemma-3-1b",
        Gemma3,
        [1152, 6912, 26, 4, 1, 256],
        262144,
        true,
        512,
    ),
    shape(
        "gemma-3-4b",
        Gemma3,
        [2560, 10240, 34, 8, 4, 256],
        262208,
        true,
        1024,
    ),
    shape(
        "qwen3-0.6b",
        Qwen3,
        [1024, 3072, 28, 16, 8, 128],
        151936,
        true,
        0,
    ),
    shape(
        "qwen3-1.7b",
        Qwen3,
        [2048, 6144, 28, 16, 8, 128],
        151936,
        true,
        0,
    ),
    shape(
        "qwen3-8b",
        Qwen3,
        [4096, 12288, 36, 32, 8, 128],
        151936,
        false,
        0,
    ),
];

/// The preset named `name`.
pub fn find(name: &str) -> Option<&'static Shape> {
    let name = name.to_ascii_lowercase();
    SHAPES.iter().find(|s| s.name == name)
}

/// Every preset's name, for messages.
pub fn names() -> String {
    SHAPES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}
