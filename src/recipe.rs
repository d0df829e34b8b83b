//! The recipe: what `dpo-lora run` trains, as YAML, validated into one typed value.
//!
//! Owns: the recipe schema (every key, its default and its meaning), reading it with errors that
//! name the file, line and key, `--set key.path=value` overrides, and the checks that need no
//! model (ranges, combinations). Does not: open the model or data (see `train::plan`).
//!
//! Paths in a recipe are relative to the directory dpo-lora runs in; a leading `~/` is the home
//! directory. Unknown keys are errors (a typo must not silently fall back to a default).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{Columns, Format, Sources};
use crate::loss::LossType;
use crate::model::Target;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Where to train: auto (CUDA, then Metal, then the CPU), cpu, cuda, cuda:N, metal.
    #[serde(default)]
    pub device: crate::device::DeviceChoice,
    /// Activation type: auto (bf16 on CUDA, else f32), f32, bf16, f16. The CPU runs f32; the
    /// loss, log-softmax, LoRA weights and optimizer state are f32 always.
    #[serde(default)]
    pub dtype: crate::device::ComputeDtype,
    /// How the ops run: auto (our CPU kernels for f32 on the CPU, candle's ops elsewhere),
    /// cpu-kernels, or candle (candle's device-generic ops, what CUDA and Metal run).
    #[serde(default)]
    pub backend: crate::model::BackendChoice,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    #[serde(default = "d_rank", alias = "lora_r")]
    pub rank: usize,
    #[serde(default = "d_alpha", alias = "lora_alpha")]
    pub alpha: f64,
    #[serde(default, alias = "lora_dropout")]
    pub dropout: f64,
    #[serde(default = "d_targets", alias = "lora_target_modules")]
    pub target_modules: Vec<Target>,
    /// Scale alpha / sqrt(rank) instead of alpha / rank.
    #[serde(default)]
    pub use_rslora: bool,
    /// Start from this PEFT adapter folder; the reference is then base + this adapter, frozen.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
}

