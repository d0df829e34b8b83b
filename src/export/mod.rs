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
//! Every export is written into a hidden temporary sibling of `--out` ([`Staging`]) and renamed
//! into place at the end: a failed export never leaves a half-written folder where a good one was.
//! Before that, a merged export (`hf`, `gguf`) is read back and scored on held-out pairs beside
//! base + adapter (`fidelity`), and the card says what it keeps.
//! Inside, dpo-lora's tensors are in Hugging Face's layout (see `model`); the GGUF writers put
//! llama's Q/K rows back into llama.cpp's order, the Hugging Face writer undoes gemma's norm shift.

pub mod card;
pub mod fidelity;
pub mod gguf;
pub mod gguf_lora;
pub mod hf;
pub mod hub;
pub mod merge;
pub mod names;
pub mod quant;
pub mod tokenizer_files;

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::atomic::Staging;
use crate::model::Lora;
pub use crate::recipe::export::{ExportSpec, Format};
use crate::session::Loaded;
pub use card::Provenance;
pub use quant::{HfDtype, QuantChoice};

impl Format {
    /// Whether the format carries the adapter itself (and so cannot be made without one).
    fn needs_adapter(self, base_only: bool) -> bool {
        match self {
            Format::Peft | Format::GgufLora => true,
            Format::Hf => !base_only,
            Format::Gguf => true,
        }
    }
}

/// How to export.
#[derive(Debug, Clone)]
pub struct Options {
    pub format: Format,
    /// Tensor type of the `hf` export.
    pub dtype: HfDtype,
    /// Tensor types of the `gguf` export.
    pub quant: QuantChoice,
    /// `hf` only: write the base without the adapter (what PEFT applies an adapter to).
    pub base_only: bool,
    /// Replace an existing `--out` (atomically, once the new one is complete).
    pub force: bool,
}

/// Held-out pairs a merged export is scored on (see `fidelity`).
pub struct HeldOut {
    pub pairs: Vec<crate::data::batch::TrainPair>,
    /// Where they came from, for the report.
    pub data: String,
    pub progress: bool,
}

/// What an export wrote and what it measured.
#[derive(Debug, Default)]
pub struct Report {
    pub files: Vec<(String, u64)>,
    /// Lines for the log (and the model card): conversions made, re-quantization cost.
    pub notes: Vec<String>,
    /// What the merged weights keep of the trained behaviour, when held-out pairs were given.
    pub fidelity: Option<fidelity::Fidelity>,
}

/// Export `base` (+ `lora`) as `opts.format` into `out`; a merged export (`hf` with an
/// adapter, `gguf`) is scored on `held` when given.
pub fn export(
    base: &Loaded,
    lora: Option<&Lora>,
    prov: &Provenance,
    opts: &Options,
    held: Option<&HeldOut>,
    out: &Path,
) -> Result<Report> {
    if opts.base_only && opts.format != Format::Hf {
        bail!("--base-only applies to --format hf only");
    }
    if opts.format.needs_adapter(opts.base_only) && lora.is_none() {
        bail!(
            "--format {} needs an adapter: give --run DIR or --adapter DIR (or --base-only for hf)",
            opts.format.name()
        );
    }
    let lora = if opts.base_only { None } else { lora };
    let staging = Staging::new(out, opts.force)?;
    let mut report = Report::default();
    match opts.format {
        Format::Peft => {
            let lora = lora.context("no adapter")?;
            crate::model::peft::write_files(
                lora,
                staging.dir(),
                &crate::model::peft::BaseInfo::of(&base.model, Some(&base.path)),
                Some(&card::base_model_id(base)),
            )?;
        }
        Format::Hf => hf::write(base, lora, opts.dtype, staging.dir(), &mut report)?,
        Format::Gguf => gguf::write(
            base,
            lora.context("no adapter")?,
            opts.quant,
            staging.dir(),
            &mut report,
        )?,
        Format::GgufLora => gguf_lora::write(
            base,
            lora.context("no adapter")?,
            staging.dir(),
            &mut report,
        )?,
    }
    let merged = lora.is_some() && matches!(opts.format, Format::Gguf | Format::Hf);
    if merged && held.is_none() {
        report.notes.push(
            "fidelity not measured: no held-out pairs (pass --eval-data FILE, or export --run from a run with data.eval or data.eval_fraction)".into(),
        );
    }
    if let (Some(lora), Some(held)) = (lora, held) {
        let merged = match opts.format {
            Format::Gguf => Some(gguf::read_back(staging.dir())?),
            Format::Hf => Some(hf::read_back(base, opts.dtype, staging.dir())?),
            Format::Peft | Format::GgufLora => None,
        };
        if let Some(m) = merged {
            let f = fidelity::measure(
                &base.model,
                lora,
                &m,
                &held.pairs,
                &held.data,
                held.progress,
            )?;
            report.notes.push(f.summary());
            if let Some(w) = f.warning(&finer(opts)) {
                report.notes.push(w);
            }
            f.write(staging.dir())?;
            report.fidelity = Some(f);
        }
    }
    card::write(base, lora, prov, opts, &report, staging.dir())?;
    report.files = list_files(staging.dir())?;
    staging.commit()?;
    Ok(report)
}

/// What would keep more of the adapter than `opts` did.
fn finer(opts: &Options) -> String {
    match (opts.format, opts.quant) {
        (Format::Hf, _) => "--dtype f32".into(),
        (_, QuantChoice::Keep | QuantChoice::All(candle_core::quantized::GgmlDType::Q8_0)) => {
            "--quant f16".into()
        }
        _ => "--quant keep (or q8_0)".into(),
    }
}

fn list_files(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            files.push((
                e.file_name().to_string_lossy().into_owned(),
                e.metadata()?.len(),
            ));
        }
    }
    files.sort();
    Ok(files)
}
