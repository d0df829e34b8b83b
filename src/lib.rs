//! dpo-lora: Direct Preference Optimization with LoRA adapters over a frozen, quantized GGUF base.
//!
//! ```text
//! recipe ──► data ──► model (+lora) ──► loss ──► train ──► export
//!              ▲          ▲                         │
//!          tokenizer ◄── gguf ◄─────────────────────┘
//! ```
//!
//! - [`gguf`]: open a GGUF file as untrusted input, typed metadata, tensors.
//! - [`tokenizer`]: llama.cpp-exact token ids from GGUF metadata (BPE, SPM) and chat templates.
pub mod gguf;
pub mod tokenizer;
