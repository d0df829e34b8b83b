//! Pre-tokenization of gpt2-type (byte-level BPE) vocabularies: split raw text into words
//! with the pre-tokenizer's regex list, then map every byte to GPT-2's printable alphabet.
//!
//! Owns: the `tokenizer.ggml.pre` name -> [`PreTokenizer`] table, the regex lists, and the
//! byte <-> unicode table. It does not merge (see `bpe`).
//!
//! Reference: llama.cpp `llm_tokenizer_bpe` (the regex list per `LLAMA_VOCAB_PRE_TYPE_*`) and
//! `unicode_regex_split` in `src/unicode.cpp`: each regex of the list is applied in turn to every
//! piece the previous one produced, and the text *between* matches is kept as a piece too (it
//! is never dropped). llama.cpp runs some of these regexes through hand-written scanners and
//! others through `std::regex` on a "collapsed" text; both follow ordinary regex semantics, which
//! is what fancy-regex gives us with full Unicode classes.

use fancy_regex::Regex;

/// The gpt2 regex (`LLAMA_VOCAB_PRE_TYPE_GPT2`); note it has no final `\s+` alternative, so a
/// single space before a non-space that no other branch takes stays an unmatched piece.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// llama.cpp's adaptation of Llama 3's regex (case-insensitive contractions spelled out).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2: Llama 3's regex with every digit its own word.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Which regex list splits text into words before BPE (`tokenizer.ggml.pre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `default`: llama.cpp's fallback list (punctuation runs, gpt2, digit runs, digit triples).
    Default,
    /// `gpt-2` (and the spelling `gpt2`): the GPT-2 regex alone.
    Gpt2,
    /// `smollm` (also starcoder, refact, command-r, codeshell, exaone): every digit its own
    /// word, then the GPT-2 regex.
    Smollm,
    /// `llama-bpe`, `llama3`, `llama-v3`: Llama 3 regex; a word that is a whole vocab token is
    /// not merged (`ignore_merges`); add_bos defaults to true.
    Llama3,
    /// `qwen2` (also stablelm2, deepseek-r1-qwen, megrez): Llama 3 regex, single digits.
    Qwen2,
}

/// The `tokenizer.ggml.pre` names we accept, for error messages.
pub const SUPPORTED_PRE: &str = "default, gpt-2 (gpt2), smollm (starcoder, refact, command-r, \
     codeshell, exaone), llama-bpe (llama3, llama-v3), qwen2 (stablelm2, deepseek-r1-qwen, megrez)";

impl PreTokenizer {
    /// Map a `tokenizer.ggml.pre` value; `None` for names we do not implement.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "default" => Self::Default,
            "gpt2" | "gpt-2" => Self::Gpt2,
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" => {
                Self::Smollm
            }
            "llama-bpe" | "llama3" | "llama-v3" => Self::Llama3,
            "qwen2" | "stablelm2" | "deepseek-r1-qwen" | "megrez" => Self::Qwen2,
            _ => return None,
        })
    }

    /// Whether a word that is already a vocab token skips merging (llama.cpp `ignore_merges`).
    pub fn ignore_merges(self) -> bool {
        matches!(self, Self::Llama3)
    }

    /// llama.cpp's `add_bos` default before `tokenizer.ggml.add_bos_token` is read.
    pub fn default_add_bos(self) -> bool {
        matches!(self, Self::Llama3)
    }

    /// llama.cpp's regex list for this type, applied in order (each splits the pieces the
    /// previous ones left); the tokenizer.json export writes the same list.
    pub fn patterns(self) -> &'static [&'static str] {
        match self {
            Self::Default => &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
            Self::Gpt2 => &[GPT2],
            Self::Smollm => &[r"\p{N}", GPT2],
            Self::Llama3 => &[LLAMA3],
            Self::Qwen2 => &[QWEN2],
        }
    }
}

/// A compiled pre-tokenizer: the regex list and the byte -> char table.
pub struct Splitter {
    regexes: Vec<Regex>,
    byte_to_char: [char; 256],
}

impl Splitter {
    /// Compile the regex list; the error is the regex library's message.
    pub fn new(pre: PreTokenizer) -> Result<Self, String> {
        let regexes = pre
            .patterns()
            .iter()
            .map(|p| Regex::new(p).map_err(|e| format!("{p}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            regexes,
            byte_to_char: byte_to_char_table(),
        })
    }

    /// Split `text` into words, each already mapped to the byte-level alphabet.
    pub fn split(&self, text: &str) -> Vec<String> {
        let mut pieces: Vec<&str> = vec![text];
        for re in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for piece in pieces {
                split_keep_gaps(re, piece, &mut next);
            }
            pieces = next;
        }
        pieces
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(|p| p.bytes().map(|b| self.byte_to_char[b as usize]).collect())
            .collect()
    }
}

/// Push the matches of `re` in `text` and the unmatched text between them, in order.
fn split_keep_gaps<'a>(re: &Regex, text: &'a str, out: &mut Vec<&'a str>) {
    let mut last = 0;
    for m in re.find_iter(text) {
        // A regex runtime error (backtrack limit) on one piece: keep the rest whole rather
        // than fail tokenization; llama.cpp's scanners cannot fail either.
        let Ok(m) = m else { break };
        if m.start() > last {
            out.push(&text[last..m.start()]);
        }
        if m.end() > m.start() {
            out.push(m.as_str());
        }
        last = m.end();
    }
    if last < text.len() {
        out.push(&text[last..]);
    }
}

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes map to themselves, the other 68 bytes to
/// U+0100.. in byte order.
pub fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let cp = if printable {
            b
        } else {
            next += 1;
            next - 1
        };
        table[b as usize] = char::from_u32(cp).unwrap_or('\u{FFFD}');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, text: &str) -> Vec<String> {
        let s = Splitter::new(pre).expect("built-in regexes compile");
        let back: std::collections::HashMap<char, u8> = s
            .byte_to_char
            .iter()
            .enumerate()
            .map(|(b, c)| (*c, b as u8))
            .collect();
        s.split(text)
            .iter()
            .map(|w| String::from_utf8(w.chars().map(|c| back[&c]).collect()).unwrap())
            .collect()
    }

    #[test]
    fn byte_table_is_a_bijection_matching_gpt2() {
        let t = byte_to_char_table();
        let set: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
    }

    #[test]
    fn smollm_splits_every_digit_and_keeps_gaps() {
        assert_eq!(
            words(PreTokenizer::Smollm, "ab 123  x"),
            ["ab", " ", "1", "2", "3", " ", " x"]
        );
    }

    #[test]
    fn llama3_groups_three_digits_qwen2_one() {
        assert_eq!(words(PreTokenizer::Llama3, "12345"), ["123", "45"]);
        assert_eq!(words(PreTokenizer::Qwen2, "123"), ["1", "2", "3"]);
        assert_eq!(words(PreTokenizer::Qwen2, "a\r\nb"), ["a", "\r\n", "b"]);
    }
}
