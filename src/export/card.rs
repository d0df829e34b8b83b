//! The model card (`README.md`) of an export folder: where it came from and how it was made.
//!
//! Owns: [`Provenance`] (the command, the run's recipe and final metrics) and the card text: the
//! Hub's YAML front matter (`base_model`, `base_model_relation`, `library_name`, `license` from
//! the GGUF's `general.license`, `datasets` from the recipe's Hub sources, `tags`), the export's
//! notes, the fidelity table, the final metrics, how to run it, and the recipe.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{Format, Options, Report};
use crate::model::Lora;
use crate::session::Loaded;

/// Where an export came from.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The command line that made the export.
    pub command: String,
    /// The training run folder, when exporting from one.
    pub run_dir: Option<PathBuf>,
    /// The resolved recipe of that run.
    pub recipe_yaml: Option<String>,
    /// The run's last evaluation (or, without one, its last training step) from metrics.jsonl.
    pub final_metrics: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Provenance {
    /// Read what a run folder records (recipe.yaml, metrics.jsonl); missing parts stay empty.
    pub fn from_run(dir: &Path, command: String) -> Self {
        let recipe_yaml = std::fs::read_to_string(dir.join("recipe.yaml")).ok();
        let final_metrics = std::fs::read_to_string(dir.join("metrics.jsonl"))
            .ok()
            .and_then(|text| last_metrics(&text));
        Self {
            command,
            run_dir: Some(dir.to_path_buf()),
            recipe_yaml,
            final_metrics,
        }
    }
}

fn last_metrics(text: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let rows: Vec<serde_json::Map<String, serde_json::Value>> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let kind = |r: &serde_json::Map<String, serde_json::Value>, k: &str| {
        r.get("kind").and_then(|v| v.as_str()) == Some(k)
    };
    rows.iter()
        .rev()
        .find(|r| kind(r, "eval"))
        .or_else(|| rows.iter().rev().find(|r| kind(r, "train")))
        .cloned()
}

/// The base model's Hub id where the GGUF records one, else its `general.name` or file name.
pub fn base_model_id(base: &Loaded) -> String {
    let f = &base.file;
    for key in [
        "general.base_model.0.repo_url",
        "general.source.url",
        "general.source.huggingface.repository",
    ] {
        if let Ok(Some(v)) = f.opt_str(key) {
            let id = v
                .trim_start_matches("https://huggingface.co/")
                .trim_end_matches('/');
            if !id.is_empty() {
                return id.to_string();
            }
        }
    }
    base.base_name()
}

pub fn write(
    base: &Loaded,
    lora: Option<&Lora>,
    prov: &Provenance,
    opts: &Options,
    report: &Report,
    dir: &Path,
) -> Result<()> {
    let text = render(base, lora, prov, opts, report);
    std::fs::write(dir.join("README.md"), text).context("README.md")
}

