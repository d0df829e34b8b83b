//! The Hugging Face tokenizer files of an export folder, written from a GGUF vocabulary:
//! `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`, `generation_config.json`.
//!
//! Owns: turning `tokenizer.ggml.*` into a `tokenizers`-library pipeline (format "1.0") that gives
//! llama.cpp's ids, which our [`Tokenizer::encode`] reproduces exactly and so is the oracle.
//! It does not tokenize and does not write model weights or `config.json`.
//!
//! | GGUF vocab | tokenizers pipeline |
//! |---|---|
//! | `gpt2` | one `Split` (Isolated) per llama.cpp regex of the pre-tokenizer type, then `ByteLevel` without its own regex; BPE over `tokenizer.ggml.merges` (`ignore_merges` for Llama 3) |
//! | `llama` | normalizer `" "` -> `"▁"` (after prepending `"▁"` with `add_space_prefix`); BPE with `byte_fallback` whose merges are derived from the vocabulary |
//!
//! Why derived merges reproduce llama.cpp's SentencePiece loop (`llm_tokenizer_spm_session`):
//! llama.cpp merges, among adjacent symbols, the pair whose concatenation is a token with the
//! highest score, leftmost on ties. Every such pair is a split of some token into two tokens, so
//! listing every split of every token, ranked by the merged token's score (highest first), lets
//! HF's lowest-rank-first BPE make the same choices. Left to chance: two *different* merged
//! tokens with equal scores (HF takes the lower rank, llama.cpp the leftmost; Gemma's scores are
//! all distinct), and a single character that is not a token but merges into one (HF byte-falls
//! it back first).
//!
//! Special tokens: CONTROL / UNKNOWN tokens are `added_tokens` with `special: true`,
//! USER_DEFINED ones with `special: false`; all match raw text (`normalized: false`), as
//! llama.cpp's `tokenizer_st_partition` with `parse_special = true` does. HF always splits them
//! out, so HF's ids are llama.cpp's `parse_special = true` ids.
//!
//! References: HF `tokenizers` serialization (`tokenizer.json`), transformers
//! `PreTrainedTokenizerFast` / `GenerationConfig`, llama.cpp `llama_vocab::impl::load`.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Value};

use crate::gguf::{GgufError, GgufFile};
use crate::tokenizer::{PreTokenizer, Tokenizer, TokenizerKind};

/// An error writing the tokenizer files; the message names the file or metadata key.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerFilesError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: metadata key `{key}`: {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, TokenizerFilesError>;

/// Write the four tokenizer files into the existing folder `dir`, replacing any there.
pub fn write_tokenizer_files(f: &GgufFile, tok: &Tokenizer, dir: &Path) -> Result<()> {
    let pipeline = Pipeline::read(f, tok)?;
    let vocab = ExportVocab::read(f, tok)?;
    let specials = SpecialIds::read(f, tok)?;
    let tokenizer_json = TokenizerJson {
        version: "1.0",
        truncation: None,
        padding: None,
        added_tokens: added_tokens(&vocab),
        normalizer: normalizer(pipeline),
        pre_tokenizer: pre_tokenizer(pipeline),
        post_processor: post_processor(&vocab, &specials),
        decoder: decoder(pipeline),
        model: bpe_model(f, pipeline, &vocab, &specials)?,
    };
    // Compact: Gemma's file holds ~1.5 M merges; pretty-printing would triple its size.
    write_json(dir, "tokenizer.json", &tokenizer_json, false)?;
    write_json(
        dir,
        "tokenizer_config.json",
        &tokenizer_config(f, tok, &vocab, &specials)?,
        true,
    )?;
    write_json(
        dir,
        "special_tokens_map.json",
        &special_tokens_map(&vocab, &specials),
        true,
    )?;
    write_json(
        dir,
        "generation_config.json",
        &generation_config(&specials),
        true,
    )
}

