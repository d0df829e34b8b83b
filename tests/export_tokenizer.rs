//! The tokenizer files of a merged export, written from the real models' GGUF metadata and
//! checked from Rust against the GGUF and against llama.cpp's ids in `tests/fixtures`.
//!
//! What needs the `tokenizers` library itself (loading tokenizer.json, HF's regexes) is checked
//! by a Python script; here the SentencePiece merges are checked by replaying HF's BPE loop
//! (`tokenizers` `Word::merge_all`: lowest rank first, leftmost on ties) over the written file.
mod common;

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use dpo_lora::export::tokenizer_files::write_tokenizer_files;
use dpo_lora::gguf::GgufFile;
use dpo_lora::tokenizer::Tokenizer;

/// The four files of one model, parsed.
struct Written {
    f: GgufFile,
    tok: Tokenizer,
    tokenizer: Value,
    config: Value,
    special_map: Value,
    generation: Value,
}

fn write_into(name: &str, dir: &Path) -> (GgufFile, Tokenizer) {
    let f = GgufFile::open(common::real_model(name)).expect("open gguf");
    let tok = Tokenizer::from_gguf(&f).expect("tokenizer");
    write_tokenizer_files(&f, &tok, dir).expect("write tokenizer files");
    (f, tok)
}

fn written(name: &str) -> Written {
    let dir = tempfile::tempdir().expect("tempdir");
    let (f, tok) = write_into(name, dir.path());
    let read = |file: &str| common::read_json(dir.path().join(file));
    Written {
        tokenizer: read("tokenizer.json"),
        config: read("tokenizer_config.json"),
        special_map: read("special_tokens_map.json"),
        generation: read("generation_config.json"),
        f,
        tok,
    }
}

/// Checks that hold for every model: vocabulary, added tokens, special ids, chat template.
fn check_common(w: &Written) {
    let (t, tok) = (&w.tokenizer, &w.tok);
    assert_eq!(t["version"], "1.0");
    assert_eq!(t["model"]["type"], "BPE");
    let vocab = t["model"]["vocab"].as_object().expect("model.vocab");
    assert_eq!(
        vocab.len(),
        tok.vocab_size(),
        "one vocab entry per GGUF token"
    );
    for id in 0..tok.vocab_size() as u32 {
        let piece = tok.piece(id).expect("piece");
        assert_eq!(vocab[piece], id, "vocab[{piece:?}]");
    }

    let added = t["added_tokens"].as_array().expect("added_tokens");
    assert!(!added.is_empty());
    for a in added {
        let id = a["id"].as_u64().expect("id") as u32;
        let content = a["content"].as_str().expect("content");
        assert_eq!(Some(content), tok.piece(id), "added token {id}");
        assert_eq!(a["normalized"], false, "{content:?} must match raw text");
        // llama.cpp cuts an added token's text out whole (parse_special = true); a special one
        // is CONTROL (never printed), a non-special one USER_DEFINED (matched in both modes).
        assert_eq!(tok.encode(content, true), [id], "{content:?}");
        if a["special"] == true {
            assert!(tok.decode(&[id]).is_empty(), "{content:?} is not CONTROL");
        } else {
            assert_eq!(tok.encode(content, false), [id], "{content:?}");
        }
    }
    let is_added_special = |id: Option<u32>| {
        added
            .iter()
            .any(|a| a["id"].as_u64() == id.map(u64::from) && a["special"] == true)
    };
    assert!(is_added_special(tok.bos_id()) && is_added_special(tok.eos_id()));
    let decoder = w.config["added_tokens_decoder"]
        .as_object()
        .expect("added_tokens_decoder");
    assert_eq!(decoder.len(), added.len());

    let text = |id: Option<u32>| id.and_then(|i| tok.piece(i));
    assert_eq!(w.config["tokenizer_class"], "PreTrainedTokenizerFast");
    assert_eq!(w.config["bos_token"].as_str(), text(tok.bos_id()));
    assert_eq!(w.config["eos_token"].as_str(), text(tok.eos_id()));
    assert_eq!(w.config["add_bos_token"], tok.add_bos());
    assert_eq!(
        w.config["chat_template"].as_str(),
        w.f.opt_str("tokenizer.chat_template")
            .expect("template key"),
        "chat template copied verbatim"
    );
    let arch = w.f.get_str("general.architecture").expect("arch");
    let ctx =
        w.f.get_usize(&format!("{arch}.context_length"))
            .expect("ctx");
    assert_eq!(w.config["model_max_length"], ctx);
    for key in ["bos_token", "eos_token", "pad_token"] {
        assert_eq!(
            w.special_map[key]["content"], w.config[key],
            "special_tokens_map {key}"
        );
    }

    let g = &w.generation;
    assert_eq!(g["bos_token_id"].as_u64(), tok.bos_id().map(u64::from));
    let eos: Vec<u32> = match &g["eos_token_id"] {
        Value::Array(_) => common::ids(&g["eos_token_id"]),
        one => vec![one.as_u64().expect("eos id") as u32],
    };
    assert_eq!(eos.first().copied(), tok.eos_id(), "EOS first");
    let eog: Vec<u32> = (0..tok.vocab_size() as u32)
        .filter(|&i| tok.is_eog(i))
        .collect();
    let mut sorted = eos.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, eog, "every end-of-generation id, once");
}

