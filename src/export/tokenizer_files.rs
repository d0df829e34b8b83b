//! tokenizer.json and friends from GGUF metadata (placeholder; being written).
