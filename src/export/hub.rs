//! Push an export folder to the Hugging Face Hub (placeholder; being written).
