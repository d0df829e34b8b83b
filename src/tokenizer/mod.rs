//! Tokenizer built from GGUF metadata, giving llama.cpp's token ids exactly.
//!
//! Owns: text -> ids (`llama_tokenize` with `add_special = false`), ids -> text for generation,
//! the special ids (BOS, EOS, end-of-generation set), and the chat template. It does not decide
//! where BOS/EOS go in a training sequence beyond [`Tokenizer::encode_pair_parts`], the TRL-style
//! helper the data stage calls.
//!
//! Pipeline (llama.cpp `llama_vocab::impl::tokenize`):
//! 1. `special`: cut the text at special-token texts (CONTROL / UNKNOWN only when
//!    `parse_special`; USER_DEFINED always).
//! 2. each remaining text fragment:
//!    - `gpt2` vocab ([`TokenizerKind::Bpe`]): `pretokenize` regex split + byte-level mapping,
//!      then `bpe` merges by rank;
//!    - `llama` vocab ([`TokenizerKind::Spm`]): optional space prefix, `" "` -> `"▁"`, then `spm`
//!      merges by score with `<0xXX>` byte fallback.
//!
//! The fixtures in `tests/fixtures` (strings_tokens.json, tokens.json) are the oracle; see
//! tests/tokenizer.rs.

mod bpe;
mod chat;
mod pretokenize;
mod special;
mod spm;
mod vocab;

use std::path::PathBuf;

pub use chat::{ChatTemplate, Message, BUILTIN_TEMPLATES};
pub use pretokenize::PreTokenizer;

use special::{Fragment, Specials};
use vocab::{attr, Vocab};

/// An error building a tokenizer from a GGUF file or rendering its chat template.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    #[error("{path}: tokenizer.ggml.model = `{model}` is not supported; supported: gpt2 (byte-level BPE), llama (SentencePiece)")]
    UnsupportedModel { path: PathBuf, model: String },
    #[error("{path}: tokenizer.ggml.pre = `{pre}` is not supported; supported: {supported}")]
    UnsupportedPre {
        path: PathBuf,
        pre: String,
        supported: &'static str,
    },
    #[error("{path}: metadata key `{key}`: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("chat template: {reason}")]
    Template { reason: String },
}

/// Which algorithm the vocabulary uses (`tokenizer.ggml.model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// `gpt2`: byte-level BPE over regex-split words.
    Bpe(PreTokenizer),
    /// `llama`: SentencePiece-style BPE driven by token scores.
    Spm,
}

// One per tokenizer, so the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Model {
    Bpe {
        splitter: pretokenize::Splitter,
        merges: bpe::Merges,
        /// Inverse of GPT-2's byte -> char table, for decoding.
        char_to_byte: std::collections::HashMap<char, u8>,
    },
    Spm {
        bytes: spm::ByteTokens,
        add_space_prefix: bool,
    },
}

/// A tokenizer for one GGUF vocabulary.
pub struct Tokenizer {
    kind: TokenizerKind,
    vocab: Vocab,
    specials: Specials,
    model: Model,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    chat_template: Option<ChatTemplate>,
}

