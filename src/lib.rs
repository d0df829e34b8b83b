//! dpo-lora: Direct Preference Optimization with LoRA adapters over a frozen, quantized GGUF base.
//!
//! ```text
//! recipe ──► data ──► model (+lora) ──► loss ──► train ──► export
//!              ▲          ▲                         │
//!          tokenizer ◄── gguf ◄─────────────────────┘
//! ```
//!
//! - [`recipe`]: the YAML recipe (every key, its default, `--set`, the checks that need no model)
//!   resolved into one `RunSpec`; it holds the values the stages are configured with (device,
//!   data format and sources, LoRA targets, the loss, export formats) and imports no stage.
//! - [`gguf`]: open a GGUF file as untrusted input, typed metadata, tensors.
//! - [`tokenizer`]: llama.cpp-exact token ids from GGUF metadata (BPE, SPM) and chat templates.
//! - [`data`]: JSONL preference records (TRL's formats) and their tokenization contract.
//! - [`model`]: the frozen quantized base, LoRA adapters, the differentiable forward (pairs packed
//!   with their prompt once, blocks recomputed in the backward, a pair per CPU core, the adapted
//!   linear and attention as single ops), log-probs; how it executes is one `Backend` fixed at
//!   load (our CPU kernels, or candle's device-generic ops for CUDA / Metal).
//! - [`loss`]: the preference losses (DPO, IPO, hinge, SimPO, ORPO; TRL's RPO term) and TRL's
//!   metrics.
//! - [`train`]: a run, prepare / loop / finish: AdamW, the schedule, checkpoints and resume, the
//!   reference (adapters off, or precomputed and cached), `metrics.jsonl`, the memory plan.
//! - [`session`]: a model loaded for use (device choices, model, tokenizer, adapters), the one
//!   way `run`, `bench` and the commands load one.
//! - [`device`]: `--device auto|cpu|cuda[:N]|metal` and what `auto` picks.
//! - [`source`]: a model named by local path or Hugging Face Hub file.
//! - [`export`]: PEFT, merged Hugging Face and GGUF folders, llama.cpp LoRA, Hub upload.
//! - [`synth`]: tiny random GGUF models of every architecture, for tests and the tiny recipe.
//! - [`bench`]: step time, tokens/s and peak memory per training mode (`dpo-lora bench`).
//! - [`plot`]: training curves (`plot.png`) and the bench's bar charts.
//! - [`cli`], [`cmd`]: the `dpo-lora` command line.
pub mod atomic;
pub mod bench;
pub mod cli;
pub mod cmd;
pub mod data;
pub mod device;
pub mod digest;
pub mod errors;
pub mod export;
pub mod gguf;
pub mod loss;
pub mod model;
pub mod plot;
pub mod recipe;
pub mod rng;
pub mod session;
pub mod source;
pub mod synth;
pub mod tokenizer;
pub mod train;
