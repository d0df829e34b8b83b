//! dpo-lora: Direct Preference Optimization with LoRA adapters over a frozen, quantized GGUF base.
//!
//! ```text
//! recipe ──► data ──► model (+lora) ──► loss ──► train ──► export
//!              ▲          ▲                         │
//!          tokenizer ◄── gguf ◄─────────────────────┘
//! ```
//!
//! - [`gguf`]: open a GGUF file as untrusted input, typed metadata, tensors; write one atomically.
//! - [`synth`]: tiny random models in llama.cpp's GGUF layout, for tests and the `tiny` recipe.
pub mod gguf;
pub mod synth;
