//! tokenizer.json and friends from GGUF metadata (placeholder until the writer lands).

use std::path::Path;

use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;

pub fn write_tokenizer_files(_f: &GgufFile, _tok: &Tokenizer, _dir: &Path) -> anyhow::Result<()> {
    anyhow::bail!("tokenizer files are not written yet")
}
