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
    /// Train LoRA adapters with a preference loss, as a recipe says.
    Run(RunArgs),
    /// Summed log-probs of each record's chosen and rejected completions (one JSON line per record).
    Score(ScoreArgs),
    /// Token ids and pieces of text, as llama.cpp tokenizes it (no BOS/EOS added).
    Tokenize(TokenizeArgs),
    /// Generate text from a prompt.
    Generate(GenerateArgs),
    /// Architecture, dimensions, tensor types, tokenizer and memory of a GGUF model.
    Inspect(InspectArgs),
    /// Write a tiny random GGUF model (for tests and the tiny recipe).
    Synth(SynthArgs),
    /// Export an adapter as PEFT, a merged Hugging Face folder, a merged GGUF or a llama.cpp LoRA.
    Export(ExportArgs),
    /// Time and memory of a training step per mode (policy only, DPO with each reference, SimPO,
    /// ORPO) on fixed workloads; writes bench.json, bench.md and bench.png.
    Bench(BenchArgs),
    /// Predict a run's peak memory, part by part, on the CPU and on a GPU in bf16, and whether it
    /// fits; before anything big is loaded.
    Plan(PlanArgs),
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The recipe (YAML).
    pub recipe: PathBuf,
    /// Override a recipe key, as `run --set`.
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    pub set: Vec<String>,
    /// Overrides the recipe's `device`: auto, cpu, cuda, cuda:N or metal.
    #[arg(long)]
    pub device: Option<crate::device::DeviceChoice>,
    /// Plan against this much memory instead of the device's free memory (8GB, 512MiB, ...).
    #[arg(long, value_parser = crate::train::memory::parse_size)]
    pub memory: Option<u64>,
    /// One JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A local .gguf file, or hf:OWNER/REPO/FILE.gguf.
    #[arg(long, short = 'm')]
    pub model: String,
    /// auto (CUDA, then Metal, then the CPU), cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    pub device: crate::device::DeviceChoice,
    /// Activation type: auto (bf16 on CUDA, else f32), f32, bf16, f16.
    #[arg(long, value_enum, default_value = "auto")]
    pub dtype: crate::device::ComputeDtype,
    /// How the ops run: auto (our CPU kernels for f32 on the CPU, candle's ops elsewhere),
    /// cpu-kernels, or candle (candle's device-generic ops, what CUDA and Metal run).
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: crate::model::BackendChoice,
    /// Comma-separated: long (prompt 64 + completions 96-192 tokens), short (~30 tokens).
    #[arg(long, value_delimiter = ',', default_value = "long,short")]
    pub workloads: Vec<String>,
    /// Comma-separated: policy-only, dpo-adapters-off, dpo-precomputed, dpo-second-copy, simpo,
    /// orpo (default: all).
    #[arg(long, value_delimiter = ',')]
    pub modes: Vec<String>,
    /// Untimed steps before the measured ones.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Measured steps (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Output folder (default runs/bench/<model file stem>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep every block's activations for the backward instead of recomputing them (faster
    /// steps, much more memory; what a trainer without gradient checkpointing does).
    #[arg(long)]
    pub no_gradient_checkpointing: bool,
    /// Comma-separated checkpoint keep levels to measure each mode at: none, mlp, projections
    /// (`train.checkpoint_keep`; default projections, the fastest).
    #[arg(long, value_delimiter = ',', default_value = "projections")]
    pub keep: Vec<String>,
    /// Run chosen and rejected as separate rows instead of one row per pair with the prompt
    /// computed once.
    #[arg(long)]
    pub no_prefix_sharing: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Internal: measure this one mode in this process and print its rows as JSON.
    #[arg(long, hide = true, requires = "child_data")]
    pub child: Option<String>,
    /// Internal: the workload file of --child.
    #[arg(long, hide = true)]
    pub child_data: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A training run folder: its recipe.yaml names the base, its adapter/ is exported.
    #[arg(long, conflicts_with_all = ["model", "adapter"], required_unless_present = "model")]
    pub run: Option<PathBuf>,
    /// The base model (a .gguf file or hf:OWNER/REPO/FILE.gguf), with --adapter.
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// A PEFT adapter folder trained on --model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub format: crate::export::Format,
    /// The folder to write (must not exist unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Tensor type of the hf export.
    #[arg(long, value_enum, default_value = "bf16")]
    pub dtype: crate::export::HfDtype,
    /// Types of the gguf export: keep (untouched tensors as stored, each merged one the smallest
    /// type from its base type up that keeps the adapter), base (each merged tensor back to its
    /// own type), or one of f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k,
    /// q6_k for every matrix.
    #[arg(long, default_value = "keep")]
    pub quant: crate::export::QuantChoice,
    /// hf only: write the base without the adapter (what PEFT applies the adapter to).
    #[arg(long)]
    pub base_only: bool,
    /// Replace an existing --out (the old one stays until the new one is complete).
    #[arg(long)]
    pub force: bool,
    /// Upload the export folder to this Hub repository (token from HF_TOKEN or the token file).
    #[arg(long, value_name = "OWNER/NAME")]
    pub push_to_hub: Option<String>,
    /// Create the Hub repository as private.
    #[arg(long, requires = "push_to_hub")]
    pub private: bool,
    /// Held-out pairs to score a merged export on (default: the run's data.eval, or its
    /// data.eval_fraction split), read as --run's recipe reads data (else TRL's layouts).
    #[arg(long, value_name = "FILE")]
    pub eval_data: Option<PathBuf>,
    /// At most this many held-out pairs are scored for the fidelity report (0: none).
    #[arg(long, default_value_t = crate::export::fidelity::DEFAULT_PAIRS)]
    pub fidelity_pairs: usize,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// llama, qwen2, qwen3 or gemma3 (the tiny test model's sizes).
    #[arg(long, default_value = "llama", conflicts_with = "shape")]
    pub arch: String,
    /// A real model's shape: smollm2-135m, smollm2-360m, smollm2-1.7b, qwen2.5-0.5b,
    /// qwen2.5-1.5b, qwen2.5-7b, llama-3.2-1b, llama-3.2-3b, llama-3.1-8b, gemma-3-270m,
    /// gemma-3-1b, gemma-3-4b, qwen3-0.6b, qwen3-1.7b, qwen3-8b.
    #[arg(long)]
    pub shape: Option<String>,
    /// Type of the weights: f32, f16, q8_0, q4_0, q4_k, q6_k, ... (default: f32 for the tiny
    /// model; q4_k for a --shape, its embedding too, rows that do not fit taking llama-quantize's
    /// fallback).
    #[arg(long)]
    pub weight_type: Option<String>,
    /// Vocabulary size (filler tokens added to the synthetic tokenizer's own).
    #[arg(long)]
    pub vocab: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
    /// Sizes instead of the tiny test model's (e.g. Llama 3 8B's: --hidden 4096 --ffn 14336
    /// --n-head 32 --n-kv-head 8 --head-dim 128 --n-layer 32).
    #[arg(long)]
    pub hidden: Option<usize>,
    #[arg(long)]
    pub ffn: Option<usize>,
    #[arg(long, visible_alias = "layers")]
    pub n_layer: Option<usize>,
    #[arg(long)]
    pub n_head: Option<usize>,
    #[arg(long)]
    pub n_kv_head: Option<usize>,
    #[arg(long)]
    pub head_dim: Option<usize>,
    /// A Jinja file written as the model's `tokenizer.chat_template` (a real model's template).
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// Write zero weights instead of drawing them: the real shape's header and file size in
    /// seconds, a file to run `dpo-lora plan` against (it trains nothing meaningful).
    #[arg(long)]
    pub zeros: bool,
}

