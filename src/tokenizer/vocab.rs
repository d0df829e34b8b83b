//! The token table of a GGUF vocabulary: texts, scores, attributes, and the special ids.
//!
//! Owns: reading `tokenizer.ggml.{tokens,scores,token_type}` as untrusted input, the
//! text -> id map, and llama.cpp's token attribute fix-ups. It does not tokenize.
//!
//! Reference: llama.cpp `llama_vocab::impl::load`. Token types map to attributes; then tokens
//! whose *text* looks like an end-of-turn / end-of-generation / fill-in-the-middle marker are
//! forced to CONTROL even when the file says otherwise (that is why Gemma's USER_DEFINED `</s>`
//! is not matched as a special token with parse_special = false), and the end-of-generation set
//! is built from the same text list plus the EOS/EOT/EOM ids.

use std::collections::{HashMap, HashSet};

use super::TokenizerError;
use crate::gguf::GgufFile;

/// Token attributes (llama.cpp `llama_token_attr`), a bit set.
pub mod attr {
    pub const UNDEFINED: u32 = 0;
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
}

/// `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`) -> attribute.
fn attr_of_type(t: i64) -> u32 {
    match t {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => attr::UNDEFINED,
    }
}

/// Texts that end a turn or generation in some model family; llama.cpp marks them CONTROL
/// and end-of-generation whatever the file says.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Fill-in-the-middle markers llama.cpp also forces to CONTROL; the pad/repo/file-separator
/// ones also end generation.
const FIM_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_EOG_TEXTS: &[&str] = &[
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
];

/// The token table.
pub struct Vocab {
    pub tokens: Vec<String>,
    ids: HashMap<String, u32>,
    pub scores: Vec<f32>,
    pub attrs: Vec<u32>,
    pub eog: HashSet<u32>,
}

impl Vocab {
    pub fn from_gguf(f: &GgufFile) -> Result<Self, TokenizerError> {
        let invalid = |key: &str, reason: String| TokenizerError::Invalid {
            path: f.path.clone(),
            key: key.to_string(),
            reason,
        };
        let tokens: Vec<String> = f
            .get_str_array("tokenizer.ggml.tokens")?
            .into_iter()
            .map(str::to_string)
            .collect();
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize / 2 {
            return Err(invalid("tokenizer.ggml.tokens", format!("{n} tokens")));
        }
        let scores = if f.has("tokenizer.ggml.scores") {
            let s = f.get_f32_array("tokenizer.ggml.scores")?;
            if s.len() < n {
                return Err(invalid(
                    "tokenizer.ggml.scores",
                    format!("{} scores for {n} tokens", s.len()),
                ));
            }
            s
        } else {
            vec![0.0; n]
        };
        let mut attrs = if f.has("tokenizer.ggml.token_type") {
            let t = f.get_int_array("tokenizer.ggml.token_type")?;
            if t.len() < n {
                return Err(invalid(
                    "tokenizer.ggml.token_type",
                    format!("{} types for {n} tokens", t.len()),
                ));
            }
            t[..n].iter().map(|&t| attr_of_type(t)).collect()
        } else {
            vec![attr::NORMAL; n]
        };
        let mut ids = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            // llama.cpp renames empty tokens to "[EMPTY_i]": they can never be matched.
            if t.is_empty() {
                continue;
            }
            if let Some(prev) = ids.insert(t.clone(), i as u32) {
                return Err(invalid(
                    "tokenizer.ggml.tokens",
                    format!("duplicate token {t:?} at ids {prev} and {i}"),
                ));
            }
        }
        let mut eog = HashSet::new();
        for (i, t) in tokens.iter().enumerate() {
            let is_eog = EOG_TEXTS.contains(&t.as_str()) || FIM_EOG_TEXTS.contains(&t.as_str());
            if is_eog || FIM_TEXTS.contains(&t.as_str()) {
                attrs[i] |= attr::CONTROL;
            }
            if is_eog {
                eog.insert(i as u32);
            }
            // gpt-oss: these are always rendered, llama.cpp makes them USER_DEFINED.
            if matches!(
                t.as_str(),
                "<|channel|>" | "<|message|>" | "<|start|>" | "<|constrain|>"
            ) {
                attrs[i] = attr::USER_DEFINED;
            }
        }
        let mut vocab = Self {
            tokens,
            ids,
            scores,
            attrs,
            eog,
        };
        vocab.apply_eog_workarounds();
        Ok(vocab)
    }

    /// llama.cpp's two exceptions to the text list: harmony/solar-open's `<|end|>` and
    /// gemma4/paddleocr's `</s>` are not end-of-generation when their sibling markers exist.
    fn apply_eog_workarounds(&mut self) {
        let has = |v: &Self, t: &str| v.id(t).is_some_and(|id| v.eog.contains(&id));
        let harmony = has(self, "<|return|>") && has(self, "<|call|>")
            || has(self, "<|calls|>") && has(self, "<|flush|>");
        if harmony {
            if let Some(id) = self.id("<|end|>") {
                self.eog.remove(&id);
                self.attrs[id as usize] = attr::USER_DEFINED;
            }
        }
        if has(self, "<|tool_response>") {
            if let Some(id) = self.id("</s>") {
                self.eog.remove(&id);
                self.attrs[id as usize] = attr::NORMAL;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    pub fn attr(&self, id: u32) -> u32 {
        self.attrs
            .get(id as usize)
            .copied()
            .unwrap_or(attr::UNDEFINED)
    }

    /// A special-token id from metadata, checked against the vocabulary size; llama.cpp
    /// ignores (with a warning) an id that is out of range, and so do we.
    pub fn special_id(&self, f: &GgufFile, key: &str) -> Result<Option<u32>, TokenizerError> {
        Ok(f.opt_usize(key)?
            .filter(|&id| id < self.len())
            .map(|id| id as u32))
    }
}
