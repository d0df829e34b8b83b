//! Record layouts: how the fields of one data-set row map onto (prompt, chosen, rejected).
//!
//! Owns: the layouts people download ([`Layout`]; the recipe's `data.format` and `data.columns`
//! values are defined in `recipe::data`), telling them apart from the first record,
//! and turning every row into a [`PreferenceRecord`] with errors that name the row and the field.
//! Does not: read files (see `files`) or tokenize (see `encode`).
//!
//! | `data.format`       | a record                                                              |
//! |---------------------|-----------------------------------------------------------------------|
//! | `trl`               | `prompt`, `chosen`, `rejected`: strings or message lists; without a    |
//! |                     | prompt (or a string prompt beside conversations) the prompt is implicit |
//! | `openai-preference` | `input.messages`, `preferred_output`, `non_preferred_output`           |
//! | `sharegpt-ranking`  | `conversations` of `{from, value}`, `chosen` / `rejected` one each      |
//! | `columns`           | `data.columns` names the prompt, chosen, rejected (and system) fields  |
//!
//! An implicit prompt is TRL's `extract_prompt`: the longest common prefix of chosen and
//! rejected, in messages for conversations and in characters for text (a space just before the
//! first difference goes to the completions). Message content may be a string or a list of parts,
//! whose text parts are joined in order.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Field, Origin, PreferenceRecord};
pub use crate::recipe::data::{Columns, Format};
use crate::tokenizer::Message;

/// The layout every record of a source is read with.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    Trl,
    OpenaiPreference,
    SharegptRanking,
    Columns(Columns),
}

impl Layout {
    pub fn format(&self) -> Format {
        match self {
            Layout::Trl => Format::Trl,
            Layout::OpenaiPreference => Format::OpenaiPreference,
            Layout::SharegptRanking => Format::SharegptRanking,
            Layout::Columns(_) => Format::Columns,
        }
    }

    /// The layout `format` names, or the one the first record `first` has.
    pub fn resolve(
        format: Format,
        columns: Option<&Columns>,
        first: &Value,
    ) -> Result<Layout, String> {
        let columns_needed = || {
            "data.format is columns but data.columns is not set; give data.columns: {prompt: ..., chosen: ..., rejected: ...}".to_string()
        };
        match (format, columns) {
            (Format::Columns, None) => return Err(columns_needed()),
            (Format::Auto | Format::Columns, Some(c)) => return Ok(Layout::Columns(c.clone())),
            (_, Some(_)) => {
                return Err(format!(
                    "data.columns is set with data.format {}; data.columns goes with data.format columns (or auto)",
                    format.name()
                ))
            }
            (Format::Trl, None) => return Ok(Layout::Trl),
            (Format::OpenaiPreference, None) => return Ok(Layout::OpenaiPreference),
            (Format::SharegptRanking, None) => return Ok(Layout::SharegptRanking),
            (Format::Auto, None) => {}
        }
        let obj = first.as_object().ok_or_else(|| {
            format!(
                "expected a JSON object per record, found {}",
                json_type(first)
            )
        })?;
        let has = |k: &str| obj.contains_key(k);
        if has("preferred_output") && has("non_preferred_output") {
            return Ok(Layout::OpenaiPreference);
        }
        if has("conversations") && has("chosen") && has("rejected") {
            return Ok(Layout::SharegptRanking);
        }
        if has("chosen") && has("rejected") {
            return Ok(Layout::Trl);
        }
        let found: Vec<&str> = obj.keys().map(String::as_str).collect();
        Err(format!(
            "cannot tell the layout of the records: found the fields [{}]; expected prompt/chosen/rejected (TRL), input/preferred_output/non_preferred_output (OpenAI), or conversations/chosen/rejected (ShareGPT); set data.format ({}) or name the fields with data.columns",
            found.join(", "),
            Format::NAMES
        ))
    }

    /// What the log says: `trl`, `trl (implicit prompt)`, `columns (prompt: question, ...)`.
    pub fn describe(&self, first: &PreferenceRecord, implicit: bool) -> String {
        let kind = match first.chosen {
            Field::Text(_) => "text",
            Field::Messages(_) => "conversations",
        };
        let mut s = format!("{} ({kind}", self.format().name());
        if implicit {
            s.push_str(", implicit prompt");
        }
        if let Layout::Columns(c) = self {
            let mut parts = BTreeMap::new();
            if let Some(p) = &c.prompt {
                parts.insert("prompt", p.as_str());
            }
            parts.insert("chosen", c.chosen.as_str());
            parts.insert("rejected", c.rejected.as_str());
            if let Some(sys) = &c.system {
                parts.insert("system", sys.as_str());
            }
            let list: Vec<String> = parts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            s.push_str(&format!("; {}", list.join(", ")));
        }
        s.push(')');
        s
    }