#[derive(Debug, Args)]
pub struct ModelArg {
    /// A local .gguf file, or hf:OWNER/REPO/FILE.gguf to fetch it from the Hugging Face Hub.
    #[arg(long, short = 'm')]
    pub model: String,
    /// auto (CUDA, then Metal, then the CPU), cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    pub device: crate::device::DeviceChoice,
    /// Activation type: auto (bf16 on CUDA, else f32), f32, bf16, f16. The CPU runs f32.
    #[arg(long, value_enum, default_value = "auto")]
    pub dtype: crate::device::ComputeDtype,
    /// How the ops run: auto (our CPU kernels for f32 on the CPU, candle's ops elsewhere),
    /// cpu-kernels, or candle (candle's device-generic ops, what CUDA and Metal run).
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: crate::model::BackendChoice,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The recipe (YAML); see recipes/.
    pub recipe: PathBuf,
    /// Override a recipe key, e.g. --set train.lr=1e-4 (repeatable; the value is YAML).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    pub set: Vec<String>,
    /// Continue from the latest checkpoint in output.dir.
    #[arg(long)]
    pub resume: bool,
    /// No progress bar, and no echo of the resolved recipe (it is saved as recipe.yaml).
    #[arg(long)]
    pub quiet: bool,
    /// Overrides the recipe's `device`: auto, cpu, cuda, cuda:N or metal.
    #[arg(long)]
    pub device: Option<crate::device::DeviceChoice>,
    /// Overrides the recipe's `backend`: auto, cpu-kernels or candle.
    #[arg(long, value_enum)]
    pub backend: Option<crate::model::BackendChoice>,
    /// Plan against this much memory instead of the device's free memory (8GB, 512MiB, ...).
    #[arg(long, value_parser = crate::train::memory::parse_size)]
    pub memory: Option<u64>,
    /// Train even when the memory plan predicts more than is available.
    #[arg(long)]
    pub ignore_plan: bool,
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// A PEFT adapter folder to apply (e.g. a run's adapter/).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Preference records: a .jsonl, .jsonl.gz, .json or .parquet file, a folder or a glob, in
    /// any layout `data.format` reads (TRL, OpenAI preference, ShareGPT ranking).
    #[arg(long)]
    pub data: PathBuf,
    /// The records' layout (auto: told from the first record).
    #[arg(long, value_enum, default_value_t = crate::data::Format::Auto)]
    pub format: crate::data::Format,
    /// Replace the model's chat template: chatml, llama3, gemma, or a Jinja file.
    #[arg(long)]
    pub chat_template: Option<String>,
    /// Variables for the chat template, as a JSON object: '{"enable_thinking": false}'.
    #[arg(long, value_parser = parse_kwargs)]
    pub template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
    /// Refuse records whose chosen or rejected sequence is longer than this many tokens
    /// (default: the model's context length; attention's memory grows with its square).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Also print each sequence's token ids and where its completion starts (`chosen_ids`,
    /// `chosen_from`, ...), for scoring the same ids in another implementation.
    #[arg(long)]
    pub ids: bool,
}

fn parse_kwargs(s: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str(s) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err("expected a JSON object, e.g. '{\"enable_thinking\": false}'".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
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
    /// A PEFT adapter folder to apply (e.g. a run's adapter/).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
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
