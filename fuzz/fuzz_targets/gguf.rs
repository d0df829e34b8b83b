//! A GGUF file as `inspect`, `score` and `run` open it: the header and metadata, the
//! architecture's config, the tokenizer, the tensors (loaded for the CPU kernels), then a
//! forward over three tokens when everything loaded.
#![no_main]
use libfuzzer_sys::fuzz_target;

use dpo_lora::gguf::GgufFile;
use dpo_lora::model::Config;
use dpo_lora::model::{Adapters, Execution, Model, Scored};
use dpo_lora::tokenizer::Tokenizer;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch(data, "gguf");
    let Ok(f) = GgufFile::open(&path) else {
        return;
    };
    let _ = f.type_counts();
    let _ = Tokenizer::from_gguf(&f).map(|t| t.encode("Hello, world", true));
    let Ok(cfg) = Config::from_gguf(&f) else {
        return;
    };
    let Ok(model) = Model::load(&f, &Execution::cpu()) else {
        return;
    };
    let ids: Vec<u32> = (0..3u32).map(|i| i % cfg.vocab.max(1) as u32).collect();
    let _ = model.sequence_logps(
        &[Scored {
            ids: &ids,
            score_from: 1,
        }],
        Adapters::Off,
    );
});