fn render(
    base: &Loaded,
    lora: Option<&Lora>,
    prov: &Provenance,
    opts: &Options,
    report: &Report,
) -> String {
    let id = base_model_id(base);
    let recipe: Option<crate::recipe::Recipe> = prov
        .recipe_yaml
        .as_deref()
        .and_then(|y| serde_saphyr::from_str(y).ok());
    let merged = lora.is_some() && matches!(opts.format, Format::Hf | Format::Gguf);
    let (library, relation) = match opts.format {
        Format::Peft => ("peft", "adapter"),
        Format::GgufLora => ("gguf", "adapter"),
        Format::Hf if lora.is_none() => ("transformers", "quantized"),
        Format::Hf => ("transformers", "finetune"),
        Format::Gguf => ("gguf", "finetune"),
    };
    let mut s = String::new();
    let _ = writeln!(s, "---\nbase_model: {}", yaml_str(&id));
    let _ = writeln!(s, "base_model_relation: {relation}");
    let _ = writeln!(s, "library_name: {library}");
    if let Ok(Some(l)) = base.file.opt_str("general.license") {
        let _ = writeln!(s, "license: {}", yaml_str(l));
    }
    if let Ok(langs) = base.file.get_str_array("general.languages") {
        if !langs.is_empty() {
            let _ = writeln!(s, "language:");
            for l in langs {
                let _ = writeln!(s, "- {}", yaml_str(l));
            }
        }
    }
    let datasets = recipe.as_ref().map(hub_datasets).unwrap_or_default();
    if !datasets.is_empty() {
        let _ = writeln!(s, "datasets:");
        for d in &datasets {
            let _ = writeln!(s, "- {}", yaml_str(d));
        }
    }
    let _ = writeln!(s, "pipeline_tag: text-generation");
    let mut tags = vec!["dpo", "lora", "dpo-lora"];
    if matches!(opts.format, Format::Gguf | Format::GgufLora) {
        tags.push("gguf");
    }
    if opts.format == Format::Peft {
        tags.push("peft");
    }
    if let Some(r) = &recipe {
        tags.push(r.loss.kind.name());
    }
    tags.dedup();
    let _ = writeln!(s, "tags:");
    for t in tags {
        let _ = writeln!(s, "- {}", yaml_str(t));
    }
    let _ = writeln!(s, "---\n");
    let what = match (opts.format, lora.is_some()) {
        (Format::Hf, false) => "the base model, unmerged",
        (Format::Peft, _) => "a PEFT LoRA adapter",
        (Format::Hf, true) => "the model with its LoRA adapter merged",
        (Format::Gguf, _) => "a GGUF with the LoRA adapter merged",
        (Format::GgufLora, _) => "a llama.cpp LoRA adapter (GGUF)",
    };
    let _ = writeln!(s, "# {} — {what}\n", base.base_name());
    let _ = writeln!(
        s,
        "Made by dpo-lora (Direct Preference Optimization with LoRA over a frozen quantized GGUF base).\n"
    );
    let _ = writeln!(s, "- Base model: `{id}` (file `{}`)", file_name(&base.path));
    let _ = writeln!(s, "- Format: `{}`", opts.format.name());
    if let Some(l) = lora {
        let c = &l.config;
        let targets: Vec<&str> = c.targets.iter().map(|t| t.hf_name()).collect();
        let _ = writeln!(
            s,
            "- Adapter: rank {}, alpha {}{}, targets {}",
            c.rank,
            c.alpha,
            if c.use_rslora { " (rsLoRA)" } else { "" },
            targets.join(", ")
        );
    }
    if let Some(r) = &recipe {
        let _ = writeln!(s, "- Training data: {}", data_line(r));
    }
    for n in &report.notes {
        let _ = writeln!(s, "- Export: {n}");
    }
    if let Some(f) = &report.fidelity {
        let _ = writeln!(
            s,
            "\n## Fidelity: what the merged weights keep\n\n{}",
            f.markdown()
        );
    } else if merged {
        let _ = writeln!(
            s,
            "\n## Fidelity\n\nNot measured (no held-out pairs were given to the export)."
        );
    }
    if let Some(m) = &prov.final_metrics {
        let _ = writeln!(s, "\n## Final metrics\n\n| metric | value |\n|---|---|");
        for (k, v) in m {
            let _ = writeln!(s, "| {k} | {v} |");
        }
    }
    let _ = writeln!(
        s,
        "\n## How to use it\n\n{}",
        usage(opts.format, lora.is_some(), &id, base)
    );
    let _ = writeln!(s, "\n## How it was made\n\n```sh\n{}\n```", prov.command);
    if let Some(y) = &prov.recipe_yaml {
        let _ = writeln!(
            s,
            "\nThe training recipe:\n\n```yaml\n{}\n```",
            y.trim_end()
        );
    }
    s
}

/// How to run the export, with the tools people run each format in.
fn usage(format: Format, adapter: bool, id: &str, base: &Loaded) -> String {
    let here = "path/to/this/folder";
    match (format, adapter) {
        (Format::Peft, _) => format!(
            "With transformers and PEFT:\n\n```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\nfrom peft import PeftModel\n\nbase = AutoModelForCausalLM.from_pretrained(\"{id}\")\nmodel = PeftModel.from_pretrained(base, \"{here}\")\ntokenizer = AutoTokenizer.from_pretrained(\"{id}\")\n```\n\nOr with dpo-lora on the GGUF base: `dpo-lora generate --model {} --adapter {here} --chat \"Hello\"`.",
            file_name(&base.path)
        ),
        (Format::Hf, _) => format!(
            "With transformers:\n\n```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\nmodel = AutoModelForCausalLM.from_pretrained(\"{here}\")\ntokenizer = AutoTokenizer.from_pretrained(\"{here}\")\nmessages = [{{\"role\": \"user\", \"content\": \"Hello\"}}]\nids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\")\nprint(tokenizer.decode(model.generate(ids, max_new_tokens=64)[0]))\n```"
        ),
        (Format::Gguf, _) => format!(
            "With llama.cpp (or Ollama, LM Studio):\n\n```sh\nllama-cli -m {here}/{} -cnv -p \"Hello\"\n```\n\nWith llama-cpp-python: `Llama(model_path=\"{here}/{}\").create_chat_completion(messages=[...])`.",
            super::gguf::FILE,
            super::gguf::FILE
        ),
        (Format::GgufLora, _) => format!(
            "With llama.cpp, on the base GGUF it was trained on:\n\n```sh\nllama-cli -m {} --lora {here}/{} -cnv -p \"Hello\"\n```",
            file_name(&base.path),
            super::gguf_lora::FILE
        ),
    }
}

/// The Hub data sets (`hf:datasets/OWNER/NAME`) a recipe trained or evaluated on.
fn hub_datasets(r: &crate::recipe::Recipe) -> Vec<String> {
    let mut out: Vec<String> = r
        .data
        .train
        .0
        .iter()
        .chain(r.data.eval.iter().flat_map(|e| e.0.iter()))
        .filter_map(|s| crate::data::hub::HubDataset::parse(&s.path)?.ok())
        .map(|d| d.repo)
        .collect();
    out.dedup();
    out
}

/// `data.train` / `data.eval` of a recipe, for the card.
fn data_line(r: &crate::recipe::Recipe) -> String {
    match &r.data.eval {
        Some(e) => format!("`{}` (held out: `{}`)", r.data.train, e),
        None => format!("`{}`", r.data.train),
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}