impl Tokenizer {
    /// Read `tokenizer.ggml.*` and `tokenizer.chat_template` from an opened GGUF.
    pub fn from_gguf(f: &crate::gguf::GgufFile) -> Result<Tokenizer, TokenizerError> {
        let model_name = f.get_str("tokenizer.ggml.model")?;
        let mut vocab = Vocab::from_gguf(f)?;
        let (kind, model, default_add_bos) = match model_name {
            "gpt2" => {
                let pre_name = f.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
                let pre = PreTokenizer::from_name(pre_name).ok_or_else(|| {
                    TokenizerError::UnsupportedPre {
                        path: f.path.clone(),
                        pre: pre_name.to_string(),
                        supported: pretokenize::SUPPORTED_PRE,
                    }
                })?;
                let lines = f.get_str_array("tokenizer.ggml.merges")?;
                let merges = bpe::Merges::new(&vocab, &lines, pre.ignore_merges());
                let splitter =
                    pretokenize::Splitter::new(pre).map_err(|e| TokenizerError::Invalid {
                        path: f.path.clone(),
                        key: "tokenizer.ggml.pre".into(),
                        reason: format!("built-in regex failed to compile: {e}"),
                    })?;
                let char_to_byte = pretokenize::byte_to_char_table()
                    .iter()
                    .enumerate()
                    .map(|(b, c)| (*c, b as u8))
                    .collect();
                let model = Model::Bpe {
                    splitter,
                    merges,
                    char_to_byte,
                };
                (TokenizerKind::Bpe(pre), model, pre.default_add_bos())
            }
            "llama" => {
                let add_space_prefix = f
                    .opt_bool("tokenizer.ggml.add_space_prefix")?
                    .unwrap_or(true);
                let model = Model::Spm {
                    bytes: spm::ByteTokens::new(&vocab),
                    add_space_prefix,
                };
                (TokenizerKind::Spm, model, true)
            }
            other => {
                return Err(TokenizerError::UnsupportedModel {
                    path: f.path.clone(),
                    model: other.to_string(),
                })
            }
        };
        // llama.cpp's SPM defaults are BOS 1 / EOS 2; its BPE default (11) is an artefact of
        // one model family, so BPE vocabularies get ids only from metadata.
        let (bos_default, eos_default) = match kind {
            TokenizerKind::Spm => (Some(1), Some(2)),
            TokenizerKind::Bpe(_) => (None, None),
        };
        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < vocab.len());
        let bos = vocab
            .special_id(f, "tokenizer.ggml.bos_token_id")?
            .or(in_range(bos_default));
        let eos = vocab
            .special_id(f, "tokenizer.ggml.eos_token_id")?
            .or(in_range(eos_default));
        for key in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            let id = if key.contains("eos") {
                eos
            } else {
                vocab.special_id(f, key)?
            };
            if let Some(id) = id {
                vocab.eog.insert(id);
            }
        }
        let add_bos = f
            .opt_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(default_add_bos);
        if add_bos && bos.is_none() {
            return Err(TokenizerError::Invalid {
                path: f.path.clone(),
                key: "tokenizer.ggml.add_bos_token".into(),
                reason: "is true, but tokenizer.ggml.bos_token_id is not set".into(),
            });
        }
        let text_of = |id: Option<u32>| id.map_or("", |i| vocab.tokens[i as usize].as_str());
        let chat_template = match f.opt_str("tokenizer.chat_template")? {
            Some(src) => Some(ChatTemplate::new(src, text_of(bos), text_of(eos))?),
            None => None,
        };
        let specials = Specials::new(&vocab);
        Ok(Tokenizer {
            kind,
            vocab,
            specials,
            model,
            bos,
            eos,
            add_bos,
            chat_template,
        })
    }

    pub fn kind(&self) -> &TokenizerKind {
        &self.kind
    }

    /// Number of tokens (`tokenizer.ggml.tokens` length); ids are `0..vocab_size`.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// llama.cpp `llama_tokenize(text, add_special = false, parse_special)`: never adds BOS/EOS.
    /// With `parse_special`, control-token texts such as `<|im_start|>` become their ids.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        // SPM adds its space prefix to the first fragment and after every special token.
        let mut prev_special = true;
        for frag in self.specials.partition(text, &self.vocab, parse_special) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(t) => {
                    match &self.model {
                        Model::Bpe {
                            splitter, merges, ..
                        } => {
                            for word in splitter.split(t) {
                                merges.encode_word(&self.vocab, &word, &mut out);
                            }
                        }
                        Model::Spm {
                            bytes,
                            add_space_prefix,
                        } => {
                            let prefix = if *add_space_prefix && prev_special {
                                "▁"
                            } else {
                                ""
                            };
                            let escaped = format!("{prefix}{}", t.replace(' ', "▁"));
                            spm::encode(&self.vocab, bytes, &escaped, &mut out);
                        }
                    }
                    prev_special = false;
                }
            }
        }
        out
    }

    /// The token's text as stored in `tokenizer.ggml.tokens` (byte-level or `▁` form).
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.vocab.tokens.get(id as usize).map(String::as_str)
    }

    /// Text for generation output: byte-level / `▁` / `<0xXX>` encodings undone, CONTROL and
    /// UNKNOWN tokens skipped, out-of-range ids ignored, invalid UTF-8 replaced by U+FFFD
    /// (llama.cpp `token_to_piece` with `special = false`).
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned()
    }

    /// The raw bytes behind [`Tokenizer::decode`]. One token can hold part of a UTF-8
    /// character, so streaming generation should concatenate these bytes, not strings.
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        let mut bytes: Vec<u8> = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let Some(text) = self.piece(id) else { continue };
            let a = self.vocab.attr(id);
            if a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            if a & attr::USER_DEFINED != 0 {
                bytes.extend_from_slice(text.as_bytes());
            } else if a & attr::BYTE != 0 {
                if let Some(b) = parse_byte_token(text) {
                    bytes.push(b);
                }
            } else if a & attr::NORMAL != 0 {
                match &self.model {
                    Model::Bpe { char_to_byte, .. } => {
                        for c in text.chars() {
                            match char_to_byte.get(&c) {
                                Some(&b) => bytes.push(b),
                                None => {
                                    let mut buf = [0u8; 4];
                                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                                }
                            }
                        }
                    }
                    // The space prefix of add_space_prefix vocabularies is kept, so that
                    // decoding token by token concatenates to decoding all at once.
                    Model::Spm { .. } => bytes.extend_from_slice(text.replace('▁', " ").as_bytes()),
                }
            }
        }
        bytes
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// `tokenizer.ggml.add_bos_token`; when absent llama.cpp's default: true for SPM and
    /// Llama 3 BPE, false for other BPE.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// `data.chat_template` / `data.template_kwargs`: replace the model's template (a built-in
    /// name or a Jinja file; `None` keeps the model's) and pass `kwargs` to every render.
    /// `Err` is the message.
    pub fn set_chat_template(
        &mut self,
        spec: Option<&str>,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        let text_of =
            |id: Option<u32>| id.map_or(String::new(), |i| self.vocab.tokens[i as usize].clone());
        let (bos, eos) = (text_of(self.bos), text_of(self.eos));
        let source = match spec {
            Some(s) => chat::template_source(s)?,
            None => match &self.chat_template {
                Some(t) => t.source().to_string(),
                None if kwargs.is_empty() => return Ok(()),
                None => return Err("template_kwargs are given but the model has no chat template; name one with data.chat_template (chatml, llama3, gemma, or a Jinja file)".into()),
            },
        };
        let t =
            ChatTemplate::with_kwargs(&source, &bos, &eos, kwargs).map_err(|e| e.to_string())?;
        self.chat_template = Some(t);
        Ok(())
    }

    /// End of generation: EOS, EOT, EOM and the end-of-turn texts llama.cpp recognises
    /// (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.contains(&id)
    }
}

/// `<0xAB>` -> 0xAB.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}
