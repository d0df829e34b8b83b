//! llama-type (SentencePiece BPE) tokenization of one text fragment.
//!
//! Owns: the score-driven merge loop and the byte fallback. The caller has already escaped
//! spaces to `▁` and added the optional space prefix (see `Tokenizer::encode`).
//!
//! Reference: llama.cpp `llm_tokenizer_spm_session::tokenize`: one symbol per UTF-8 character;
//! repeatedly merge the adjacent pair whose concatenation is a token with the highest
//! `tokenizer.ggml.scores` value (ties: leftmost); then each symbol is emitted as its token,
//! or, when it is not a token, as byte tokens `<0xXX>`. (llama.cpp's `resegment` also walks a
//! record of merges, but a merged symbol is always a token, so only unmerged single characters
//! ever reach the byte fallback.) Gemma's scores are merge ranks stored as scores, which this
//! loop handles the same way.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

/// Precomputed byte-fallback ids: `<0xXX>` if present, else the one-byte text (llama.cpp
/// `byte_to_token`), else none (llama.cpp would abort; we drop the byte).
pub struct ByteTokens([Option<u32>; 256]);

impl ByteTokens {
    pub fn new(vocab: &Vocab) -> Self {
        let mut t = [None; 256];
        for (b, slot) in t.iter_mut().enumerate() {
            *slot = vocab.id(&format!("<0x{b:02X}>")).or_else(|| {
                let c = b as u8;
                c.is_ascii()
                    .then(|| vocab.id(&(c as char).to_string()))
                    .flatten()
            });
        }
        Self(t)
    }

    pub fn get(&self, b: u8) -> Option<u32> {
        self.0[b as usize]
    }
}

struct Bigram {
    score: f32,
    left: usize,
    /// Byte length of left + right when queued; a mismatch later means the entry is stale.
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the smaller left index.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

struct Sym {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Tokenize one escaped fragment, appending ids to `out`.
pub fn encode(vocab: &Vocab, bytes: &ByteTokens, text: &str, out: &mut Vec<u32>) {
    let n = text.chars().count();
    if n == 0 {
        return;
    }
    let mut syms: Vec<Sym> = text
        .char_indices()
        .enumerate()
        .map(|(i, (start, c))| Sym {
            start,
            len: c.len_utf8(),
            prev: i.checked_sub(1),
            next: (i + 1 < n).then_some(i + 1),
        })
        .collect();
    let mut heap = BinaryHeap::new();
    let try_add = |heap: &mut BinaryHeap<Bigram>, syms: &[Sym], left: Option<usize>| {
        let Some(l) = left else { return };
        let Some(r) = syms[l].next else { return };
        let size = syms[l].len + syms[r].len;
        let piece = &text[syms[l].start..syms[l].start + size];
        if let Some(id) = vocab.id(piece) {
            let score = vocab.scores.get(id as usize).copied().unwrap_or(0.0);
            heap.push(Bigram {
                score,
                left: l,
                size,
            });
        }
    };
    for i in 0..n - 1 {
        try_add(&mut heap, &syms, Some(i));
    }
    while let Some(bg) = heap.pop() {
        let l = bg.left;
        let Some(r) = syms[l].next else { continue };
        if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != bg.size {
            continue;
        }
        syms[l].len += syms[r].len;
        syms[r].len = 0;
        syms[l].next = syms[r].next;
        if let Some(nn) = syms[r].next {
            syms[nn].prev = Some(l);
        }
        try_add(&mut heap, &syms, syms[l].prev);
        try_add(&mut heap, &syms, Some(l));
    }
    let mut i = Some(0);
    while let Some(k) = i {
        let s = &syms[k];
        let piece = &text[s.start..s.start + s.len];
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => out.extend(piece.bytes().filter_map(|b| bytes.get(b))),
        }
        i = s.next;
    }
}
