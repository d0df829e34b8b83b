//! The recipe: what `dpo-lora run` trains, as YAML, validated, then resolved into one value
//! ([`RunSpec`], `run`: the loss and the reference decided) that the training stages receive.
//!
//! Owns: the recipe schema (every key, its default and its meaning; one file per section, and
//! the values the stages are configured with: `device`, `data`, `sources`, `lora`, `loss`,
//! `train`, `export`), reading it with errors that name the file, line and key (`keys`),
//! `--set key.path=value` overrides, and the checks that need no model (`validate`: ranges,
//! combinations). Does not: open the model or data (see `train::prepare`). Imports no stage:
//! the stages import their settings from here.
//!
//! Paths in a recipe are relative to the directory dpo-lora runs in; a leading `~/` is the home
//! directory. Unknown keys are errors (a typo must not silently fall back to a default).

pub mod data;
pub mod device;
pub mod export;
mod keys;
pub mod lora;
pub mod loss;
pub mod run;
pub mod sources;
pub mod train;
mod validate;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use data::{DataSection, Truncation};
pub use device::{BackendChoice, ComputeDtype, DeviceChoice};
pub use export::ExportSpec;
pub use keys::TRL_ALIASES;
use keys::{alias_clash, canonical_key, key_path_at, line_of_key};
pub use lora::{LoraSection, Target};
pub use loss::{Loss, LossSection, LossType, PreferenceLoss};
pub use run::{Reference, RunSpec};
pub use sources::{SourceSpec, Sources};
pub use train::{CheckpointKeep, Schedule, TrainSection};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Where to train: auto (CUDA, then Metal, then the CPU), cpu, cuda, cuda:N, metal.
    #[serde(default)]
    pub device: DeviceChoice,
    /// Activation type: auto (bf16 on CUDA, else f32), f32, bf16, f16. The CPU runs f32; the
    /// loss, log-softmax, LoRA weights and optimizer state are f32 always.
    #[serde(default)]
    pub dtype: ComputeDtype,
    /// How the ops run: auto (our CPU kernels for f32 on the CPU, candle's ops elsewhere),
    /// cpu-kernels, or candle (candle's device-generic ops, what CUDA and Metal run).
    #[serde(default)]
    pub backend: BackendChoice,
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub lora: LoraSection,
    #[serde(default)]
    pub loss: LossSection,
    #[serde(default)]
    pub reference: ReferenceSection,
    pub train: TrainSection,
    pub output: OutputSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A local .gguf file or `hf:OWNER/REPO/FILE.gguf`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSection {
    #[serde(default)]
    pub mode: ReferenceMode,
    /// Where precomputed reference log-probs are cached (default ~/.cache/dpo-lora/reference).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

/// `reference.mode` as written: where π_ref's log-probs come from, for a loss that uses one
/// (resolved with the loss into [`Reference`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceMode {
    /// The same loaded base with adapters off (plus `init_from`, frozen), at every step.
    #[default]
    AdaptersOff,
    /// One no-gradient pass over the data before training, cached on disk.
    Precomputed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    pub dir: PathBuf,
    /// Exports made when training finishes, each into `<dir>/export/<name>` (see
    /// `export::spec`): e.g. `[peft, gguf-lora, {format: gguf, quant: q8_0}]`.
    #[serde(default)]
    pub export: Vec<ExportSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{path}: cannot read the recipe: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("{path}:{line}: {key}{msg}")]
    Parse {
        path: PathBuf,
        line: u64,
        key: String,
        msg: String,
    },
    #[error("--set {arg}: {msg}")]
    Set { arg: String, msg: String },
    #[error("{path}{line}: {key} {msg}")]
    Invalid {
        path: PathBuf,
        line: String,
        key: String,
        msg: String,
    },
}

