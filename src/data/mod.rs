//! Preference data: JSONL records in TRL's two formats, tokenized into (prompt, completion) ids.
//!
//! Owns: reading `{"prompt", "chosen", "rejected"}` records (each field a string, or a list of
//! `{"role", "content"}` messages), validating them with errors that name `file:line` and the
//! field, and the TRL 1.x tokenization contract (`encode`). Does not: batch or truncate for
//! training (the training issue adds that on top of [`EncodedPair`]).

pub mod batch;
pub mod encode;

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::tokenizer::Message;

pub use encode::{encode_pair, EncodedPair, EncodedSide};

/// One field of a record: plain text (TRL "standard") or chat messages ("conversational").
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Text(String),
    Messages(Vec<Message>),
}

/// A preference pair as read from one JSONL line.
#[derive(Debug, Clone)]
pub struct PreferenceRecord {
    /// 0-based record index (non-empty lines counted).
    pub index: usize,
    /// 1-based line number in the file.
    pub line: usize,
    pub prompt: Field,
    pub chosen: Field,
    pub rejected: Field,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot read: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("{path}:{line}: {msg}")]
    Line {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{path}: no records (the file is empty); each line must be a JSON object with \"prompt\", \"chosen\" and \"rejected\"")]
    Empty { path: PathBuf },
}

/// Read every record of a JSONL file. Blank lines are skipped; anything else must be a record.
pub fn read_jsonl(path: &Path) -> Result<Vec<PreferenceRecord>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|err| DataError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let err = |msg: String| DataError::Line {
            path: path.to_path_buf(),
            line,
            msg,
        };
        let v: Value = serde_json::from_str(raw).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| {
            err("expected a JSON object with \"prompt\", \"chosen\" and \"rejected\"".into())
        })?;
        let field = |name: &str| -> Result<Field, DataError> {
            let v = obj
                .get(name)
                .ok_or_else(|| err(format!("field \"{name}\" is missing")))?;
            parse_field(v).map_err(|m| err(format!("field \"{name}\" {m}")))
        };
        let (prompt, chosen, rejected) = (field("prompt")?, field("chosen")?, field("rejected")?);
        let kinds = [&prompt, &chosen, &rejected].map(|f| matches!(f, Field::Messages(_)));
        if kinds.iter().any(|k| *k != kinds[0]) {
            return Err(err("fields mix plain text and message lists; use strings for all three or message lists for all three".into()));
        }
        for (name, f) in [("chosen", &chosen), ("rejected", &rejected)] {
            let empty = match f {
                Field::Text(s) => s.is_empty(),
                Field::Messages(m) => m.is_empty() || m.iter().all(|m| m.content.is_empty()),
            };
            if empty {
                return Err(err(format!(
                    "field \"{name}\" is empty; a completion needs at least one character"
                )));
            }
        }
        out.push(PreferenceRecord {
            index: out.len(),
            line,
            prompt,
            chosen,
            rejected,
        });
    }
    if out.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

fn parse_field(v: &Value) -> Result<Field, String> {
    match v {
        Value::String(s) => Ok(Field::Text(s.clone())),
        Value::Array(items) => {
            let mut msgs = Vec::with_capacity(items.len());
            for (i, it) in items.iter().enumerate() {
                let role = it.get("role").and_then(Value::as_str);
                let content = it.get("content").and_then(Value::as_str);
                match (role, content) {
                    (Some(r), Some(c)) => msgs.push(Message {
                        role: r.to_string(),
                        content: c.to_string(),
                    }),
                    _ => {
                        return Err(format!(
                            "message {i} must be {{\"role\": string, \"content\": string}}"
                        ))
                    }
                }
            }
            Ok(Field::Messages(msgs))
        }
        other => Err(format!(
            "must be a string or a list of messages, found {}",
            json_type(other)
        )),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
