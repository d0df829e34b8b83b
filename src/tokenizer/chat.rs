//! Chat templates: render `tokenizer.chat_template` (Jinja written for Python) the way Hugging
//! Face `apply_chat_template` does.
//!
//! Owns: the minijinja environment set up like transformers' (`trim_blocks`, `lstrip_blocks`,
//! no trailing newline kept, `raise_exception`, Python string methods through minijinja-contrib's
//! pycompat) and the variables passed in (`messages`, `add_generation_prompt`, `bos_token`,
//! `eos_token`). It does not tokenize the result: rendered text goes through
//! `Tokenizer::encode(.., parse_special = true)`.
//!
//! Reference: transformers `utils/chat_template_utils.py` (`_compile_jinja_template`,
//! `render_jinja_template`); text-generation-inference takes the same minijinja route.

use minijinja::{context, Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use super::TokenizerError;

/// One chat turn, as in the TRL / OpenAI message format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

const NAME: &str = "chat_template";

/// A compiled chat template with the token texts it may refer to, and the extra variables
/// (`data.template_kwargs`, e.g. `enable_thinking`) passed to every render, as
/// `apply_chat_template(**kwargs)` does.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    kwargs: Vec<(String, Value)>,
}

/// Templates for models that come without one (or to replace theirs), by `data.chat_template`
/// name. Written for dpo-lora after each format's published turn layout.
pub const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    (
        "chatml",
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    ),
    (
        "llama3",
        "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    ),
    (
        "gemma",
        "{{ bos_token }}{% set ns = namespace(system='') %}{% for message in messages %}{% if message['role'] == 'system' %}{% set ns.system = message['content'] | trim + '\n\n' %}{% else %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}{{ '<start_of_turn>' + role + '\n' + ns.system + message['content'] | trim + '<end_of_turn>\n' }}{% set ns.system = '' %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}",
    ),
];

/// The text of `data.chat_template`: a built-in's name, or a Jinja file.
pub fn template_source(spec: &str) -> Result<String, String> {
    if let Some((_, src)) = BUILTIN_TEMPLATES.iter().find(|(n, _)| *n == spec) {
        return Ok(src.to_string());
    }
    std::fs::read_to_string(spec).map_err(|e| {
        let names: Vec<&str> = BUILTIN_TEMPLATES.iter().map(|(n, _)| *n).collect();
        format!(
            "{spec}: not a built-in template ({}) and not a readable Jinja file ({e})",
            names.join(", ")
        )
    })
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compile `source`; `bos_token` / `eos_token` are the token texts ("" when absent).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TokenizerError> {
        let mut env = Environment::new();
        let mut syntax = minijinja::syntax::SyntaxConfig::builder();
        // transformers: jinja2 ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        syntax
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false);
        env.set_syntax(syntax.build().map_err(template_err)?);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(NAME, source.to_string())
            .map_err(template_err)?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            kwargs: Vec::new(),
        })
    }

    /// The same template with `kwargs` passed to every render; a name the template already
    /// gets (`messages`, `add_generation_prompt`, `bos_token`, `eos_token`) is refused.
    pub fn with_kwargs(
        source: &str,
        bos_token: &str,
        eos_token: &str,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, TokenizerError> {
        let mut t = Self::new(source, bos_token, eos_token)?;
        for (k, v) in kwargs {
            if [
                "messages",
                "add_generation_prompt",
                "bos_token",
                "eos_token",
            ]
            .contains(&k.as_str())
            {
                return Err(TokenizerError::Template {
                    reason: format!("template_kwargs may not set `{k}`: dpo-lora passes it"),
                });
            }
            t.kwargs.push((k.clone(), json_value(v)));
        }
        Ok(t)
    }

    /// The template text as stored in the GGUF.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Render `messages`; with `add_generation_prompt` the text ends with the opening of an
    /// assistant turn (e.g. `<|im_start|>assistant\n`).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let tmpl = self.env.get_template(NAME).map_err(template_err)?;
        let extra = Value::from(
            self.kwargs
                .iter()
                .cloned()
                .collect::<std::collections::BTreeMap<String, Value>>(),
        );
        tmpl.render(context! {
            messages => messages_value(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
            ..extra
        })
        .map_err(|e| TokenizerError::Template {
            reason: error_chain(&e),
        })
    }
}

/// A JSON value (from a recipe's `template_kwargs`) as a jinja value.
fn json_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(f)) => Value::from(f),
            _ => Value::from(n.to_string()),
        },
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => a.iter().map(json_value).collect::<Vec<_>>().into(),
        serde_json::Value::Object(o) => Value::from(
            o.iter()
                .map(|(k, v)| (k.clone(), json_value(v)))
                .collect::<std::collections::BTreeMap<String, Value>>(),
        ),
    }
}

/// Messages as jinja dicts with `role` and `content` (minijinja's serde feature is off).
fn messages_value(messages: &[Message]) -> Value {
    messages
        .iter()
        .map(|m| context! { role => m.role.as_str(), content => m.content.as_str() })
        .collect::<Vec<_>>()
        .into()
}

fn template_err(e: Error) -> TokenizerError {
    TokenizerError::Template {
        reason: error_chain(&e),
    }
}

/// minijinja errors carry the message of `raise_exception` in `detail`; keep it visible.
fn error_chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_with_generation_prompt() {
        let t = ChatTemplate::new(
            "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
            "",
            "<|im_end|>",
        )
        .unwrap();
        let m = [Message::new("user", "hi")];
        assert_eq!(
            t.render(&m, true).unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&m, false).unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n"
        );
    }

    #[test]
    fn raise_exception_and_python_methods() {
        let t = ChatTemplate::new(
            "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first turn must be user') }}{% endif %}\n  {%- for m in messages %}{{ m['content'].strip().upper() }}{% endfor %}\n",
            "<s>",
            "</s>",
        )
        .unwrap();
        assert_eq!(
            t.render(&[Message::new("user", "  hi ")], false).unwrap(),
            "HI"
        );
        let err = t.render(&[Message::new("system", "x")], false).unwrap_err();
        assert!(err.to_string().contains("first turn must be user"), "{err}");
    }

    #[test]
    fn trim_and_lstrip_blocks_like_transformers() {
        // jinja2 with trim_blocks + lstrip_blocks renders this as "a\nb\n" (no indentation,
        // no blank lines from the tags), and drops the template's final newline.
        let src =
            "{% for x in ['a', 'b'] %}\n    {% if x %}\n{{ x }}\n    {% endif %}\n{% endfor %}\n";
        let t = ChatTemplate::new(src, "", "").unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "a\nb\n");
    }
}
