//! The tokenizer: text (lossy UTF-8) encoded by every loaded vocabulary, with and without
//! special-token parsing, then decoded. Byte-level BPE must give the text back exactly when
//! each of its characters comes back alone (SmolLM2's vocabulary has no token for a few control
//! bytes, such as 0x16; llama.cpp drops them too).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for (name, tok) in common::tokenizers() {
        for special in [false, true] {
            let ids = tok.encode(&text, special);
            for &id in &ids {
                assert!(
                    (id as usize) < tok.vocab_size(),
                    "{name}: id {id} outside the vocabulary"
                );
            }
            let back = tok.decode_bytes(&ids);
            let _ = tok.decode(&ids);
            if !special && common::round_trips(tok, &text) {
                assert_eq!(
                    back,
                    text.as_bytes(),
                    "{name}: decode(encode(text)) != text"
                );
            }
        }
    }
});
