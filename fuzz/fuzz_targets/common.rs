//! What the fuzz targets share: the tokenizers they encode with (the tiny fixtures' BPE and SPM
//! vocabularies, and the real models' when `scripts/fetch-models.sh` has fetched them), a
//! scratch file per process for the readers that take a path, and the record pipeline
//! (rows -> layout -> record -> token ids -> truncation) that `run` and `score` use.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dpo_lora::data::batch::{encode_record, Limits};
use dpo_lora::data::files::for_each_row;
use dpo_lora::data::{DataError, Format, Layout};
use dpo_lora::gguf::GgufFile;
use dpo_lora::recipe::Truncation;
use dpo_lora::tokenizer::Tokenizer;

/// The tokenizers, loaded once per process: name and tokenizer.
pub fn tokenizers() -> &'static [(String, Tokenizer)] {
    static TOKS: OnceLock<Vec<(String, Tokenizer)>> = OnceLock::new();
    TOKS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files: Vec<PathBuf> = ["llama", "qwen2", "qwen3"]
            .iter()
            .map(|a| root.join(format!("tests/fixtures/tiny/{a}/tiny-{a}-q8_0.gguf")))
            .collect();
        let models = std::env::var_os("DPO_LORA_MODELS")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/dpo-lora/models"))
            });
        if let Some(m) = models {
            for name in [
                "SmolLM2-135M-Instruct.Q4_1.gguf",
                "gemma-3-270m-q4_k_m.gguf",
            ] {
                if m.join(name).is_file() {
                    files.push(m.join(name));
                }
            }
        }
        files
            .iter()
            .map(|p| {
                let f = GgufFile::open(p).unwrap_or_else(|e| panic!("fuzz setup: {e}"));
                let mut t = Tokenizer::from_gguf(&f).unwrap_or_else(|e| panic!("fuzz setup: {e}"));
                if t.chat_template().is_none() {
                    t.set_chat_template(Some("chatml"), &Default::default())
                        .unwrap();
                }
                (p.file_name().unwrap().to_string_lossy().into_owned(), t)
            })
            .collect()
    })
}

/// `bytes` written to this process's scratch file named `*.{ext}` (in /dev/shm when it exists).
pub fn scratch(bytes: &[u8], ext: &str) -> PathBuf {
    let dir = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let p = dir.join(format!("dpo-lora-fuzz-{}.{ext}", std::process::id()));
    std::fs::write(&p, bytes).expect("fuzz setup: write the scratch file");
    p
}

/// Every row of the data file `path` as `run` reads it: the layout from the first row, each
/// row a record, each record encoded by every tokenizer and cut to small limits. Errors are
/// fine (they are the reader's answer); a panic or an abort is a finding.
pub fn records(path: &Path) {
    dpo_lora::errors::install_panic_hook();
    let mut layout: Option<Layout> = None;
    let mut index = 0usize;
    let _ = for_each_row::<DataError>(path, |row, at| {
        let l = match &layout {
            Some(l) => l.clone(),
            None => match Layout::resolve(Format::Auto, None, &row) {
                Ok(l) => {
                    layout = Some(l.clone());
                    l
                }
                Err(_) => return Ok(()),
            },
        };
        if let Ok((rec, implicit)) = l.record(&row, at, index) {
            let _ = l.describe(&rec, implicit);
            for (_, tok) in tokenizers() {
                if let Ok(e) = encode_record(tok, &rec) {
                    for truncation in [Truncation::KeepEnd, Truncation::KeepStart] {
                        let limits = Limits {
                            max_length: 48,
                            max_prompt_length: Some(16),
                            truncation,
                            bos: tok.bos_id(),
                        };
                        let _ = limits.apply(&e.chosen);
                        let _ = limits.apply(&e.rejected);
                    }
                }
            }
        }
        index += 1;
        Ok(())
    });
}

/// Whether `decode(encode(text))` must give `text` back: byte-level BPE does, for text whose
/// every character comes back alone (a vocabulary may lack a byte's token, as SmolLM2's lacks
/// 0x16 and 0x1d: llama.cpp drops those bytes too); SentencePiece-style vocabularies normalise
/// spaces.
pub fn round_trips(tok: &Tokenizer, text: &str) -> bool {
    matches!(tok.kind(), dpo_lora::tokenizer::TokenizerKind::Bpe(_))
        && text.chars().all(|c| {
            let s = c.to_string();
            tok.decode_bytes(&tok.encode(&s, false)) == s.as_bytes()
        })
}
