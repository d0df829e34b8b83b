//! Command-line arguments (clap structs only; each command lives in `cmd/`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "dpo-lora",
    version,
    about = "Direct Preference Optimization with LoRA over a frozen quantized GGUF model"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Summed log-probs of each record's chosen and rejected completions (one JSON line per record).
    Score(ScoreArgs),
    /// Token ids and pieces of text, as llama.cpp tokenizes it (no BOS/EOS added).
    Tokenize(TokenizeArgs),
    /// Generate text from a prompt.
    Generate(GenerateArgs),
    /// Architecture, dimensions, tensor types, tokenizer and memory of a GGUF model.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct ModelArg {
    /// A local .gguf file, or hf:OWNER/REPO/FILE.gguf to fetch it from the Hugging Face Hub.
    #[arg(long, short = 'm')]
    pub model: String,
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// JSONL preference records: {"prompt", "chosen", "rejected"}, strings or message lists.
    #[arg(long)]
    pub data: PathBuf,
}

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Treat special-token text (e.g. `<|im_start|>`) as plain text.
    #[arg(long)]
    pub no_parse_special: bool,
    /// JSONL file of {"text": ...} lines, one output line each.
    #[arg(long, conflicts_with = "text")]
    pub file: Option<PathBuf>,
    /// The text to tokenize.
    #[arg(required_unless_present = "file")]
    pub text: Option<String>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    pub prompt: String,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A local .gguf file, or hf:OWNER/REPO/FILE.gguf.
    pub path: String,
}