fn write_json(dir: &Path, name: &str, value: &impl Serialize, pretty: bool) -> Result<()> {
    let path = dir.join(name);
    let err = |source| TokenizerFilesError::Write {
        path: path.clone(),
        source,
    };
    let file = std::fs::File::create(&path).map_err(err)?;
    let mut w = std::io::BufWriter::new(file);
    let res = if pretty {
        serde_json::to_writer_pretty(&mut w, value)
    } else {
        serde_json::to_writer(&mut w, value)
    };
    res.map_err(|e| err(e.into()))?;
    w.write_all(b"\n").map_err(err)?;
    w.flush().map_err(err)
}

/// The two tokenizers.json pipelines, one per GGUF vocabulary kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pipeline {
    /// `gpt2`: regex words, byte-level alphabet, BPE over the GGUF's merges.
    ByteLevel(PreTokenizer),
    /// `llama`: `▁` for spaces, BPE over merges derived from the scores, byte fallback.
    SentencePiece { add_space_prefix: bool },
}

impl Pipeline {
    fn read(f: &GgufFile, tok: &Tokenizer) -> Result<Self> {
        Ok(match tok.kind() {
            TokenizerKind::Bpe(pre) => Self::ByteLevel(*pre),
            // The tokenizer's default when the key is absent (llama.cpp's for SPM vocabularies).
            TokenizerKind::Spm => Self::SentencePiece {
                add_space_prefix: f
                    .opt_bool("tokenizer.ggml.add_space_prefix")?
                    .unwrap_or(true),
            },
        })
    }
}

/// What llama.cpp makes of a token (its `llama_token_attr`, one value per token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenClass {
    Normal,
    Byte,
    Control,
    UserDefined,
    Unknown,
    Unused,
}

impl TokenClass {
    /// `tokenizer.ggml.token_type`; llama.cpp's UNDEFINED (0 or out of range) still merges
    /// like a normal token, so it is exported as one.
    fn from_gguf(t: i64) -> Self {
        match t {
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Normal,
        }
    }

    /// llama.cpp overrides some types by token text (end-of-turn and fill-in-the-middle markers
    /// become CONTROL, harmony's `<|end|>` USER_DEFINED; see `tokenizer/vocab.rs`). Those tables
    /// are private to the tokenizer, so the outcome is read from its behaviour instead: its
    /// decode skips exactly the CONTROL, UNKNOWN and UNUSED tokens.
    fn settle(self, text: &str, decoded: &[u8]) -> Self {
        match self {
            Self::Normal | Self::UserDefined if decoded.is_empty() && !text.is_empty() => {
                Self::Control
            }
            Self::Control if !decoded.is_empty() => {
                if decoded == text.as_bytes() {
                    Self::UserDefined
                } else {
                    Self::Normal
                }
            }
            c => c,
        }
    }

    /// `Some(special)` for tokens that llama.cpp matches as whole texts before tokenizing.
    fn added_special(self) -> Option<bool> {
        match self {
            Self::Control | Self::Unknown => Some(true),
            Self::UserDefined => Some(false),
            Self::Normal | Self::Byte | Self::Unused => None,
        }
    }
}

/// The token table as exported: texts (ids are positions) and settled classes.
struct ExportVocab {
    texts: Vec<String>,
    classes: Vec<TokenClass>,
}

impl ExportVocab {
    fn read(f: &GgufFile, tok: &Tokenizer) -> Result<Self> {
        let n = tok.vocab_size();
        let types = if f.has("tokenizer.ggml.token_type") {
            f.get_int_array("tokenizer.ggml.token_type")?
        } else {
            vec![1; n]
        };
        let mut texts = Vec::with_capacity(n);
        let mut classes = Vec::with_capacity(n);
        for id in 0..n as u32 {
            let text = tok.piece(id).unwrap_or_default();
            let class = TokenClass::from_gguf(types.get(id as usize).copied().unwrap_or(1));
            classes.push(class.settle(text, &tok.decode_bytes(&[id])));
            // llama.cpp's name for a token it can never match; HF needs unique non-empty keys.
            texts.push(if text.is_empty() {
                format!("[EMPTY_{id}]")
            } else {
                text.to_string()
            });
        }
        Ok(Self { texts, classes })
    }

