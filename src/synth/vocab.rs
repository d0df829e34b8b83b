//! Small but real tokenizer vocabularies for synthetic models, as GGUF metadata.
//!
//! Two kinds, the two that llama.cpp's converter writes for our architectures:
//! - `gpt2` (llama, qwen2, qwen3): the 256 byte-level symbols of GPT-2's `bytes_to_unicode`
//!   table, then the results of BPE merges learned from [`CORPUS`], then the ChatML specials as
//!   CONTROL tokens (Qwen's order: specials last). `tokenizer.ggml.merges` holds `"a b"` strings.
//! - `llama` (gemma3, a SentencePiece BPE model): `<pad> <eos> <bos> <unk>`, the turn markers,
//!   `"\n"` as USER_DEFINED, the byte-fallback tokens `<0x00>..<0xFF>` (BYTE, score 0), then
//!   merged pieces and single characters with `score = -rank` (higher = merged first), which is
//!   how Gemma 3's own file scores them (see FACTS.md: the scores are merge ranks).
//!
//! Merges are learned here, deterministically (most frequent pair, ties by text), so every
//! merge's parts and result are tokens: the tokenizer under test meets a consistent vocabulary.

use std::collections::{BTreeMap, HashSet};

use candle_core::quantized::gguf_file::Value;

use crate::gguf::write::{f32_array, i32_array, string, string_array};

/// Token types as llama.cpp numbers them (`llama_token_type` / gguf-py `TokenType`).
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

/// How many merges to learn; keeps both vocabularies well under 512 tokens.
const N_MERGES: usize = 100;

/// Text the merges are learned from: plain English, so common pieces ("Ġthe", "▁the") exist.
const CORPUS: &str = "The model reads the prompt and then writes the answer. \
    The chosen answer is the one that the reader liked, and the rejected answer is the other one. \
    In training we make the chosen answer more likely than the rejected answer, \
    and we keep the model close to the reference model that it started from. \
    There is a cat on the mat, and the cat is happy. Then the dog sat on the mat with the cat. \
    This is a test of the tokenizer: it should split these words into the pieces that it knows, \
    and fall back to bytes for the rest. Thank you for reading this, and have a nice day.";

/// ChatML, as in Qwen's and SmolLM2's files.
const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Gemma's turn format (simplified from Gemma 3's template: no system-prompt folding).
const GEMMA_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";

/// A vocabulary and the `tokenizer.*` metadata that describes it.
pub(super) struct Vocab {
    pub tokens: Vec<String>,
    pub metadata: Vec<(String, Value)>,
}

/// GPT-2's byte -> printable char table (`bytes_to_unicode` in GPT-2's `encoder.py`), in its
/// own order: printable bytes first, then the rest mapped to U+0100 upwards.
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut table: Vec<(u8, char)> = (0..=255u32)
        .filter(|&b| printable(b))
        .map(|b| (b as u8, char::from_u32(b).unwrap_or('?')))
        .collect();
    let mut n = 0;
    for b in 0..=255u32 {
        if !printable(b) {
            table.push((b as u8, char::from_u32(256 + n).unwrap_or('?')));
            n += 1;
        }
    }
    table
}

