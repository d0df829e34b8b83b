//! The chat template renderer. First byte even: a fuzzed template (up to the first NUL) renders
//! fixed messages; odd: every built-in template renders fuzzed messages (JSON, as a record's
//! message list), with and without the generation prompt.
#![no_main]
use libfuzzer_sys::fuzz_target;

use dpo_lora::tokenizer::{ChatTemplate, Message, BUILTIN_TEMPLATES};

fn messages_of(v: &serde_json::Value) -> Option<Vec<Message>> {
    let list = v.as_array()?;
    let mut out = Vec::new();
    for m in list {
        let role = m.get("role")?.as_str()?;
        let content = m.get("content")?.as_str()?;
        out.push(Message::new(role, content));
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(body);
    if pick % 2 == 0 {
        let source = text.split('\0').next().unwrap_or("");
        let fixed = [
            Message::new("system", "Be brief."),
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello."),
        ];
        if let Ok(t) = ChatTemplate::new(source, "<s>", "</s>") {
            let _ = t.render(&fixed, true);
            let _ = t.render(&fixed[..1], false);
        }
    } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        if let Some(msgs) = messages_of(&v) {
            for (_, source) in BUILTIN_TEMPLATES {
                let t = ChatTemplate::new(source, "<s>", "</s>").unwrap();
                let _ = t.render(&msgs, false);
                let _ = t.render(&msgs, true);
            }
        }
    }
});