    /// One row as a record; `Err` is the message (the caller adds where the row is). The flag
    /// says whether the prompt was implicit.
    pub fn record(
        &self,
        row: &Value,
        at: Origin,
        index: usize,
    ) -> Result<(PreferenceRecord, bool), String> {
        let obj = row.as_object().ok_or_else(|| {
            format!(
                "expected a JSON object per record, found {}",
                json_type(row)
            )
        })?;
        let (prompt, chosen, rejected) = match self {
            Layout::Trl => (
                obj.get("prompt").map(|v| field(v, "prompt")).transpose()?,
                field(get(obj, "chosen")?, "chosen")?,
                field(get(obj, "rejected")?, "rejected")?,
            ),
            Layout::OpenaiPreference => {
                let input = get(obj, "input")?
                    .as_object()
                    .ok_or("field \"input\" must be an object with \"messages\"")?;
                (
                    Some(messages(get(input, "messages")?, "input.messages")?),
                    messages(get(obj, "preferred_output")?, "preferred_output")?,
                    messages(get(obj, "non_preferred_output")?, "non_preferred_output")?,
                )
            }
            Layout::SharegptRanking => {
                let mut prompt = Vec::new();
                if let Some(sys) = obj.get("system").and_then(Value::as_str) {
                    if !sys.is_empty() {
                        prompt.push(Message {
                            role: "system".into(),
                            content: sys.into(),
                        });
                    }
                }
                let turns = get(obj, "conversations")?
                    .as_array()
                    .ok_or("field \"conversations\" must be a list of {\"from\", \"value\"}")?;
                for (i, t) in turns.iter().enumerate() {
                    prompt.push(sharegpt_turn(t, &format!("conversations[{i}]"))?);
                }
                let one = |name: &str| -> Result<Field, String> {
                    let v = get(obj, name)?;
                    let turn = match v {
                        Value::Array(a) if a.len() == 1 => &a[0],
                        v => v,
                    };
                    Ok(Field::Messages(vec![sharegpt_turn(turn, name)?]))
                };
                (
                    Some(Field::Messages(prompt)),
                    one("chosen")?,
                    one("rejected")?,
                )
            }
            Layout::Columns(c) => {
                let at_path = |path: &str| -> Result<&Value, String> {
                    let mut v = row;
                    for key in path.split('.') {
                        v = v
                            .get(key)
                            .ok_or_else(|| format!("field \"{path}\" (data.columns) is missing"))?;
                    }
                    Ok(v)
                };
                let prompt = c
                    .prompt
                    .as_deref()
                    .map(|p| field(at_path(p)?, p))
                    .transpose()?;
                let (mut chosen, mut rejected) = (
                    field(at_path(&c.chosen)?, &c.chosen)?,
                    field(at_path(&c.rejected)?, &c.rejected)?,
                );
                let mut prompt = prompt;
                if let Some(sys_path) = &c.system {
                    let sys = match at_path(sys_path)? {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => {
                            return Err(format!(
                            "field \"{sys_path}\" (the system message) must be a string, found {}",
                            json_type(other)
                        ))
                        }
                    };
                    let mut msgs = Vec::new();
                    if !sys.is_empty() {
                        msgs.push(Message {
                            role: "system".into(),
                            content: sys,
                        });
                    }
                    match prompt {
                        Some(Field::Text(p)) => msgs.push(Message {
                            role: "user".into(),
                            content: p,
                        }),
                        Some(Field::Messages(m)) => msgs.extend(m),
                        None => {}
                    }
                    prompt = Some(Field::Messages(msgs));
                    chosen = as_assistant(chosen);
                    rejected = as_assistant(rejected);
                }
                (prompt, chosen, rejected)
            }
        };
        let (prompt, chosen, rejected, implicit) = split_prompt(prompt, chosen, rejected)?;
        for (name, f) in [("chosen", &chosen), ("rejected", &rejected)] {
            let empty = match f {
                Field::Text(s) => s.is_empty(),
                Field::Messages(m) => m.is_empty() || m.iter().all(|m| m.content.is_empty()),
            };
            if empty {
                return Err(format!(
                    "field \"{name}\" is empty; a completion needs at least one character"
                ));
            }
        }
        Ok((
            PreferenceRecord {
                index,
                at,
                prompt,
                chosen,
                rejected,
            },
            implicit,
        ))
    }
}

/// An explicit prompt of the completions' kind is kept; otherwise (none, or a string beside
/// conversations, as in HuggingFaceH4/ultrafeedback_binarized) it is extracted (TRL's
/// `maybe_extract_prompt`).
fn split_prompt(
    prompt: Option<Field>,
    chosen: Field,
    rejected: Field,
) -> Result<(Field, Field, Field, bool), String> {
    let same_kind = |a: &Field, b: &Field| {
        matches!(
            (a, b),
            (Field::Text(_), Field::Text(_)) | (Field::Messages(_), Field::Messages(_))
        )
    };
    if !same_kind(&chosen, &rejected) {
        return Err("\"chosen\" and \"rejected\" mix plain text and message lists; use strings for both or message lists for both".into());
    }
    match prompt {
        Some(p) if same_kind(&p, &chosen) => Ok((p, chosen, rejected, false)),
        Some(Field::Messages(_)) => Err("fields mix plain text and message lists: the prompt is a message list and the completions are strings; use strings for all three or message lists for all three".into()),
        _ => {
            let (p, c, r) = extract_prompt(chosen, rejected);
            let empty = match &p {
                Field::Text(s) => s.is_empty(),
                Field::Messages(m) => m.is_empty(),
            };
            if empty {
                return Err("no prompt: there is no \"prompt\" field and \"chosen\" and \"rejected\" share no beginning to take it from".into());
            }
            Ok((p, c, r, true))
        }
    }
}

