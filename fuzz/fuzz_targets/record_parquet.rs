//! A Parquet data file, read as `run` reads records: the footer's row count, then each row as a
//! record, token ids, truncation.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    dpo_lora::errors::install_panic_hook();
    let path = common::scratch(data, "parquet");
    let _ = dpo_lora::data::files::count_rows(&path);
    common::records(&path);
});
