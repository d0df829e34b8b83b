//! The `data:` section: where the pairs come from (`train`, `eval`, see `sources`), how their
//! records are laid out (`format`, `columns`), the chat template, and how sequences are cut.
//!
//! Owns: these values and their defaults. Does not: read, lay out or tokenize records (see
//! `data`).

use serde::{Deserialize, Serialize};

use super::sources::Sources;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// A path (file, folder, glob), a list of them, or `{path, split, fraction}` entries.
    pub train: Sources,
    #[serde(default)]
    pub eval: Option<Sources>,
    /// The records' layout; `auto` tells it from the first record.
    #[serde(default)]
    pub format: Format,
    /// The fields of a data set with its own names (`format: columns`).
    #[serde(default)]
    pub columns: Option<Columns>,
    /// Replace the model's chat template: a built-in (`chatml`, `llama3`, `gemma`) or a Jinja
    /// file; for base models that have none, or to train with another.
    #[serde(default)]
    pub chat_template: Option<String>,
    /// Variables passed to the chat template, as `apply_chat_template(**kwargs)`:
    /// `{enable_thinking: false}` for Qwen3.
    #[serde(default)]
    pub template_kwargs: serde_json::Map<String, serde_json::Value>,
    /// Held out from `train` when `eval` is not given (0 = no evaluation).
    #[serde(default)]
    pub eval_fraction: f64,
    /// Tokens of prompt + completion per sequence.
    #[serde(default = "d_max_length")]
    pub max_length: usize,
    /// Tokens of prompt kept before the completion is cut (default: none, the prompt is not
    /// cut and the completion gets what `max_length` leaves).
    #[serde(default)]
    pub max_prompt_length: Option<usize>,
    #[serde(default, alias = "truncation_mode")]
    pub truncation: Truncation,
}

impl DataSection {
    /// `train: sources` with every other key at its default (what `--eval-data FILE` reads
    /// without a run's recipe).
    pub fn of(train: Sources) -> Self {
        Self {
            train,
            eval: None,
            format: Format::default(),
            columns: None,
            chat_template: None,
            template_kwargs: Default::default(),
            eval_fraction: 0.0,
            max_length: d_max_length(),
            max_prompt_length: None,
            truncation: Truncation::default(),
        }
    }
}

/// Which end of a too-long prompt is kept (TRL's `truncation_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Keep the end of the prompt (the part next to the completion).
    #[default]
    KeepEnd,
    /// Keep the start of the prompt.
    KeepStart,
}

/// `data.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Told from the first record (and `columns` when `data.columns` is given).
    #[default]
    Auto,
    Trl,
    OpenaiPreference,
    SharegptRanking,
    Columns,
}

impl Format {
    pub const NAMES: &'static str = "trl, openai-preference, sharegpt-ranking, columns";

    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Trl => "trl",
            Format::OpenaiPreference => "openai-preference",
            Format::SharegptRanking => "sharegpt-ranking",
            Format::Columns => "columns",
        }
    }
}

/// `data.columns`: the field of each part, for data sets with their own names. A name may be a
/// dotted path into nested objects (`input.question`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    #[serde(default)]
    pub prompt: Option<String>,
    pub chosen: String,
    pub rejected: String,
    /// A system message put before the prompt (the record becomes conversational).
    #[serde(default)]
    pub system: Option<String>,
}

fn d_max_length() -> usize {
    512
}