    fn text(&self, id: u32) -> &str {
        &self.texts[id as usize]
    }

    fn ids(&self) -> HashMap<&str, u32> {
        (0u32..)
            .zip(&self.texts)
            .map(|(id, t)| (t.as_str(), id))
            .collect()
    }
}

/// The special ids every file refers to.
struct SpecialIds {
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    /// EOS first, then every other end-of-generation id in id order.
    eog: Vec<u32>,
}

impl SpecialIds {
    fn read(f: &GgufFile, tok: &Tokenizer) -> Result<Self> {
        let n = tok.vocab_size();
        let id_of = |key: &str| -> Result<Option<u32>> {
            Ok(f.opt_usize(key)?.filter(|&i| i < n).map(|i| i as u32))
        };
        let eos = tok.eos_id();
        // llama.cpp's SentencePiece default unknown id is 0; byte-level BPE needs none.
        let unk_default = match tok.kind() {
            TokenizerKind::Spm => Some(0).filter(|_| n > 0),
            TokenizerKind::Bpe(_) => None,
        };
        let unk = id_of("tokenizer.ggml.unknown_token_id")?.or(unk_default);
        let pad = id_of("tokenizer.ggml.padding_token_id")?.or(eos);
        let add_eos = f.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        if add_eos && eos.is_none() {
            return Err(TokenizerFilesError::Invalid {
                path: f.path.clone(),
                key: "tokenizer.ggml.add_eos_token",
                reason: "is true, but tokenizer.ggml.eos_token_id is not set".into(),
            });
        }
        let eog = eos
            .into_iter()
            .chain((0..n as u32).filter(|&id| tok.is_eog(id) && Some(id) != eos))
            .collect();
        Ok(Self {
            bos: tok.bos_id(),
            eos,
            unk,
            pad,
            add_bos: tok.add_bos(),
            add_eos,
            eog,
        })
    }
}

#[derive(Serialize)]
struct TokenizerJson<'a> {
    version: &'static str,
    truncation: Option<()>,
    padding: Option<()>,
    added_tokens: Vec<AddedToken<'a>>,
    normalizer: Value,
    pre_tokenizer: Value,
    post_processor: Value,
    decoder: Value,
    model: BpeModel<'a>,
}

#[derive(Serialize)]
struct AddedToken<'a> {
    id: u32,
    content: &'a str,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

#[derive(Serialize)]
struct BpeModel<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    dropout: Option<f32>,
    unk_token: Option<&'a str>,
    continuing_subword_prefix: Option<()>,
    end_of_word_suffix: Option<()>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    vocab: TokenToId<'a>,
    merges: Vec<[&'a str; 2]>,
}

/// `{"text": id, ...}` in id order (a `serde_json::Map` would sort by text).
struct TokenToId<'a>(&'a [String]);

impl Serialize for TokenToId<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (id, t) in self.0.iter().enumerate() {
            m.serialize_entry(t, &id)?;
        }
        m.end()
    }
}

fn added_tokens(vocab: &ExportVocab) -> Vec<AddedToken<'_>> {
    (0u32..)
        .zip(&vocab.classes)
        .filter_map(|(id, c)| {
            c.added_special().map(|special| AddedToken {
                id,
                content: vocab.text(id),
                single_word: false,
                lstrip: false,
                rstrip: false,
                normalized: false,
                special,
            })
        })
        .collect()
}

fn normalizer(pipeline: Pipeline) -> Value {
    match pipeline {
        Pipeline::ByteLevel(_) => Value::Null,
        Pipeline::SentencePiece { add_space_prefix } => {
            let escape = json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"});
            if add_space_prefix {
                json!({"type": "Sequence", "normalizers": [
                    {"type": "Prepend", "prepend": "▁"},
                    escape,
                ]})
            } else {
                escape
            }
        }
    }
}