/// BOS/EOS of the TemplateProcessing `single` template, as (token, ids) pairs.
fn template_specials(t: &Value) -> Vec<String> {
    let pp = &t["post_processor"];
    assert_eq!(pp["type"], "TemplateProcessing");
    pp["single"]
        .as_array()
        .expect("single")
        .iter()
        .filter_map(|p| p["SpecialToken"]["id"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn smollm2_files_follow_the_gguf() {
    let w = written("smollm2");
    check_common(&w);
    let t = &w.tokenizer;
    // Every GGUF merge line is usable, so the file keeps them all, in order.
    let lines = w.f.get_str_array("tokenizer.ggml.merges").expect("merges");
    let merges = t["model"]["merges"].as_array().expect("merges");
    assert_eq!(merges.len(), lines.len());
    for (m, line) in merges.iter().zip(&lines).take(1000) {
        assert_eq!(
            format!("{} {}", m[0].as_str().unwrap(), m[1].as_str().unwrap()),
            *line
        );
    }
    assert_eq!(t["model"]["byte_fallback"], false);
    let steps = t["pre_tokenizer"]["pretokenizers"]
        .as_array()
        .expect("steps");
    assert_eq!(steps.len(), 3, "smollm: digits, GPT-2 regex, ByteLevel");
    assert_eq!(steps[0]["pattern"]["Regex"], r"\p{N}");
    assert_eq!(steps[2]["use_regex"], false);
    assert_eq!(t["decoder"]["type"], "ByteLevel");
    assert!(template_specials(t).is_empty(), "add_bos_token is false");
    assert!(w.config["chat_template"]
        .as_str()
        .is_some_and(|s| s.contains("<|im_start|>")));
    assert_eq!(
        w.config["pad_token"], "<|im_end|>",
        "tokenizer.ggml.padding_token_id = 2"
    );
    assert_eq!(w.generation["eos_token_id"][0], 2);
}

#[test]
fn gemma3_files_follow_the_gguf() {
    let w = written("gemma3");
    check_common(&w);
    let t = &w.tokenizer;
    assert_eq!(t["model"]["byte_fallback"], true);
    assert_eq!(t["model"]["unk_token"], "<unk>");
    assert_eq!(t["pre_tokenizer"], Value::Null);
    assert_eq!(
        t["normalizer"]["type"], "Replace",
        "add_space_prefix is false: no Prepend"
    );
    assert_eq!(template_specials(t), ["<bos>"]);
    assert_eq!(t["post_processor"]["special_tokens"]["<bos>"]["ids"][0], 2);
    let added: HashMap<u64, bool> = t["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_u64().unwrap(), a["special"] == true))
        .collect();
    assert_eq!(added.get(&106), Some(&true), "<end_of_turn> is CONTROL");
    assert_eq!(added.get(&107), Some(&false), "\\n is USER_DEFINED");
    assert_eq!(
        added.get(&212),
        Some(&true),
        "llama.cpp makes </s> CONTROL by its text"
    );
    assert_eq!(added.get(&238), None, "byte tokens stay in the model");
    assert!(w.config.get("chat_template").is_none(), "the GGUF has none");
    assert_eq!(w.config["pad_token"], "<pad>");
    assert_eq!(
        common::ids(&w.generation["eos_token_id"]),
        [1, 106, 212],
        "<eos>, <end_of_turn>, </s>"
    );

    // Merges: both halves and their concatenation are tokens; merged scores never increase.
    let vocab = t["model"]["vocab"].as_object().unwrap();
    let scores = w.f.get_f32_array("tokenizer.ggml.scores").expect("scores");
    let merges = t["model"]["merges"].as_array().expect("merges");
    assert!(merges.len() > 250_000, "{} merges", merges.len());
    let mut prev = f32::INFINITY;
    for m in merges {
        let (l, r) = (m[0].as_str().unwrap(), m[1].as_str().unwrap());
        assert!(
            vocab.contains_key(l) && vocab.contains_key(r),
            "{l:?} {r:?}"
        );
        let merged = vocab[&format!("{l}{r}")].as_u64().expect("merged token") as usize;
        assert!(scores[merged] <= prev, "{l:?} {r:?} out of score order");
        prev = scores[merged];
    }
}

/// HF's pipeline for the `llama` vocabulary, replayed over the written tokenizer.json: cut out
/// added tokens (leftmost, longest), escape spaces, byte-fallback unknown characters, merge
/// the lowest-rank adjacent pair (leftmost on ties) until none applies.
struct HfSpm {
    vocab: HashMap<String, u32>,
    ranks: HashMap<(u32, u32), (usize, u32)>,
    added: Vec<(String, u32)>,
}

impl HfSpm {
    fn new(t: &Value) -> Self {
        let vocab: HashMap<String, u32> = t["model"]["vocab"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap() as u32))
            .collect();
        let mut ranks = HashMap::new();
        for (rank, m) in t["model"]["merges"].as_array().unwrap().iter().enumerate() {
            let (l, r) = (m[0].as_str().unwrap(), m[1].as_str().unwrap());
            let merged = vocab[&format!("{l}{r}")];
            ranks.insert((vocab[l], vocab[r]), (rank, merged));
        }
        let added = t["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["content"].as_str().unwrap().to_string(),
                    a["id"].as_u64().unwrap() as u32,
                )
            })
            .collect();
        Self {
            vocab,
            ranks,
            added,
        }
    }

    fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let (mut i, mut piece_start) = (0, 0);
        while i < text.len() {
            let longest = self
                .added
                .iter()
                .filter(|(c, _)| text[i..].starts_with(c.as_str()))
                .max_by_key(|(c, _)| c.len());
            match longest {
                Some((c, id)) => {
                    self.encode_piece(&text[piece_start..i], &mut out);
                    out.push(*id);
                    i += c.len();
                    piece_start = i;
                }
                None => i += text[i..].chars().next().unwrap().len_utf8(),
            }
        }
        self.encode_piece(&text[piece_start..], &mut out);
        out
    }

    fn encode_piece(&self, piece: &str, out: &mut Vec<u32>) {
        let mut syms: Vec<u32> = Vec::new();
        for c in piece.replace(' ', "▁").chars() {
            match self.vocab.get(&c.to_string()) {
                Some(&id) => syms.push(id),
                None => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        syms.push(self.vocab[&format!("<0x{b:02X}>")]);
                    }
                }
            }
        }
        loop {
            let best = (0..syms.len().saturating_sub(1))
                .filter_map(|k| {
                    self.ranks
                        .get(&(syms[k], syms[k + 1]))
                        .map(|&(r, m)| (r, k, m))
                })
                .min();
            let Some((_, k, merged)) = best else { break };
            syms[k] = merged;
            syms.remove(k + 1);
        }
        out.extend(syms);
    }
}