impl Recipe {
    /// Read `path`, apply `overrides` (`key.path=value`, the value parsed as YAML), validate.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Recipe, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(|err| RecipeError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        Self::parse(&text, path, overrides)
    }

    pub fn parse(text: &str, path: &Path, overrides: &[String]) -> Result<Recipe, RecipeError> {
        if let Ok(tree) = serde_saphyr::from_str::<serde_json::Value>(text) {
            if let Some((canon, alias)) = alias_clash(&tree) {
                let name = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
                let line = line_of_key(text, &alias)
                    .map(|l| format!(":{l}"))
                    .unwrap_or_default();
                return Err(RecipeError::Invalid {
                    path: path.to_path_buf(),
                    line,
                    key: alias.clone(),
                    msg: format!(
                        "and {canon} are the same key ({} is TRL's name for {}); give one of them",
                        name(&alias),
                        name(&canon)
                    ),
                });
            }
        }
        let mut recipe: Recipe = serde_saphyr::from_str(text).map_err(|e| {
            let first = e.to_string().lines().next().unwrap_or("").to_string();
            let msg = first
                .split_once(": ")
                .map(|(_, m)| m.to_string())
                .unwrap_or(first.clone());
            // "line 3 column 15: msg" -> keep msg; name the key found on that line.
            let msg = match msg.split_once(": ") {
                Some((loc, m)) if loc.starts_with("line ") => m.to_string(),
                _ => msg,
            };
            let line = e.location().map(|l| l.line()).unwrap_or(0);
            let key = key_path_at(text, line as usize)
                .map(|k| format!("{k}: "))
                .unwrap_or_default();
            RecipeError::Parse {
                path: path.to_path_buf(),
                line,
                key,
                msg,
            }
        })?;
        for arg in overrides {
            recipe = recipe.with_override(arg)?;
        }
        recipe.expand_home();
        recipe.validate().map_err(|(key, msg)| {
            let line = line_of_key(text, &key)
                .map(|l| format!(":{l}"))
                .unwrap_or_default();
            RecipeError::Invalid {
                path: path.to_path_buf(),
                line,
                key,
                msg,
            }
        })?;
        Ok(recipe)
    }

    fn with_override(&self, arg: &str) -> Result<Recipe, RecipeError> {
        let err = |msg: String| RecipeError::Set {
            arg: arg.to_string(),
            msg,
        };
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| err("expected key.path=value".into()))?;
        let key = &canonical_key(key);
        let value: serde_json::Value = if value.is_empty() {
            serde_json::Value::Null
        } else {
            serde_saphyr::from_str(value).map_err(|e| {
                err(format!(
                    "value is not valid YAML: {}",
                    e.to_string().lines().next().unwrap_or("")
                ))
            })?
        };
        let mut tree = serde_json::to_value(self).map_err(|e| err(e.to_string()))?;
        let mut node = &mut tree;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let obj = node
                .as_object_mut()
                .ok_or_else(|| err(format!("`{}` is not a section", parts[..i].join("."))))?;
            node = obj
                .get_mut(*part)
                .ok_or_else(|| err(format!("unknown key `{key}`")))?;
        }
        *node = value;
        serde_json::from_value(tree).map_err(|e| err(format!("{key}: {e}")))
    }

    fn expand_home(&mut self) {
        let home = |p: &Path| -> PathBuf {
            match (p.strip_prefix("~"), std::env::var_os("HOME")) {
                (Ok(rest), Some(h)) => PathBuf::from(h).join(rest),
                _ => p.to_path_buf(),
            }
        };
        if let Some(rest) = self.model.path.strip_prefix("~/") {
            if let Some(h) = std::env::var_os("HOME") {
                self.model.path = PathBuf::from(h).join(rest).to_string_lossy().into_owned();
            }
        }
        let eval = self.data.eval.iter_mut().flat_map(|e| e.0.iter_mut());
        for spec in self.data.train.0.iter_mut().chain(eval) {
            spec.path = home(Path::new(&spec.path)).to_string_lossy().into_owned();
        }
        self.lora.init_from = self.lora.init_from.as_deref().map(home);
        if let Some(t) = &self.data.chat_template {
            if t.starts_with("~/") {
                self.data.chat_template = Some(home(Path::new(t)).to_string_lossy().into_owned());
            }
        }
        self.reference.cache_dir = self.reference.cache_dir.as_deref().map(home);
        self.output.dir = home(&self.output.dir);
    }

    /// The recipe as YAML (what is saved in the run folder and printed).
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self)
            .unwrap_or_else(|e| format!("# could not render the recipe: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
