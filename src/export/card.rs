//! The model card (`README.md`) of an export folder: where it came from and how it was made.
//!
//! Owns: [`Provenance`] (the command, the run's recipe and final metrics) and the card text with
//! the Hub's YAML front matter (`base_model`, `library_name`, `tags`).

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
    let library = match opts.format {
        Format::Peft => "peft",
        Format::Hf => "transformers",
        Format::Gguf | Format::GgufLora => "gguf",
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "---\nbase_model: {}\nlibrary_name: {library}",
        yaml_str(&id)
    );
    let _ = writeln!(s, "tags:\n- dpo\n- lora\n- dpo-lora\n---\n");
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
    if let Some(y) = &prov.recipe_yaml {
        if let Some(data) = data_lines(y) {
            let _ = writeln!(s, "- Training data: {data}");
        }
    }
    for n in &report.notes {
        let _ = writeln!(s, "- Export: {n}");
    }
    if let Some(m) = &prov.final_metrics {
        let _ = writeln!(s, "\n## Final metrics\n\n| metric | value |\n|---|---|");
        for (k, v) in m {
            let _ = writeln!(s, "| {k} | {v} |");
        }
    }
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

/// `data.train` / `data.eval` of a resolved recipe, for the card.
fn data_lines(yaml: &str) -> Option<String> {
    let r: crate::recipe::Recipe = serde_saphyr::from_str(yaml).ok()?;
    Some(match &r.data.eval {
        Some(e) => format!("`{}` (held out: `{}`)", r.data.train, e),
        None => format!("`{}`", r.data.train),
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}
