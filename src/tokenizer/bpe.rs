//! gpt2-type byte-level BPE: merge the characters of one pre-tokenized word by merge rank.
//!
//! Owns: the merge table (`tokenizer.ggml.merges`, "left right" lines, rank = line index) and
//! the merge loop. Words arrive already split and byte-mapped (see `pretokenize`).
//!
//! Reference: llama.cpp `llm_tokenizer_bpe_session::tokenize`: start from one symbol per
//! character, repeatedly merge the adjacent pair with the lowest rank (ties: leftmost), then
//! emit each symbol's token id; a symbol that is not a token falls back to its single bytes,
//! looked up as one-byte strings (so only ASCII bytes can survive, as in llama.cpp).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::vocab::Vocab;

/// The merge table over interned strings: every token text and every string that appears in a
/// merge line gets a piece id (ids below the vocab size are the token ids themselves).
pub struct Merges {
    /// Piece text -> piece id, for strings that are not tokens.
    extra: HashMap<String, u32>,
    /// (left piece, right piece) -> (rank, merged piece).
    pairs: HashMap<(u32, u32), (u32, u32)>,
    /// Words that are whole tokens skip merging (llama.cpp `ignore_merges`).
    ignore_merges: bool,
}

impl Merges {
    /// Build from the merge lines; lines without a separating space are skipped (llama.cpp
    /// records them as an unusable empty pair).
    pub fn new(vocab: &Vocab, lines: &[&str], ignore_merges: bool) -> Self {
        let mut extra: HashMap<String, u32> = HashMap::new();
        let mut pairs = HashMap::with_capacity(lines.len());
        let n_vocab = vocab.len() as u32;
        let intern = |s: &str, extra: &mut HashMap<String, u32>| -> u32 {
            if let Some(id) = vocab.id(s) {
                return id;
            }
            let next = n_vocab + extra.len() as u32;
            *extra.entry(s.to_string()).or_insert(next)
        };
        for (rank, line) in lines.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte.
            // (A space is ASCII, so any byte position found is a char boundary.)
            let Some(pos) = line.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
                continue;
            };
            let (left, right) = (&line[..pos], &line[pos + 1..]);
            let l = intern(left, &mut extra);
            let r = intern(right, &mut extra);
            let merged = intern(&format!("{left}{right}"), &mut extra);
            // First occurrence wins, like llama.cpp's `emplace`.
            pairs.entry((l, r)).or_insert((rank as u32, merged));
        }
        Self {
            extra,
            pairs,
            ignore_merges,
        }
    }

    fn piece_id(&self, vocab: &Vocab, s: &str) -> Option<u32> {
        vocab.id(s).or_else(|| self.extra.get(s).copied())
    }

    /// Tokenize one byte-mapped word, appending ids to `out`.
    pub fn encode_word(&self, vocab: &Vocab, word: &str, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if self.ignore_merges {
            if let Some(id) = vocab.id(word) {
                out.push(id);
                return;
            }
        }
        // Symbols are contiguous byte ranges of `word`, linked as a list.
        let n = word.chars().count();
        let syms_iter = word.char_indices().enumerate().map(|(i, (start, ch))| {
            let end = start + ch.len_utf8();
            Sym {
                start,
                end,
                piece: self.piece_id(vocab, &word[start..end]),
                prev: i.checked_sub(1),
                next: (i + 1 < n).then_some(i + 1),
            }
        });
        let mut syms: Vec<Sym> = syms_iter.collect();
        // Min-heap on (rank, left index): lowest rank first, ties to the leftmost pair.
        let mut heap: BinaryHeap<Reverse<(u32, usize, usize, u32)>> = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], l: usize| {
            let Some(r) = syms[l].next else { return };
            if let (Some(a), Some(b)) = (syms[l].piece, syms[r].piece) {
                if let Some(&(rank, merged)) = self.pairs.get(&(a, b)) {
                    heap.push(Reverse((rank, l, syms[r].end, merged)));
                }
            }
        };
        for i in 0..n.saturating_sub(1) {
            push(&mut heap, &syms, i);
        }
        while let Some(Reverse((_, l, end, merged))) = heap.pop() {
            // Stale entry: the left symbol was absorbed, or either side has grown since.
            let Some(r) = syms[l].next else { continue };
            if syms[l].end == syms[l].start || syms[r].end != end {
                continue;
            }
            syms[l].end = end;
            syms[l].piece = Some(merged);
            syms[l].next = syms[r].next;
            syms[r].end = syms[r].start; // mark absorbed
            if let Some(nn) = syms[r].next {
                syms[nn].prev = Some(l);
            }
            if let Some(p) = syms[l].prev {
                push(&mut heap, &syms, p);
            }
            push(&mut heap, &syms, l);
        }
        let n_vocab = vocab.len() as u32;
        let mut i = Some(0);
        while let Some(k) = i {
            let s = &syms[k];
            match s.piece {
                Some(id) if id < n_vocab => out.push(id),
                _ => {
                    for b in word[s.start..s.end].bytes().filter(u8::is_ascii) {
                        if let Some(id) = vocab.id(&(b as char).to_string()) {
                            out.push(id);
                        }
                    }
                }
            }
            i = s.next;
        }
    }
}

struct Sym {
    start: usize,
    end: usize,
    piece: Option<u32>,
    prev: Option<usize>,
    next: Option<usize>,
}