/// TRL's `extract_prompt`: the longest common prefix of `chosen` and `rejected` (messages, or
/// characters for text) is the prompt. As there, when one is a prefix of the other the last
/// shared element stays in the completions, and in text a space just before the first
/// difference moves to the completions.
pub fn extract_prompt(chosen: Field, rejected: Field) -> (Field, Field, Field) {
    fn split<T: PartialEq + Clone>(c: &[T], r: &[T], is_space: impl Fn(&T) -> bool) -> usize {
        let n = c.len().min(r.len());
        let mut idx = n.saturating_sub(1);
        for i in 0..n {
            if c[i] != r[i] {
                idx = i;
                if i > 0 && is_space(&c[i - 1]) {
                    idx -= 1;
                }
                break;
            }
        }
        idx
    }
    match (chosen, rejected) {
        (Field::Text(c), Field::Text(r)) => {
            let (cc, rc): (Vec<char>, Vec<char>) = (c.chars().collect(), r.chars().collect());
            let idx = split(&cc, &rc, |ch| *ch == ' ');
            let text = |v: &[char]| v.iter().collect::<String>();
            (
                Field::Text(text(&cc[..idx])),
                Field::Text(text(&cc[idx..])),
                Field::Text(text(&rc[idx..])),
            )
        }
        (Field::Messages(c), Field::Messages(r)) => {
            let idx = split(&c, &r, |_| false);
            (
                Field::Messages(c[..idx].to_vec()),
                Field::Messages(c[idx..].to_vec()),
                Field::Messages(r[idx..].to_vec()),
            )
        }
        (c, r) => (Field::Text(String::new()), c, r),
    }
}

fn get<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a Value, String> {
    obj.get(name)
        .ok_or_else(|| format!("field \"{name}\" is missing"))
}

/// A string, or a list of messages.
fn field(v: &Value, name: &str) -> Result<Field, String> {
    match v {
        Value::String(s) => Ok(Field::Text(s.clone())),
        Value::Array(_) => messages(v, name),
        other => Err(format!(
            "field \"{name}\" must be a string or a list of messages, found {}",
            json_type(other)
        )),
    }
}

fn messages(v: &Value, name: &str) -> Result<Field, String> {
    let items = v.as_array().ok_or_else(|| {
        format!(
            "field \"{name}\" must be a list of messages, found {}",
            json_type(v)
        )
    })?;
    let mut msgs = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let bad = || {
            format!("field \"{name}\" message {i} must be {{\"role\": string, \"content\": string or a list of text parts}}")
        };
        let role = it.get("role").and_then(Value::as_str).ok_or_else(bad)?;
        let content = content(it.get("content").ok_or_else(bad)?)
            .map_err(|m| format!("field \"{name}\" message {i}: {m}"))?;
        msgs.push(Message {
            role: role.to_string(),
            content,
        });
    }
    Ok(Field::Messages(msgs))
}

/// A message's content: a string, or parts `[{"type": "text", "text": ...}]` joined in order.
fn content(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                let ty = p.get("type").and_then(Value::as_str).unwrap_or("(none)");
                match (ty, p.get("text").and_then(Value::as_str)) {
                    ("text", Some(t)) => out.push_str(t),
                    ("text", None) => {
                        return Err(format!("content part {j} is of type text but has no \"text\" string"))
                    }
                    (other, _) => {
                        return Err(format!(
                            "content part {j} is of type \"{other}\"; only text parts can be trained on (remove the others)"
                        ))
                    }
                }
            }
            Ok(out)
        }
        other => Err(format!(
            "\"content\" must be a string or a list of text parts, found {}",
            json_type(other)
        )),
    }
}

/// One ShareGPT turn `{from, value}`, its role mapped to the chat-template names.
fn sharegpt_turn(v: &Value, name: &str) -> Result<Message, String> {
    let from = v.get("from").and_then(Value::as_str);
    let value = v.get("value").and_then(Value::as_str);
    let (Some(from), Some(value)) = (from, value) else {
        return Err(format!(
            "field \"{name}\" must be {{\"from\": string, \"value\": string}}"
        ));
    };
    let role = match from {
        "human" | "user" => "user",
        "gpt" | "assistant" | "model" | "chatgpt" | "bing" | "bard" => "assistant",
        "system" => "system",
        other => {
            return Err(format!(
                "field \"{name}\": role \"{other}\" is not one of human/user, gpt/assistant, system"
            ))
        }
    };
    Ok(Message {
        role: role.into(),
        content: value.into(),
    })
}

/// A completion given as a string becomes one assistant message (when a system column makes the
/// record conversational).
fn as_assistant(f: Field) -> Field {
    match f {
        Field::Text(s) => Field::Messages(vec![Message {
            role: "assistant".into(),
            content: s,
        }]),
        m => m,
    }
}

pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
