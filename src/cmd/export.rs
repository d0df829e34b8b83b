//! `dpo-lora export (--run DIR | --model PATH [--adapter DIR]) --format F --out DIR`.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cli::ExportArgs;
use crate::export::{self, hub, Options, Provenance};
use crate::recipe::Recipe;
use crate::session::Loaded;

pub fn run(a: ExportArgs) -> Result<()> {
    let command = command_line();
    // A run's recipe may have trained with another chat template (`data.chat_template`).
    let mut template = None;
    let (model, adapter, prov) = match &a.run {
        Some(dir) => {
            let recipe_path = dir.join("recipe.yaml");
            let recipe = Recipe::load(&recipe_path, &[])
                .with_context(|| format!("{}: is this a dpo-lora run folder?", dir.display()))?;
            let adapter = dir.join("adapter");
            if !adapter.is_dir() {
                anyhow::bail!(
                    "{}: no adapter/ yet (the run has not finished); export a checkpoint with --model {} --adapter {}/checkpoints/step-N/adapter",
                    dir.display(),
                    recipe.model.path,
                    dir.display()
                );
            }
            template = Some((
                recipe.data.chat_template.clone(),
                recipe.data.template_kwargs.clone(),
            ));
            (
                recipe.model.path.clone(),
                Some(adapter),
                Provenance::from_run(dir, command),
            )
        }
        None => (
            a.model
                .clone()
                .context("--model is required without --run")?,
            a.adapter.clone(),
            Provenance {
                command,
                ..Default::default()
            },
        ),
    };
    let opts = Options {
        format: a.format,
        dtype: a.dtype,
        quant: a.quant,
        base_only: a.base_only,
        force: a.force,
    };
    // A push that cannot work fails before the export, not after minutes of it.
    if let Some(repo) = &a.push_to_hub {
        hub::split_repo_id(repo)?;
        if hub::HubAccess::from_env().token.is_none() {
            return Err(hub::HubError::NoToken { dir: a.out.clone() }.into());
        }
    }
    let mut base = Loaded::open(&model)?;
    if let Some((t, kwargs)) = &template {
        use_run_template(&mut base, t.as_deref(), kwargs)?;
    }
    let lora = match (&adapter, a.base_only) {
        (Some(d), false) => Some(crate::model::peft::load(
            d,
            &base.model,
            &candle_core::Device::Cpu,
        )?),
        _ => None,
    };
    export_one(&base, lora.as_ref(), &prov, &opts, &a.out)?;
    if let Some(repo) = &a.push_to_hub {
        push(&a.out, repo, a.private)?;
    }
    Ok(())
}

/// The chat template the run trained with, for the exported tokenizer files and GGUF.
pub fn use_run_template(
    base: &mut Loaded,
    template: Option<&str>,
    kwargs: &serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    base.tok
        .set_chat_template(template, kwargs)
        .map_err(|e| anyhow::anyhow!("data.chat_template: {e}"))
}

/// Export and print what was written (used by `export` and by `run` for `output.export`).
pub fn export_one(
    base: &Loaded,
    lora: Option<&crate::model::Lora>,
    prov: &Provenance,
    opts: &Options,
    out: &std::path::Path,
) -> Result<()> {
    let report = export::export(base, lora, prov, opts, out)?;
    eprintln!("exported {} to {}", opts.format.name(), out.display());
    for n in &report.notes {
        eprintln!("  {n}");
    }
    for (f, size) in &report.files {
        eprintln!("  {f} ({:.1} MB)", *size as f64 / 1e6);
    }
    println!("{}", out.display());
    Ok(())
}

/// Upload an export folder; on failure the folder stays where it is.
pub fn push(dir: &std::path::Path, repo: &str, private: bool) -> Result<()> {
    let mut opts = hub::PushOptions::new(repo);
    opts.private = private;
    opts.commit_message = format!("Upload {} with dpo-lora", dir.display());
    let r = hub::push_folder(dir, &opts)?;
    eprintln!(
        "pushed {} files ({:.1} MB, {} large files uploaded) to {}",
        r.files,
        r.bytes as f64 / 1e6,
        r.lfs_uploaded,
        r.repo_url
    );
    if !r.commit_url.is_empty() {
        eprintln!("commit {}", r.commit_url);
    }
    Ok(())
}

pub fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect();
    let mut s = args.join(" ");
    if let Some(first) = args.first() {
        let exe = PathBuf::from(first);
        if let Some(name) = exe.file_name() {
            s = s.replacen(first.as_str(), &name.to_string_lossy(), 1);
        }
    }
    s
}
