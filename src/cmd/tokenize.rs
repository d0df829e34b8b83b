//! `dpo-lora tokenize`: ids and pieces, one JSON line per input.

use std::io::Write;

use anyhow::Result;
use serde_json::Value;

use crate::cli::TokenizeArgs;

pub fn run(a: TokenizeArgs) -> Result<()> {
    let f = super::open(&a.model.model)?;
    let tok = super::tokenizer(&f)?;
    let texts: Vec<String> = match (&a.file, &a.text) {
        (Some(path), _) => {
            let s = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
            let mut v = Vec::new();
            for (i, line) in s.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let err = |m: &str| anyhow::anyhow!("{}:{}: {m}", path.display(), i + 1);
                let j: Value =
                    serde_json::from_str(line).map_err(|e| err(&format!("invalid JSON: {e}")))?;
                match j.get("text") {
                    Some(Value::String(t)) => v.push(t.clone()),
                    Some(_) => return Err(err("field \"text\" must be a string")),
                    None => return Err(err("field \"text\" is missing")),
                }
            }
            v
        }
        (None, Some(t)) => vec![t.clone()],
        (None, None) => anyhow::bail!("give TEXT or --file FILE.jsonl"),
    };
    let mut out = std::io::stdout().lock();
    for t in texts {
        let ids = tok.encode(&t, !a.no_parse_special);
        let pieces: Vec<&str> = ids.iter().map(|&i| tok.piece(i).unwrap_or("")).collect();
        writeln!(
            out,
            "{}",
            serde_json::json!({ "ids": ids, "pieces": pieces })
        )?;
    }
    Ok(())
}