impl Default for LoraSection {
    fn default() -> Self {
        Self {
            rank: d_rank(),
            alpha: d_alpha(),
            dropout: 0.0,
            target_modules: d_targets(),
            use_rslora: false,
            init_from: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSection {
    #[serde(rename = "type", default)]
    pub kind: LossType,
    #[serde(default = "d_beta")]
    pub beta: f64,
    /// sigmoid: conservative DPO / robust label smoothing epsilon.
    #[serde(default)]
    pub label_smoothing: f64,
    /// simpo: target reward margin.
    #[serde(default = "d_gamma")]
    pub gamma: f64,
    /// orpo: weight of the odds-ratio term.
    #[serde(default = "d_lambda")]
    pub lambda: f64,
    /// Weight of an NLL term on the chosen completion added to any loss (TRL's RPO).
    #[serde(default)]
    pub rpo_alpha: Option<f64>,
}

impl Default for LossSection {
    fn default() -> Self {
        Self {
            kind: LossType::default(),
            beta: d_beta(),
            label_smoothing: 0.0,
            gamma: d_gamma(),
            lambda: d_lambda(),
            rpo_alpha: None,
        }
    }
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

/// Where π_ref's log-probs come from.
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
pub struct TrainSection {
    #[serde(alias = "learning_rate")]
    pub lr: f64,
    /// Pairs per micro-batch (each pair is 2 sequences in the forward).
    #[serde(default = "d_batch", alias = "per_device_train_batch_size")]
    pub batch_size: usize,
    #[serde(default = "d_one", alias = "gradient_accumulation_steps")]
    pub grad_accum: usize,
    #[serde(default)]
    pub max_steps: Option<usize>,
    #[serde(default, alias = "num_train_epochs")]
    pub epochs: Option<f64>,
    #[serde(default = "d_seed")]
    pub seed: u64,
    #[serde(default)]
    pub warmup_steps: usize,
    /// Warm-up as a share of the run's optimizer steps, rounded up (instead of `warmup_steps`).
    #[serde(default)]
    pub warmup_ratio: Option<f64>,
    #[serde(default, alias = "lr_scheduler_type")]
    pub schedule: Schedule,
    #[serde(default)]
    pub weight_decay: f64,
    /// Global gradient-norm clipping (none when absent).
    #[serde(default = "d_clip")]
    pub max_grad_norm: Option<f64>,
    /// Evaluate every N optimizer steps (and always at the end).
    #[serde(default, alias = "eval_steps")]
    pub eval_every: Option<usize>,
    /// Write a checkpoint every N optimizer steps.
    #[serde(default, alias = "save_steps")]
    pub save_every: Option<usize>,
    #[serde(default = "d_keep", alias = "save_total_limit")]
    pub keep_checkpoints: usize,
    /// Recompute each block in the backward instead of keeping its activations: a step holds
    /// one tensor per layer instead of all of them, for about 1.5x the step time.
    #[serde(default = "d_true")]
    pub gradient_checkpointing: bool,
    /// What a checkpointed block keeps between its two runs besides its input: `none`, `mlp`
    /// (+ gate/up outputs), `projections` (+ o/down: the recompute multiplies only q/k/v), or
    /// `auto`: the most that fits in a quarter of the memory available for the largest
    /// micro-batch (`mlp` where the device's free memory is not known).
    #[serde(default)]
    pub checkpoint_keep: CheckpointKeep,
}

/// `train.checkpoint_keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKeep {
    #[default]
    Auto,
    None,
    Mlp,
    Projections,
}

/// Learning-rate schedule after the linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    #[default]
    Cosine,
    Linear,
    /// Constant after the warm-up (transformers' `constant_with_warmup`).
    #[serde(alias = "constant_with_warmup")]
    Constant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    pub dir: PathBuf,
    /// Exports made when training finishes, each into `<dir>/export/<name>` (see
    /// `export::spec`): e.g. `[peft, gguf-lora, {format: gguf, quant: q8_0}]`.
    #[serde(default)]
    pub export: Vec<crate::export::ExportSpec>,
}

fn d_max_length() -> usize {
    512
}
fn d_rank() -> usize {
    8
}
fn d_alpha() -> f64 {
    16.0
}
fn d_targets() -> Vec<Target> {
    Target::ALL.to_vec()
}
fn d_beta() -> f64 {
    0.1
}
fn d_gamma() -> f64 {
    0.5
}
fn d_lambda() -> f64 {
    0.1
}
fn d_batch() -> usize {
    2
}
fn d_one() -> usize {
    1
}
fn d_seed() -> u64 {
    42
}
fn d_clip() -> Option<f64> {
    Some(1.0)
}
fn d_true() -> bool {
    true
}
fn d_keep() -> usize {
    2
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

/// TRL's (and PEFT's) names for recipe keys, accepted in their section of a recipe and by
/// `--set` either flat (`--set learning_rate=1e-4`) or in their section: `(canonical, alias)`.
/// The resolved recipe is always printed with the canonical names.
pub const TRL_ALIASES: &[(&str, &str)] = &[
    ("train.lr", "learning_rate"),
    ("train.batch_size", "per_device_train_batch_size"),
    ("train.grad_accum", "gradient_accumulation_steps"),
    ("train.epochs", "num_train_epochs"),
    ("train.schedule", "lr_scheduler_type"),
    ("train.warmup_ratio", "warmup_ratio"),
    ("train.warmup_steps", "warmup_steps"),
    ("train.eval_every", "eval_steps"),
    ("train.save_every", "save_steps"),
    ("train.keep_checkpoints", "save_total_limit"),
    ("train.max_grad_norm", "max_grad_norm"),
    ("train.weight_decay", "weight_decay"),
    ("data.truncation", "truncation_mode"),
    ("lora.rank", "lora_r"),
    ("lora.alpha", "lora_alpha"),
    ("lora.dropout", "lora_dropout"),
    ("lora.target_modules", "lora_target_modules"),
];

/// The canonical key for `key` as typed after `--set`: itself, or what a TRL name stands for.
fn canonical_key(key: &str) -> String {
    for &(canon, alias) in TRL_ALIASES {
        let (section, _) = canon.split_once('.').unwrap_or(("", canon));
        if key == alias || key == format!("{section}.{alias}") {
            return canon.to_string();
        }
    }
    key.to_string()
}

/// A key given twice in one section, once by its canonical name and once by a TRL name:
/// `Some((section.canonical, section.alias))`.
fn alias_clash(tree: &serde_json::Value) -> Option<(String, String)> {
    for &(canon, alias) in TRL_ALIASES {
        let (section, name) = canon.split_once('.')?;
        if name == alias {
            continue;
        }
        let sec = tree.get(section)?.as_object();
        if let Some(sec) = sec {
            if sec.contains_key(name) && sec.contains_key(alias) {
                return Some((canon.to_string(), format!("{section}.{alias}")));
            }
        }
    }
    None
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

    /// Range and combination checks: `Err((key, what is wrong and how to fix it))`.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: String| Err((k.to_string(), m));
        let (t, d, l, s) = (&self.train, &self.data, &self.lora, &self.loss);
        if !positive(t.lr) {
            return bad(
                "train.lr",
                format!("must be a positive number, got {}", t.lr),
            );
        }
        if t.batch_size == 0 || t.grad_accum == 0 {
            return bad(
                "train.batch_size",
                "and train.grad_accum must be at least 1".into(),
            );
        }
        if t.max_steps.is_none() && t.epochs.is_none() {
            return bad(
                "train.max_steps",
                "is missing: give train.max_steps and/or train.epochs".into(),
            );
        }
        if t.max_steps == Some(0) || t.epochs.is_some_and(|e| !positive(e)) {
            return bad(
                "train.max_steps",
                "and train.epochs must be positive".into(),
            );
        }
        if !(0.0..1.0).contains(&t.weight_decay) {
            return bad(
                "train.weight_decay",
                format!("must be in [0, 1), got {}", t.weight_decay),
            );
        }
        if t.max_grad_norm.is_some_and(|c| !positive(c)) {
            return bad(
                "train.max_grad_norm",
                "must be positive (or null for no clipping)".into(),
            );
        }
        if t.keep_checkpoints == 0 {
            return bad("train.keep_checkpoints", "must be at least 1".into());
        }
        if d.max_length < 4 {
            return bad(
                "data.max_length",
                format!("must be at least 4, got {}", d.max_length),
            );
        }
        if let Some(p) = d.max_prompt_length {
            if p == 0 || p >= d.max_length {
                return bad(
                    "data.max_prompt_length",
                    format!(
                        "must be in 1..{} (below data.max_length), got {p}",
                        d.max_length
                    ),
                );
            }
        }
        for (key, sources) in [
            ("data.train", Some(&d.train)),
            ("data.eval", d.eval.as_ref()),
        ] {
            for spec in sources.iter().flat_map(|s| s.0.iter()) {
                if let Some(x) = spec.fraction {
                    if !(x > 0.0 && x <= 1.0) {
                        return bad(
                            key,
                            format!("{}: fraction must be in (0, 1], got {x}", spec.path),
                        );
                    }
                }
            }
        }
        if !(0.0..1.0).contains(&d.eval_fraction) {
            return bad(
                "data.eval_fraction",
                format!("must be in [0, 1), got {}", d.eval_fraction),
            );
        }
        if let Some(r) = t.warmup_ratio {
            if !(0.0..1.0).contains(&r) {
                return bad("train.warmup_ratio", format!("must be in [0, 1), got {r}"));
            }
            if t.warmup_steps > 0 {
                return bad(
                    "train.warmup_ratio",
                    "and train.warmup_steps are both set; give one (warmup_ratio is a share of the run's steps)".into(),
                );
            }
        }
        if l.rank == 0 {
            return bad("lora.rank", "must be at least 1".into());
        }
        if !positive(l.alpha) {
            return bad("lora.alpha", format!("must be positive, got {}", l.alpha));
        }
        if !(0.0..1.0).contains(&l.dropout) {
            return bad(
                "lora.dropout",
                format!("must be in [0, 1), got {}", l.dropout),
            );
        }
        if l.target_modules.is_empty() {
            return bad("lora.target_modules", "is empty: name at least one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj".into());
        }
        if !positive(s.beta) {
            return bad("loss.beta", format!("must be positive, got {}", s.beta));
        }
        if !(0.0..0.5).contains(&s.label_smoothing) {
            return bad(
                "loss.label_smoothing",
                format!("must be in [0, 0.5), got {}", s.label_smoothing),
            );
        }
        if s.rpo_alpha.is_some_and(|a| !(positive(a) || a == 0.0)) {
            return bad("loss.rpo_alpha", "must be >= 0".into());
        }
        for (i, e) in self.output.export.iter().enumerate() {
            if let Err(m) = e.check() {
                return bad(&format!("output.export[{i}]"), m);
            }
        }
        if !s.kind.uses_reference() && self.reference.mode == ReferenceMode::Precomputed {
            return bad(
                "reference.mode",
                format!(
                    "precomputed is pointless with the reference-free loss `{}`; drop it",
                    s.kind.name()
                ),
            );
        }
        Ok(())
    }

    /// The recipe as YAML (what is saved in the run folder and printed).
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self)
            .unwrap_or_else(|e| format!("# could not render the recipe: {e}\n"))
    }
}