fn pre_tokenizer(pipeline: Pipeline) -> Value {
    match pipeline {
        // llama.cpp splits each regex's matches *and* the text between them into words, which
        // is `Split` with behaviour Isolated; the regexes already did ByteLevel's splitting.
        Pipeline::ByteLevel(pre) => {
            let mut steps: Vec<Value> = pre
                .patterns()
                .iter()
                .map(|p| {
                    json!({"type": "Split", "pattern": {"Regex": p},
                           "behavior": "Isolated", "invert": false})
                })
                .collect();
            steps.push(json!({"type": "ByteLevel", "add_prefix_space": false,
                              "trim_offsets": true, "use_regex": false}));
            json!({"type": "Sequence", "pretokenizers": steps})
        }
        // SentencePiece merges across spaces: the whole fragment is one word.
        Pipeline::SentencePiece { .. } => Value::Null,
    }
}

/// BOS / EOS around each sequence, as llama.cpp's `add_special = true` adds them.
fn post_processor(vocab: &ExportVocab, sp: &SpecialIds) -> Value {
    let bos = sp.bos.filter(|_| sp.add_bos);
    let eos = sp.eos.filter(|_| sp.add_eos);
    let piece = |id: Option<u32>, type_id: u32| {
        id.map(|i| json!({"SpecialToken": {"id": vocab.text(i), "type_id": type_id}}))
    };
    let seq = |name: &str, type_id: u32| json!({"Sequence": {"id": name, "type_id": type_id}});
    let single: Vec<Value> = [piece(bos, 0), Some(seq("A", 0)), piece(eos, 0)]
        .into_iter()
        .flatten()
        .collect();
    let pair: Vec<Value> = single
        .iter()
        .cloned()
        .chain(
            [piece(bos, 1), Some(seq("B", 1)), piece(eos, 1)]
                .into_iter()
                .flatten(),
        )
        .collect();
    let special_tokens: serde_json::Map<String, Value> = [bos, eos]
        .into_iter()
        .flatten()
        .map(|i| {
            let t = vocab.text(i);
            (t.to_string(), json!({"id": t, "ids": [i], "tokens": [t]}))
        })
        .collect();
    json!({"type": "TemplateProcessing", "single": single, "pair": pair,
           "special_tokens": special_tokens})
}

fn decoder(pipeline: Pipeline) -> Value {
    match pipeline {
        Pipeline::ByteLevel(_) => json!({"type": "ByteLevel", "add_prefix_space": true,
                                        "trim_offsets": true, "use_regex": true}),
        Pipeline::SentencePiece { add_space_prefix } => {
            let mut steps = vec![
                json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            // HF's Llama decoders drop the added prefix; llama.cpp's detokenizer keeps it.
            if add_space_prefix {
                steps.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            json!({"type": "Sequence", "decoders": steps})
        }
    }
}

fn bpe_model<'a>(
    f: &GgufFile,
    pipeline: Pipeline,
    vocab: &'a ExportVocab,
    sp: &SpecialIds,
) -> Result<BpeModel<'a>> {
    let ids = vocab.ids();
    let (pairs, unk, byte_fallback, ignore_merges) = match pipeline {
        Pipeline::ByteLevel(pre) => {
            let lines = f.get_str_array("tokenizer.ggml.merges")?;
            (gpt2_merges(&lines, &ids), None, false, pre.ignore_merges())
        }
        Pipeline::SentencePiece { .. } => {
            let scores = if f.has("tokenizer.ggml.scores") {
                f.get_f32_array("tokenizer.ggml.scores")?
            } else {
                Vec::new()
            };
            (spm_merges(vocab, &scores, &ids), sp.unk, true, false)
        }
    };
    let merges = pairs
        .into_iter()
        .map(|(l, r)| [vocab.text(l), vocab.text(r)])
        .collect();
    Ok(BpeModel {
        kind: "BPE",
        dropout: None,
        unk_token: unk.map(|i| vocab.text(i)),
        continuing_subword_prefix: None,
        end_of_word_suffix: None,
        fuse_unk: byte_fallback,
        byte_fallback,
        ignore_merges,
        vocab: TokenToId(&vocab.texts),
        merges,
    })
}

