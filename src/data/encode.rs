//! The TRL 1.x tokenization contract for a preference pair (and fixtures/README.md).
//!
//! - standard records: `prompt_ids = [BOS if add_bos] + tok(prompt)`; the completion is
//!   `[BOS if add_bos] + tok(prompt + completion)` after its common prefix with `prompt_ids`, then
//!   EOS. Plain text is tokenized with `parse_special = false`, so text that looks like a special
//!   token stays text.
//! - conversational records: `prompt = template(prompt msgs, add_generation_prompt = true)`;
//!   the completion is `template(prompt + completion msgs)` after that prefix, no extra EOS (the
//!   template closes the turn). Templates emit special-token text, so `parse_special = true`.
//!   BOS is added only if the template did not already start with it: never doubled.

use crate::tokenizer::{Message, Tokenizer, TokenizerError};

use super::{Field, PreferenceRecord};

/// One side of a pair: the full sequence and where its completion starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedSide {
    pub ids: Vec<u32>,
    /// `ids[prompt_len..]` is the completion (what is scored).
    pub prompt_len: usize,
}

impl EncodedSide {
    pub fn completion(&self) -> &[u32] {
        &self.ids[self.prompt_len..]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPair {
    pub prompt_ids: Vec<u32>,
    pub chosen: EncodedSide,
    pub rejected: EncodedSide,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("the model has no chat template, so conversational records (message lists) cannot be rendered; use plain-text records or a model with `tokenizer.chat_template`")]
    NoTemplate,
    #[error(transparent)]
    Template(#[from] TokenizerError),
    #[error("field \"{0}\" tokenizes to nothing after the prompt")]
    EmptyCompletion(&'static str),
    #[error("fields mix plain text and message lists; use strings for all three or message lists for all three")]
    Mixed,
    #[error("the model has no EOS token id (`tokenizer.ggml.eos_token_id`), which plain-text completions need")]
    NoEos,
}

pub fn encode_pair(tok: &Tokenizer, rec: &PreferenceRecord) -> Result<EncodedPair, EncodeError> {
    match (&rec.prompt, &rec.chosen, &rec.rejected) {
        (Field::Text(p), Field::Text(c), Field::Text(r)) => {
            let eos = tok.eos_id().ok_or(EncodeError::NoEos)?;
            let prompt_ids = with_bos(tok, p, false);
            let side = |name: &'static str, completion: &str| -> Result<EncodedSide, EncodeError> {
                let mut ids = with_bos(tok, &format!("{p}{completion}"), false);
                let prompt_len = common_prefix(&prompt_ids, &ids);
                if prompt_len == ids.len() {
                    return Err(EncodeError::EmptyCompletion(name));
                }
                ids.push(eos);
                Ok(EncodedSide { ids, prompt_len })
            };
            Ok(EncodedPair {
                chosen: side("chosen", c)?,
                rejected: side("rejected", r)?,
                prompt_ids,
            })
        }
        (Field::Messages(p), Field::Messages(c), Field::Messages(r)) => {
            let tpl = tok.chat_template().ok_or(EncodeError::NoTemplate)?;
            let prompt_text = tpl.render(p, true)?;
            let prompt_ids = with_bos(tok, &prompt_text, true);
            let side =
                |name: &'static str, completion: &[Message]| -> Result<EncodedSide, EncodeError> {
                    let all: Vec<Message> = p.iter().chain(completion).cloned().collect();
                    let ids = with_bos(tok, &tpl.render(&all, false)?, true);
                    let prompt_len = common_prefix(&prompt_ids, &ids);
                    if prompt_len == ids.len() {
                        return Err(EncodeError::EmptyCompletion(name));
                    }
                    Ok(EncodedSide { ids, prompt_len })
                };
            Ok(EncodedPair {
                chosen: side("chosen", c)?,
                rejected: side("rejected", r)?,
                prompt_ids,
            })
        }
        _ => Err(EncodeError::Mixed),
    }
}

/// `[BOS if add_bos and the text does not already start with it] + tok(text)`.
pub fn with_bos(tok: &Tokenizer, text: &str, parse_special: bool) -> Vec<u32> {
    let mut ids = Vec::new();
    if tok.add_bos() {
        if let Some(bos) = tok.bos_id() {
            let starts_with_bos = tok
                .piece(bos)
                .is_some_and(|t| !t.is_empty() && text.starts_with(t));
            if !(parse_special && starts_with_bos) {
                ids.push(bos);
            }
        }
    }
    ids.extend(tok.encode(text, parse_special));
    ids
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