/// A finite number above zero (NaN is not).
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// The dotted key path of the mapping key on 1-based `line` (`train.batch_size`), from indentation.
fn key_path_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let key_of = |l: &str| -> Option<(usize, String)> {
        let indent = l.len() - l.trim_start().len();
        let t = l.trim_start().trim_start_matches("- ");
        if t.starts_with('#') {
            return None;
        }
        let (k, _) = t.split_once(':')?;
        let k = k.trim();
        (!k.is_empty() && !k.contains(' ')).then(|| (indent, k.to_string()))
    };
    let mut i = line.checked_sub(1)?;
    let (mut indent, first) = loop {
        if let Some(k) = lines.get(i).and_then(|l| key_of(l)) {
            break k;
        }
        i = i.checked_sub(1)?;
    };
    let mut path = vec![first];
    while indent > 0 && i > 0 {
        i -= 1;
        if let Some((ind, k)) = lines.get(i).and_then(|l| key_of(l)) {
            if ind < indent {
                path.push(k);
                indent = ind;
            }
        }
    }
    path.reverse();
    Some(path.join("."))
}

/// The 1-based line where the dotted `key` is written, if it is.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    (1..=text.lines().count()).find(|&l| {
        key_path_at(text, l).as_deref() == Some(key)
            && text.lines().nth(l - 1).is_some_and(|s| s.contains(':'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "model:\n  path: m.gguf\ndata:\n  train: t.jsonl\ntrain:\n  lr: 1.0e-4\n  max_steps: 10\noutput:\n  dir: runs/x\n";

    fn parse(text: &str, sets: &[&str]) -> Result<Recipe, String> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Recipe::parse(text, Path::new("r.yaml"), &sets).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_fill_in() {
        let r = parse(OK, &[]).unwrap();
        assert_eq!(r.lora.rank, 8);
        assert_eq!(r.lora.target_modules.len(), 7);
        assert_eq!(r.loss.kind, LossType::Sigmoid);
        assert_eq!(r.reference.mode, ReferenceMode::AdaptersOff);
        assert_eq!(r.train.max_grad_norm, Some(1.0));
        assert_eq!(r.train.checkpoint_keep, CheckpointKeep::Auto);
        assert_eq!(r.backend, crate::model::BackendChoice::Auto);
    }

    #[test]
    fn backend_and_checkpoint_keep_take_their_names_only() {
        let r = parse(OK, &["backend=candle", "train.checkpoint_keep=mlp"]).unwrap();
        assert_eq!(r.backend, crate::model::BackendChoice::Candle);
        assert_eq!(r.train.checkpoint_keep, CheckpointKeep::Mlp);
        let r = parse(OK, &["backend=cpu-kernels"]).unwrap();
        assert_eq!(r.backend, crate::model::BackendChoice::CpuKernels);
        let e = parse(OK, &["train.checkpoint_keep=everything"]).unwrap_err();
        assert!(e.contains("train.checkpoint_keep"), "{e}");
        let e = parse(OK, &["backend=gpu"]).unwrap_err();
        assert!(e.contains("backend"), "{e}");
    }

    #[test]
    fn typo_and_wrong_type_name_line_and_key() {
        let e = parse(
            &OK.replace("  lr: 1.0e-4", "  lr: 1.0e-4\n  batchsize: 2"),
            &[],
        )
        .unwrap_err();
        assert!(
            e.starts_with("r.yaml:7: train.batchsize: unknown field `batchsize`"),
            "{e}"
        );
        let e = parse(&OK.replace("max_steps: 10", "max_steps: ten"), &[]).unwrap_err();
        assert!(e.starts_with("r.yaml:7: train.max_steps:"), "{e}");
        let e = parse(&OK.replace("lr: 1.0e-4", "lr: -1"), &[]).unwrap_err();
        assert_eq!(e, "r.yaml:6: train.lr must be a positive number, got -1");
    }

    #[test]
    fn overrides_set_any_key_and_reject_unknown_ones() {
        let r = parse(
            OK,
            &[
                "train.lr=0.5",
                "lora.target_modules=[q_proj, v_proj]",
                "loss.type=ipo",
            ],
        )
        .unwrap();
        assert_eq!(r.train.lr, 0.5);
        assert_eq!(r.lora.target_modules, vec![Target::QProj, Target::VProj]);
        assert_eq!(r.loss.kind, LossType::Ipo);
        let e = parse(OK, &["train.lrr=1"]).unwrap_err();
        assert!(e.contains("unknown key `train.lrr`"), "{e}");
        let e = parse(OK, &["train.batch_size=two"]).unwrap_err();
        assert!(
            e.starts_with("--set train.batch_size=two: train.batch_size:"),
            "{e}"
        );
    }

    #[test]
    fn resolved_recipe_round_trips() {
        let r = parse(OK, &["lora.rank=4"]).unwrap();
        let back = parse(&r.to_yaml(), &[]).unwrap();
        assert_eq!(r, back);
    }

    /// TRL's names work in a recipe and in `--set` (flat or in their section), print back as
    /// ours, and clash with ours when both are given.
    #[test]
    fn trl_names_are_aliases_of_ours() {
        let trl = OK.replace("  lr: 1.0e-4\n", "  learning_rate: 2.0e-4\n  gradient_accumulation_steps: 4\n  lr_scheduler_type: constant_with_warmup\n  save_total_limit: 3\n")
            + "lora:\n  lora_r: 16\n  lora_alpha: 32\n  lora_target_modules: [q_proj, v_proj]\n";
        let r = parse(&trl, &[]).unwrap();
        assert_eq!(
            (
                r.train.lr,
                r.train.grad_accum,
                r.train.schedule,
                r.train.keep_checkpoints
            ),
            (2e-4, 4, Schedule::Constant, 3)
        );
        assert_eq!(
            (r.lora.rank, r.lora.alpha, r.lora.target_modules.len()),
            (16, 32.0, 2)
        );
        let yaml = r.to_yaml();
        assert!(
            yaml.contains("lr: ") && !yaml.contains("learning_rate"),
            "{yaml}"
        );
        assert!(
            yaml.contains("rank: 16") && !yaml.contains("lora_r"),
            "{yaml}"
        );

        let r = parse(
            OK,
            &[
                "learning_rate=3e-4",
                "train.per_device_train_batch_size=8",
                "num_train_epochs=2",
                "warmup_ratio=0.1",
                "truncation_mode=keep_start",
                "lora_dropout=0.05",
                "eval_steps=5",
            ],
        )
        .unwrap();
        assert_eq!(
            (r.train.lr, r.train.batch_size, r.train.epochs),
            (3e-4, 8, Some(2.0))
        );
        assert_eq!(r.train.warmup_ratio, Some(0.1));
        assert_eq!(r.data.truncation, Truncation::KeepStart);
        assert_eq!((r.lora.dropout, r.train.eval_every), (0.05, Some(5)));

        let both = OK.replace("  lr: 1.0e-4\n", "  lr: 1.0e-4\n  learning_rate: 2.0e-4\n");
        let e = parse(&both, &[]).unwrap_err();
        assert!(
            e.contains("r.yaml:7") && e.contains("train.learning_rate") && e.contains("train.lr"),
            "{e}"
        );
        let e = parse(OK, &["warmup_ratio=0.1", "warmup_steps=5"]).unwrap_err();
        assert!(
            e.contains("train.warmup_ratio") && e.contains("train.warmup_steps"),
            "{e}"
        );
    }
}