/// `tokenizer.ggml.merges` lines as id pairs, in rank order. HF rejects a merge whose parts or
/// result are not tokens (llama.cpp would carry such a piece along as an intermediate), and
/// keeps the *last* of duplicate pairs where llama.cpp keeps the first: both are dropped here.
fn gpt2_merges(lines: &[&str], ids: &HashMap<&str, u32>) -> Vec<(u32, u32)> {
    let mut seen = HashSet::with_capacity(lines.len());
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        // llama.cpp splits at the first space after the first byte.
        let Some(pos) = line.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
            continue;
        };
        let (left, right) = (&line[..pos], &line[pos + 1..]);
        let (Some(&l), Some(&r)) = (ids.get(left), ids.get(right)) else {
            continue;
        };
        if ids.contains_key(format!("{left}{right}").as_str()) && seen.insert((l, r)) {
            out.push((l, r));
        }
    }
    out
}

/// Every split of a normal token into two tokens, highest merged-token score first (then by
/// merged id and split position, for a stable file). Only normal tokens are merge results:
/// text that could form any other kind was already split out as an added token.
fn spm_merges(vocab: &ExportVocab, scores: &[f32], ids: &HashMap<&str, u32>) -> Vec<(u32, u32)> {
    // (merged, split byte offset, left, right)
    let mut cands: Vec<(u32, u32, u32, u32)> = Vec::new();
    for (m, (text, class)) in (0u32..).zip(vocab.texts.iter().zip(&vocab.classes)) {
        if *class != TokenClass::Normal {
            continue;
        }
        for (k, _) in text.char_indices().skip(1) {
            if let (Some(&l), Some(&r)) = (ids.get(&text[..k]), ids.get(&text[k..])) {
                cands.push((m, k as u32, l, r));
            }
        }
    }
    let score = |id: u32| scores.get(id as usize).copied().unwrap_or(0.0);
    cands.sort_by(|a, b| {
        score(b.0)
            .total_cmp(&score(a.0))
            .then(a.0.cmp(&b.0))
            .then(a.1.cmp(&b.1))
    });
    cands.into_iter().map(|(_, _, l, r)| (l, r)).collect()
}

/// The token as transformers writes it in `added_tokens_decoder` and `special_tokens_map.json`.
fn token_entry(content: &str, special: bool) -> Value {
    json!({"content": content, "lstrip": false, "normalized": false, "rstrip": false,
           "single_word": false, "special": special})
}

/// `{"id": entry, ...}` in id order.
struct IdToEntry(Vec<(u32, Value)>);

impl Serialize for IdToEntry {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (id, v) in &self.0 {
            m.serialize_entry(&id.to_string(), v)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct TokenizerConfig<'a> {
    tokenizer_class: &'static str,
    bos_token: Option<&'a str>,
    eos_token: Option<&'a str>,
    unk_token: Option<&'a str>,
    pad_token: Option<&'a str>,
    add_bos_token: bool,
    add_eos_token: bool,
    clean_up_tokenization_spaces: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_max_length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_template: Option<&'a str>,
    added_tokens_decoder: IdToEntry,
}

/// `tokenizer_config.json`; its `chat_template` is the one the run used (`data.chat_template`
/// when it replaced or supplied the model's), so the export renders as training did.
fn tokenizer_config<'a>(
    f: &'a GgufFile,
    tok: &'a Tokenizer,
    vocab: &'a ExportVocab,
    sp: &SpecialIds,
) -> Result<TokenizerConfig<'a>> {
    let model_max_length = match f.opt_str("general.architecture")? {
        Some(arch) => f.opt_usize(&format!("{arch}.context_length"))?,
        None => None,
    };
    let text = |id: Option<u32>| id.map(|i| vocab.text(i));
    let decoder = (0u32..)
        .zip(&vocab.classes)
        .filter_map(|(id, c)| {
            c.added_special()
                .map(|special| (id, token_entry(vocab.text(id), special)))
        })
        .collect();
    Ok(TokenizerConfig {
        tokenizer_class: "PreTrainedTokenizerFast",
        bos_token: text(sp.bos),
        eos_token: text(sp.eos),
        unk_token: text(sp.unk),
        pad_token: text(sp.pad),
        add_bos_token: sp.add_bos,
        add_eos_token: sp.add_eos,
        clean_up_tokenization_spaces: false,
        model_max_length,
        chat_template: tok.chat_template().map(|t| t.source()),
        added_tokens_decoder: IdToEntry(decoder),
    })
}

