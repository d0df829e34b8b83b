//! Export what people deploy: a PEFT adapter, a merged Hugging Face folder, a merged GGUF, a
//! llama.cpp LoRA GGUF, and a push of any of these to the Hugging Face Hub.
//!
//! ```text
//! base GGUF + adapter ──► peft      adapter_config.json + adapter_model.safetensors
//!                     ├─► hf        config.json + model.safetensors + tokenizer files + card
//!                     ├─► gguf      the base's metadata, merged tensors re-quantized
//!                     └─► gguf-lora llama.cpp adapter (general.type = adapter)
//! any export folder ──► hub (create repo, LFS upload, commit)
//! ```
//!
//! Every export is written into a hidden temporary sibling of `--out` and renamed into place.

pub mod hub;
pub mod tokenizer_files;