#[test]
fn gemma3_merges_replayed_the_hf_way_give_llama_cpp_ids() {
    let w = written("gemma3");
    let hf = HfSpm::new(&w.tokenizer);
    let doc = common::read_json(common::fixtures().join("gemma3/strings_tokens.json"));
    let mut bad = Vec::new();
    for s in doc["strings"].as_array().expect("strings") {
        let text = s["text"].as_str().expect("text");
        let got = hf.encode(text);
        if got != common::ids(&s["parse_special_true"]) {
            bad.push(format!(
                "{text:?}: {got:?} vs llama.cpp {}",
                s["parse_special_true"]
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// Not a check: writes the files of both real models and of the tiny Qwen2-regex model under
/// $DPO_LORA_TOKDIR/{smollm2,gemma3,tiny-qwen2} for the Python comparison with `tokenizers` /
/// `transformers` (`DPO_LORA_TOKDIR=/tmp/tok cargo test --test export_tokenizer -- --ignored`).
#[test]
#[ignore]
fn write_for_python() {
    let root = std::path::PathBuf::from(std::env::var("DPO_LORA_TOKDIR").expect("DPO_LORA_TOKDIR"));
    let tiny = common::tiny_gguf("qwen2");
    for (name, gguf) in [
        ("smollm2", common::real_model("smollm2")),
        ("gemma3", common::real_model("gemma3")),
        ("tiny-qwen2", tiny),
    ] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("create dir");
        let f = GgufFile::open(gguf).expect("open gguf");
        let tok = Tokenizer::from_gguf(&f).expect("tokenizer");
        write_tokenizer_files(&f, &tok, &dir).expect("write tokenizer files");
    }
}