fn special_tokens_map(vocab: &ExportVocab, sp: &SpecialIds) -> Value {
    let mut m = serde_json::Map::new();
    for (name, id) in [
        ("bos_token", sp.bos),
        ("eos_token", sp.eos),
        ("unk_token", sp.unk),
        ("pad_token", sp.pad),
    ] {
        if let Some(id) = id {
            m.insert(name.into(), token_entry(vocab.text(id), true));
        }
    }
    Value::Object(m)
}

fn generation_config(sp: &SpecialIds) -> Value {
    let eos = match sp.eog.as_slice() {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    };
    json!({"bos_token_id": sp.bos, "eos_token_id": eos, "pad_token_id": sp.pad})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(texts: &[&str]) -> ExportVocab {
        ExportVocab {
            texts: texts.iter().map(|t| t.to_string()).collect(),
            classes: vec![TokenClass::Normal; texts.len()],
        }
    }

    #[test]
    fn spm_merges_rank_by_merged_score_not_by_id() {
        // `bc` (id 4) outscores `ab` (id 3): llama.cpp turns "abc" into a|bc, so (b, c) must
        // rank first. `abc` has two splits, both listed, shorter left part first.
        let v = vocab(&["a", "b", "c", "ab", "bc", "abc"]);
        let scores = [0.0, 0.0, 0.0, -5.0, -1.0, -9.0];
        let merges = spm_merges(&v, &scores, &v.ids());
        assert_eq!(merges, [(1, 2), (0, 1), (0, 4), (3, 2)]);
    }

    #[test]
    fn spm_merges_only_form_normal_tokens() {
        let mut v = vocab(&["<", "s", ">", "<s", "<s>"]);
        v.classes[4] = TokenClass::Control;
        assert_eq!(spm_merges(&v, &[], &v.ids()), [(0, 1)]);
    }

    #[test]
    fn gpt2_merges_drop_unusable_and_repeated_lines() {
        let v = vocab(&["a", "b", "ab", "Ġ", "Ġa"]);
        let lines = ["a b", "Ġ a", "a b", "x y", "ab", "b a"];
        assert_eq!(gpt2_merges(&lines, &v.ids()), [(0, 1), (3, 0)]);
    }

    #[test]
    fn llama_cpp_type_overrides_are_read_from_decoding() {
        use TokenClass::*;
        // <end_of_turn> typed NORMAL but never printed: llama.cpp forced it to CONTROL.
        assert_eq!(Normal.settle("<end_of_turn>", b""), Control);
        assert_eq!(UserDefined.settle("</s>", b""), Control);
        assert_eq!(Normal.settle("hi", b"hi"), Normal);
        assert_eq!(Control.settle("<|end|>", b"<|end|>"), UserDefined);
        assert_eq!(Control.settle("<pad>", b""), Control);
        assert_eq!(Unused.settle("<unused0>", b""), Unused);
        assert_eq!(Byte.settle("<0x41>", b"A"), Byte);
    }

    #[test]
    fn generation_config_lists_eos_first_or_alone() {
        let sp = |eog: Vec<u32>| SpecialIds {
            bos: Some(1),
            eos: eog.first().copied(),
            unk: None,
            pad: Some(0),
            add_bos: false,
            add_eos: false,
            eog,
        };
        assert_eq!(generation_config(&sp(vec![2]))["eos_token_id"], 2);
        assert_eq!(
            generation_config(&sp(vec![2, 0, 4]))["eos_token_id"],
            json!([2, 0, 4])
        );
    }
}
