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
//! - [`data`]: JSONL preference records (TRL's formats) and their tokenization contract.
//! - [`model`]: the frozen quantized base, LoRA adapters, the differentiable forward, log-probs.
//! - [`plot`]: a run's `metrics.jsonl` drawn as a PNG of loss, reward accuracy and margin curves.
//! - [`source`]: a model named by local path or Hugging Face Hub file.
//! - [`synth`]: tiny random GGUF models of every architecture, for tests and the tiny recipe.
//! - [`cli`], [`cmd`]: the `dpo-lora` command line.
pub mod cli;
pub mod cmd;
pub mod data;
pub mod gguf;
pub mod model;
pub mod plot;
pub mod source;
pub mod synth;
pub mod tokenizer;