/// Words of [`CORPUS`] as symbol lists: a run of letters with the space before it, the space
/// written as `space` (GPT-2's `Ġ` or SentencePiece's `▁`). Punctuation is left out.
fn corpus_words(space: char) -> Vec<Vec<String>> {
    let mut words = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut pending_space = false;
    for c in CORPUS.chars() {
        if c.is_ascii_alphabetic() {
            if cur.is_empty() && pending_space {
                cur.push(space.to_string());
            }
            cur.push(c.to_string());
            pending_space = false;
        } else {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            pending_space = c == ' ';
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Learn up to `n` BPE merges: most frequent adjacent pair first, ties broken by the pair's
/// text so the result never depends on hash order; stops when no pair occurs twice.
fn learn_merges(mut words: Vec<Vec<String>>, n: usize) -> Vec<(String, String)> {
    let mut merges = Vec::new();
    for _ in 0..n {
        let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for w in &words {
            for p in w.windows(2) {
                *counts.entry((&p[0], &p[1])).or_default() += 1;
            }
        }
        // max_by keeps the last maximum; iterate in reverse so the smallest pair wins ties.
        let best = counts.iter().rev().max_by_key(|(_, &c)| c);
        let Some((&(a, b), &count)) = best else { break };
        if count < 2 {
            break;
        }
        let (a, b) = (a.to_string(), b.to_string());
        for w in &mut words {
            let mut i = 0;
            while i + 1 < w.len() {
                if w[i] == a && w[i + 1] == b {
                    let merged = format!("{a}{b}");
                    w.splice(i..i + 2, [merged]);
                }
                i += 1;
            }
        }
        merges.push((a, b));
    }
    merges
}

/// The `gpt2`-type vocabulary; `pre` is `tokenizer.ggml.pre` ("qwen2", "llama-bpe").
/// A filler token: never produced by encoding (its `<` `>` and `-` pieces are not merged into
/// it), only there so the vocabulary has a real model's size.
fn filler(i: usize) -> String {
    format!("<synth-fill-{i}>")
}

/// `pad_to`: the vocabulary's size with fillers added (`None`: as learned); checked by the caller
/// against [`Vocab::tokens`] of the unpadded vocabulary.
pub(super) fn gpt2(pre: &str, pad_to: Option<usize>) -> Vocab {
    let mut tokens: Vec<String> = bytes_to_unicode()
        .into_iter()
        .map(|(_, c)| c.to_string())
        .collect();
    let merges = learn_merges(corpus_words('Ġ'), N_MERGES);
    let mut seen: HashSet<String> = tokens.iter().cloned().collect();
    for (a, b) in &merges {
        let t = format!("{a}{b}");
        if seen.insert(t.clone()) {
            tokens.push(t);
        }
    }
    // Qwen's order: specials last, so fillers go before them.
    let specials = 3;
    if let Some(n) = pad_to {
        let fill = n.saturating_sub(tokens.len() + specials);
        tokens.extend((0..fill).map(filler));
    }
    let mut token_type = vec![NORMAL; tokens.len()];
    let endoftext = tokens.len() as u32;
    for special in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
        tokens.push(special.to_string());
        token_type.push(CONTROL);
    }
    let im_end = endoftext + 2;
    let merges: Vec<String> = merges.iter().map(|(a, b)| format!("{a} {b}")).collect();
    // Qwen2-Instruct's ids: bos = pad = <|endoftext|>, eos = <|im_end|>.
    let metadata = vec![
        ("tokenizer.ggml.model".into(), string("gpt2")),
        ("tokenizer.ggml.pre".into(), string(pre)),
        ("tokenizer.ggml.tokens".into(), string_array(&tokens)),
        ("tokenizer.ggml.token_type".into(), i32_array(&token_type)),
        ("tokenizer.ggml.merges".into(), string_array(&merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(endoftext)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(im_end)),
        (
            "tokenizer.ggml.padding_token_id".into(),
            Value::U32(endoftext),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ("tokenizer.ggml.add_eos_token".into(), Value::Bool(false)),
        ("tokenizer.chat_template".into(), string(CHATML_TEMPLATE)),
    ];
    Vocab { tokens, metadata }
}

/// The `llama`-type (SentencePiece) vocabulary in Gemma 3's layout.
pub(super) fn gemma(pad_to: Option<usize>) -> Vocab {
    let mut tokens: Vec<String> = Vec::new();
    let mut scores: Vec<f32> = Vec::new();
    let mut token_type: Vec<i32> = Vec::new();
    let mut push = |t: String, score: f32, ty: i32| {
        tokens.push(t);
        scores.push(score);
        token_type.push(ty);
    };
    // Gemma 3's file marks all four as CONTROL (its <unk> too), scored -1000.
    for special in [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<start_of_turn>",
        "<end_of_turn>",
    ] {
        push(special.into(), -1000.0, CONTROL);
    }
    push("\n".into(), -1000.0, USER_DEFINED);
    for b in 0..=255u8 {
        push(format!("<0x{b:02X}>"), 0.0, BYTE);
    }
    let words = corpus_words('▁');
    let mut chars: Vec<String> = words.iter().flatten().cloned().collect();
    chars.extend([".", ",", "!", "?", "'", ":"].map(String::from));
    chars.sort();
    chars.dedup();
    let merges = learn_merges(words, N_MERGES);
    let mut seen: HashSet<String> = HashSet::new();
    let pieces = merges
        .iter()
        .map(|(a, b)| format!("{a}{b}"))
        .chain(chars)
        .filter(|p| seen.insert(p.clone()));
    let mut rank = 0;
    for piece in pieces {
        push(piece, -(rank as f32), NORMAL);
        rank += 1;
    }
    if let Some(n) = pad_to {
        // 6 specials, "\n", 256 bytes, then the pieces.
        let have = 6 + 1 + 256 + rank;
        for i in 0..n.saturating_sub(have) {
            push(filler(i), -1e9, NORMAL);
        }
    }
    let metadata = vec![
        ("tokenizer.ggml.model".into(), string("llama")),
        ("tokenizer.ggml.pre".into(), string("default")),
        ("tokenizer.ggml.tokens".into(), string_array(&tokens)),
        ("tokenizer.ggml.scores".into(), f32_array(&scores)),
        ("tokenizer.ggml.token_type".into(), i32_array(&token_type)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(3)),
        ("tokenizer.ggml.padding_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
        ("tokenizer.ggml.add_sep_token".into(), Value::Bool(false)),
        ("tokenizer.ggml.add_eos_token".into(), Value::Bool(false)),
        ("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false)),
        ("tokenizer.chat_template".into(), string(GEMMA_TEMPLATE)),
    ];
    Vocab { tokens, metadata }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_with_gpt2_anchors() {
        let t = bytes_to_unicode();
        assert_eq!(t.len(), 256);
        let chars: HashSet<char> = t.iter().map(|&(_, c)| c).collect();
        let bytes: HashSet<u8> = t.iter().map(|&(b, _)| b).collect();
        assert_eq!((chars.len(), bytes.len()), (256, 256));
        let of = |b: u8| t.iter().find(|&&(x, _)| x == b).unwrap().1;
        assert_eq!(of(b' '), 'Ġ');
        assert_eq!(of(b'\n'), 'Ċ');
        assert_eq!(of(b'a'), 'a');
        assert_eq!(t[0], (b'!', '!'));
    }

    #[test]
    fn merges_are_consistent_and_learn_the() {
        let merges = learn_merges(corpus_words('Ġ'), N_MERGES);
        assert!(merges.len() >= 50, "only {} merges", merges.len());
        let mut known: HashSet<String> = bytes_to_unicode()
            .into_iter()
            .map(|(_, c)| c.to_string())
            .collect();
        for (a, b) in &merges {
            assert!(known.contains(a) && known.contains(b), "{a} {b}");
            known.insert(format!("{a}{b}"));
        }
        assert!(known.contains("Ġthe"));
        assert_eq!(learn_merges(corpus_words('Ġ'), N_MERGES), merges);
    }

    #[test]
    fn gemma_pieces_are_unique_and_ranked() {
        let v = gemma(None);
        let unique: HashSet<&String> = v.tokens.iter().collect();
        assert_eq!(unique.len(), v.tokens.len());
        assert_eq!(v.tokens[7], "<0x00>");
        assert_eq!(v.tokens[7 + 255], "<0xFF>");
        assert!(v.tokens.iter().any(|t| t == "▁the"));
        assert!(v.tokens.len() <= 512, "{}", v.tokens.len());
    }
}
