//! `dpo-lora inspect`: what a GGUF file holds and what it costs in memory.

use anyhow::Result;

use crate::cli::InspectArgs;
use crate::model::Model;
use crate::tokenizer::TokenizerKind;

pub fn run(a: InspectArgs) -> Result<()> {
    let f = super::open(&a.path)?;
    let tok = super::tokenizer(&f)?;
    let model = Model::load(&f, &crate::model::Execution::cpu())?;
    let c = &model.config;
    println!(
        "file           {} ({:.1} MB)",
        f.path.display(),
        f.file_size as f64 / 1e6
    );
    if let Ok(Some(name)) = f.opt_str("general.name") {
        println!("name           {name}");
    }
    println!("architecture   {}", c.arch.gguf_name());
    println!("layers         {}", c.n_layer);
    println!("hidden         {}", c.hidden);
    println!(
        "heads          {} (kv {}), head_dim {}",
        c.n_head, c.n_kv_head, c.head_dim
    );
    println!("ffn            {}", c.ffn);
    println!("vocab          {}", c.vocab);
    println!("context        {}", c.context_length);
    println!(
        "rope base      {}{}",
        c.rope_base,
        if c.sliding_window.is_some() {
            format!(" (sliding layers {})", c.rope_base_local)
        } else {
            String::new()
        }
    );
    if let Some(w) = c.sliding_window {
        println!(
            "sliding window {w} (every {}th layer global)",
            c.global_every
        );
    }
    println!("tied embedding {}", model.is_tied());
    let types: Vec<String> = f
        .type_counts()
        .iter()
        .map(|(t, n)| format!("{t:?} x{n}"))
        .collect();
    println!("tensor types   {}", types.join(", "));
    let kind = match tok.kind() {
        TokenizerKind::Bpe(pre) => format!("gpt2-type BPE (pre-tokenizer {pre:?})"),
        TokenizerKind::Spm => "llama-type SentencePiece".to_string(),
    };
    println!(
        "tokenizer      {kind}, {} tokens, add_bos {}",
        tok.vocab_size(),
        tok.add_bos()
    );
    println!(
        "chat template  {}",
        if tok.chat_template().is_some() {
            "yes"
        } else {
            "no"
        }
    );
    println!(
        "in memory      {:.1} MB (weights kept in their quant types)",
        model.size_in_bytes() as f64 / 1e6
    );
    Ok(())
}
