//! A JSONL (or `.json`, or gzipped JSONL: the first byte picks) data file, read as `run` reads
//! records: layout, record, token ids, truncation.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let ext = match pick % 3 {
        0 => "jsonl",
        1 => "json",
        _ => "jsonl.gz",
    };
    let path = common::scratch(body, ext);
    common::records(&path);
});
