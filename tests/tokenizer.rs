//! Token ids against llama.cpp, from the fixtures in `tests/fixtures` (see its README for the
//! provenance: llama.cpp commit 3aa0ce9b `llama_tokenize`, transformers `apply_chat_template`).
//!
//! Real models are read from `$DPO_LORA_MODELS` or `~/.cache/dpo-lora/models`; a missing
//! model fails the test (run scripts/fetch-models.sh), it never skips.

mod common;

use std::path::{Path, PathBuf};

use common::{ids, tiny_gguf};
use dpo_lora::data::{encode_pair, Field, PreferenceRecord};
use dpo_lora::gguf::GgufFile;
use dpo_lora::tokenizer::{Message, Tokenizer, TokenizerKind};
use serde_json::Value;

fn load(path: &Path) -> Tokenizer {
    let f = GgufFile::open(path).unwrap_or_else(|e| panic!("{e}"));
    Tokenizer::from_gguf(&f).unwrap_or_else(|e| panic!("{e}"))
}

/// A fixture file under `tests/fixtures`, parsed.
fn read_json(rel: &str) -> Value {
    common::read_json(common::fixture(rel))
}

/// Compare every string of strings.jsonl in both parse modes; report all mismatches at once.
fn check_strings(tok: &Tokenizer, rel: &str) {
    let doc = read_json(rel);
    let strings = doc["strings"].as_array().expect("strings");
    assert_eq!(strings.len(), 40, "{rel}: expected the 40 strings");
    let mut bad = Vec::new();
    for s in strings {
        let text = s["text"].as_str().expect("text");
        for (field, parse_special) in [("parse_special_true", true), ("parse_special_false", false)]
        {
            let want = ids(&s[field]);
            let got = tok.encode(text, parse_special);
            if got != want {
                bad.push(format!(
                    "  id {} {field} {text:?}\n    expected {want:?}\n    got      {got:?}\n    pieces   {:?}",
                    s["id"],
                    got.iter().map(|&i| tok.piece(i).unwrap_or("?")).collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{rel}: {} of 80 encodings differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

fn messages(v: &Value) -> Vec<Message> {
    serde_json::from_value(v.clone()).expect("message list")
}

fn field_of(v: &Value) -> Field {
    match v {
        Value::String(s) => Field::Text(s.clone()),
        other => Field::Messages(messages(other)),
    }
}

/// Rebuild every record of `tokens.json` with the README contract and compare exactly.
fn check_records(tok: &Tokenizer, rel: &str) {
    let doc = read_json(rel);
    let records = common::read_jsonl(&common::fixture("records.jsonl"));
    let expected = doc["records"].as_array().expect("records");
    assert!(!expected.is_empty(), "{rel}: no records");
    let mut bad = Vec::new();
    for exp in expected {
        let idx = exp["index"].as_u64().expect("index") as usize;
        let rec = &records[idx];
        let prompt = field_of(&rec["prompt"]);
        if let (Field::Messages(p), Some(tmpl)) = (&prompt, tok.chat_template()) {
            let text = tmpl.render(p, true).expect("render prompt");
            if text != exp["prompt_text"].as_str().expect("prompt_text") {
                bad.push(format!("  record {idx}: prompt_text {text:?}"));
            }
            for side in ["chosen", "rejected"] {
                let all: Vec<Message> = p.iter().cloned().chain(messages(&rec[side])).collect();
                let full = tmpl.render(&all, false).expect("render full");
                let want = exp[format!("{side}_full_text")]
                    .as_str()
                    .expect("full text");
                if full != want {
                    bad.push(format!(
                        "  record {idx}: {side}_full_text\n    expected {want:?}\n    got      {full:?}"
                    ));
                }
            }
        }
        let record = PreferenceRecord {
            index: idx,
            at: dpo_lora::data::Origin {
                file: std::sync::Arc::from(std::path::Path::new(rel)),
                pos: dpo_lora::data::Pos::Line(idx + 1),
            },
            prompt: prompt.clone(),
            chosen: field_of(&rec["chosen"]),
            rejected: field_of(&rec["rejected"]),
        };
        let pair = encode_pair(tok, &record).unwrap_or_else(|e| panic!("{rel} record {idx}: {e}"));
        for side in ["chosen", "rejected"] {
            let enc = if side == "chosen" {
                &pair.chosen
            } else {
                &pair.rejected
            };
            let (p_ids, c_ids) = (
                enc.ids[..enc.prompt_len].to_vec(),
                enc.completion().to_vec(),
            );
            let (want_p, want_c) = (ids(&exp["prompt_ids"]), ids(&exp[format!("{side}_ids")]));
            if p_ids != want_p {
                bad.push(format!(
                    "  record {idx}: prompt_ids\n    expected {want_p:?}\n    got      {p_ids:?}"
                ));
            }
            if c_ids != want_c {
                bad.push(format!(
                    "  record {idx}: {side}_ids\n    expected {want_c:?}\n    got      {c_ids:?}"
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{rel}: {} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

fn smollm2() -> Tokenizer {
    load(&common::real_model("smollm2"))
}

fn gemma3() -> Tokenizer {
    load(&common::real_model("gemma3"))
}

fn tiny(arch: &str) -> Tokenizer {
    load(&tiny_gguf(arch))
}

#[test]
fn smollm2_strings_match_llama_cpp() {
    check_strings(&smollm2(), "smollm2/strings_tokens.json");
}

#[test]
fn gemma3_strings_match_llama_cpp() {
    check_strings(&gemma3(), "gemma3/strings_tokens.json");
}

#[test]
fn tiny_qwen2_strings_match_llama_cpp() {
    check_strings(&tiny("qwen2"), "tiny/qwen2/strings_tokens.json");
}

#[test]
fn smollm2_records_match_contract() {
    check_records(&smollm2(), "smollm2/tokens.json");
}

#[test]
fn gemma3_records_match_contract() {
    check_records(&gemma3(), "gemma3/tokens.json");
}

#[test]
fn tiny_records_match_contract() {
    for arch in ["qwen2", "qwen3", "llama"] {
        check_records(&tiny(arch), &format!("tiny/{arch}/tokens.json"));
    }
}

#[test]
fn metadata_of_real_models() {
    let s = smollm2();
    assert!(matches!(s.kind(), TokenizerKind::Bpe(_)));
    assert_eq!(s.vocab_size(), 49152);
    assert_eq!(
        (s.bos_id(), s.eos_id(), s.add_bos()),
        (Some(1), Some(2), false)
    );
    assert!(
        s.is_eog(2) && !s.is_eog(1),
        "<|im_end|> ends generation, <|im_start|> does not"
    );
    assert!(s.chat_template().is_some());

    let g = gemma3();
    assert_eq!(g.kind(), &TokenizerKind::Spm);
    assert_eq!(g.vocab_size(), 262144);
    assert_eq!(
        (g.bos_id(), g.eos_id(), g.add_bos()),
        (Some(2), Some(1), true)
    );
    let eot = g.encode("<end_of_turn>", true);
    assert_eq!(eot.len(), 1);
    assert!(g.is_eog(1) && g.is_eog(eot[0]));
    assert!(g.chat_template().is_none());
}

#[test]
fn edge_cases_do_not_panic() {
    for tok in [smollm2(), gemma3(), tiny("qwen2")] {
        assert!(tok.encode("", true).is_empty());
        assert!(tok.encode("", false).is_empty());
        assert_eq!(tok.decode(&[]), "");
        assert_eq!(tok.decode(&[u32::MAX, tok.vocab_size() as u32]), "");
        assert_eq!(tok.piece(u32::MAX), None);
        // Odd input: NUL, lone combining mark, long runs, a private-use char.
        for text in [
            "\0",
            "\u{301}",
            &" ".repeat(1000),
            &"9".repeat(500),
            "\u{E000}x",
        ] {
            let a = tok.encode(text, true);
            assert!(a.iter().all(|&i| (i as usize) < tok.vocab_size()));
            assert_eq!(tok.decode(&a), text, "round trip of {text:?}");
        }
    }
}

#[test]
fn decode_round_trips_and_skips_control_tokens() {
    let text = "Hello, world! 123 tabs\tand\nnewlines  end ";
    for tok in [smollm2(), gemma3(), tiny("qwen2")] {
        assert_eq!(tok.decode(&tok.encode(text, false)), text);
        // Token-by-token decoding concatenates to the same text (streaming generation).
        let ids = tok.encode("Ünïcödé 東京 🎉", false);
        let whole = tok.decode(&ids);
        assert_eq!(whole, "Ünïcödé 東京 🎉");
        // Single tokens may hold part of a UTF-8 character: stream bytes, not strings.
        let bytes: Vec<u8> = ids.iter().flat_map(|&i| tok.decode_bytes(&[i])).collect();
        assert_eq!(bytes, whole.as_bytes());
    }
    let s = smollm2();
    let ids = s.encode("<|im_start|>user\nhi<|im_end|>", true);
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(s.decode(&ids), "user\nhi");
}

#[test]
fn unknown_pre_tokenizer_is_an_error_naming_it() {
    use dpo_lora::tokenizer::PreTokenizer;
    assert_eq!(
        PreTokenizer::from_name("smollm"),
        Some(PreTokenizer::Smollm)
    );
    assert_eq!(
        PreTokenizer::from_name("llama-bpe"),
        Some(PreTokenizer::Llama3)
    );
    assert_eq!(PreTokenizer::from_name("qwen2"), Some(PreTokenizer::Qwen2));
    assert_eq!(PreTokenizer::from_name("gpt2"), Some(PreTokenizer::Gpt2));
    assert_eq!(PreTokenizer::from_name("tekken"), None);
}

/// Rough speed figure, not an assertion: `cargo test --release --test tokenizer -- --ignored
/// --nocapture encode_speed`.
#[test]
#[ignore]
fn encode_speed() {
    let doc = read_json("smollm2/strings_tokens.json");
    let texts: Vec<String> = doc["strings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap().to_string())
        .collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    for (name, tok) in [
        ("smollm2", smollm2()),
        ("gemma3", gemma3()),
        ("tiny-qwen2", tiny("qwen2")),
    ] {
        let t0 = std::time::Instant::now();
        let mut n = 0;
        for _ in 0..100 {
            for t in &texts {
                n += tok.encode(t, true).len();
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        println!(
            "{name}: 100 x 40 strings ({} KB) in {:.3} s = {:.2} MB/s, {n} tokens",
            bytes * 100 / 1000,
            dt,
            (bytes * 100) as f64 / dt / 1e6
        );
    }
}

/// Write a GGUF holding only a tiny byte-level BPE vocabulary (tokens `a b c ab abc Ġ bc`,
/// merges `b c` then `a b`) with the given `tokenizer.ggml.pre`.
fn synthetic_bpe(dir: &Path, pre: &str) -> PathBuf {
    use candle_core::quantized::gguf_file::{write, Value as V};
    let strs = |xs: &[&str]| V::Array(xs.iter().map(|s| V::String(s.to_string())).collect());
    let tokens = strs(&["a", "b", "c", "ab", "abc", "Ġ", "bc"]);
    // `b c` ranks before `ab c`, so plain BPE gives a|bc; `abc` only forms via ignore_merges.
    let merges = strs(&["b c", "a b"]);
    let model = V::String("gpt2".into());
    let path = dir.join(format!("tok-{pre}.gguf"));
    let pre = V::String(pre.into());
    let mut f = std::fs::File::create(&path).expect("create gguf");
    write(
        &mut f,
        &[
            ("tokenizer.ggml.model", &model),
            ("tokenizer.ggml.pre", &pre),
            ("tokenizer.ggml.tokens", &tokens),
            ("tokenizer.ggml.merges", &merges),
            ("tokenizer.ggml.bos_token_id", &V::U32(5)),
        ],
        &[],
    )
    .expect("write gguf");
    path
}

#[test]
fn unknown_pre_in_gguf_names_value_and_supported_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = GgufFile::open(synthetic_bpe(dir.path(), "tekken")).expect("open");
    let err = Tokenizer::from_gguf(&f)
        .err()
        .expect("tekken must be rejected")
        .to_string();
    assert!(
        err.contains("`tekken`") && err.contains("smollm") && err.contains("qwen2"),
        "{err}"
    );
}

#[test]
fn llama3_pre_ignores_merges_for_whole_vocab_words_and_adds_bos() {
    let dir = tempfile::tempdir().expect("tempdir");
    let load_pre = |pre: &str| load(&synthetic_bpe(dir.path(), pre));
    let (gpt2, llama3) = (load_pre("gpt-2"), load_pre("llama-bpe"));
    assert_eq!(
        gpt2.encode("abc", false),
        [0, 6],
        "rank order: b c first, then no `a bc`"
    );
    assert_eq!(
        llama3.encode("abc", false),
        [4],
        "ignore_merges: the word is a token"
    );
    assert!(
        !gpt2.add_bos() && llama3.add_bos(),
        "llama.cpp add_bos defaults"
    );
}
