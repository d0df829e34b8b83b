//! Write a GGUF file atomically, plus small builders for metadata [`Value`]s.
//!
//! Owns: turning `(key, Value)` metadata and named [`QTensor`]s into a file on disk. The bytes
//! are candle's `gguf_file::write` (GGUF v2, 32-byte alignment, dims reversed into GGUF order, so
//! a linear weight is passed as a `(out_features, in_features)` QTensor and lands as
//! `ne = [in, out]`, exactly as llama.cpp's converter writes it). It does not know architectures
//! or names: callers (synthetic test models, `export`) decide what goes in.
//!
//! Atomicity: the file is written through `atomic::StagedFile` (a hidden temporary beside the
//! destination, synced, renamed, folder synced). A failed write removes the temporary file and
//! leaves whatever was at `path` before untouched; a reader never sees half a file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::atomic::StagedFile;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::QTensor;

/// An error while writing a GGUF file; the message names the destination.
#[derive(Debug, thiserror::Error)]
pub enum GgufWriteError {
    #[error("{path}: cannot write: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: cannot encode as GGUF: {reason}")]
    Encode { path: PathBuf, reason: String },
    #[error("{path}: {what} `{name}` is given twice; every GGUF {what} must be unique")]
    Duplicate {
        path: PathBuf,
        what: &'static str,
        name: String,
    },
    #[error("{path}: not a file path (it has no file name)")]
    NotAFile { path: PathBuf },
}

pub type Result<T> = std::result::Result<T, GgufWriteError>;

/// Write `metadata` then `tensors` (in the order given) to `path`, atomically.
///
/// Tensor shapes are candle order (rows first); see the module docs.
pub fn write_gguf(
    path: &Path,
    metadata: &[(String, Value)],
    tensors: &[(String, QTensor)],
) -> Result<()> {
    // A repeated key or tensor name would be silently shadowed by a reader's hash map.
    check_unique(path, "metadata key", metadata.iter().map(|(k, _)| k))?;
    check_unique(path, "tensor name", tensors.iter().map(|(n, _)| n))?;

    if path.file_name().is_none() {
        return Err(GgufWriteError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let io_err = |err| GgufWriteError::Io {
        path: path.to_path_buf(),
        err,
    };
    let mut staged = StagedFile::create(path).map_err(io_err)?;
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    gguf_file::write(staged.writer(), &md, &ts).map_err(|e| GgufWriteError::Encode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    staged.commit().map_err(io_err)
}

fn check_unique<'a>(
    path: &Path,
    what: &'static str,
    names: impl Iterator<Item = &'a String>,
) -> Result<()> {
    let mut seen = HashSet::new();
    for name in names {
        if !seen.insert(name.as_str()) {
            return Err(GgufWriteError::Duplicate {
                path: path.to_path_buf(),
                what,
                name: name.clone(),
            });
        }
    }
    Ok(())
}

/// A GGUF string.
pub fn string(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// A GGUF array of strings (e.g. `tokenizer.ggml.tokens`, `tokenizer.ggml.merges`).
pub fn string_array<S: AsRef<str>>(items: &[S]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|s| Value::String(s.as_ref().to_string()))
            .collect(),
    )
}

/// A GGUF array of f32 (e.g. `tokenizer.ggml.scores`).
pub fn f32_array(items: &[f32]) -> Value {
    Value::Array(items.iter().map(|&x| Value::F32(x)).collect())
}

/// A GGUF array of i32 (e.g. `tokenizer.ggml.token_type`).
pub fn i32_array(items: &[i32]) -> Value {
    Value::Array(items.iter().map(|&x| Value::I32(x)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;
    use candle_core::quantized::GgmlDType;
    use candle_core::{Device, Tensor};

    fn md() -> Vec<(String, Value)> {
        vec![
            ("general.architecture".into(), string("llama")),
            ("llama.block_count".into(), Value::U32(2)),
            ("tokenizer.ggml.tokens".into(), string_array(&["a", "b"])),
            ("tokenizer.ggml.scores".into(), f32_array(&[0.5, -1.0])),
            ("tokenizer.ggml.token_type".into(), i32_array(&[1, 3])),
        ]
    }

    /// A (3, 32) matrix whose element (r, c) is `r * 100 + c`, so orientation is visible.
    fn matrix() -> QTensor {
        let data: Vec<f32> = (0..3)
            .flat_map(|r| (0..32).map(move |c| (r * 100 + c) as f32))
            .collect();
        let t = Tensor::from_vec(data, (3, 32), &Device::Cpu).unwrap();
        QTensor::quantize(&t, GgmlDType::F32).unwrap()
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn round_trips_metadata_and_rows_first_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        write_gguf(&path, &md(), &[("w.weight".into(), matrix())]).unwrap();
        assert_eq!(
            files_in(dir.path()),
            vec!["m.gguf"],
            "temp file left behind"
        );

        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(f.get_usize("llama.block_count").unwrap(), 2);
        assert_eq!(
            f.get_str_array("tokenizer.ggml.tokens").unwrap(),
            ["a", "b"]
        );
        assert_eq!(
            f.get_f32_array("tokenizer.ggml.scores").unwrap(),
            [0.5, -1.0]
        );
        assert_eq!(
            f.get_int_array("tokenizer.ggml.token_type").unwrap(),
            [1, 3]
        );
        assert_eq!(f.tensor_shape("w.weight"), Some(&[3usize, 32][..]));
        let t = f.tensor("w.weight", &[3, 32], &Device::Cpu).unwrap();
        let back = t.dequantize(&Device::Cpu).unwrap();
        assert_eq!(
            back.get(2)
                .unwrap()
                .get(5)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            205.0
        );
    }

    #[test]
    fn gguf_order_on_disk_is_reversed() {
        // The 4th u64 after the tensor name is ne0; for a (3, 32) QTensor it must be 32.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        write_gguf(&path, &[], &[("w".into(), matrix())]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        // magic, version u32, n_tensors u64, n_kv u64, name len u64, "w", n_dims u32, ne0, ne1
        let at = 4 + 4 + 8 + 8 + 8 + 1 + 4;
        let ne0 = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let ne1 = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        assert_eq!((ne0, ne1), (32, 3));
    }

    #[test]
    fn failed_encode_keeps_the_old_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        write_gguf(&path, &md(), &[]).unwrap();
        let before = std::fs::read(&path).unwrap();

        // candle refuses arrays whose items differ in type: the failure comes mid-write.
        let bad = vec![(
            "bad".to_string(),
            Value::Array(vec![Value::U32(1), Value::F32(1.0)]),
        )];
        let err = write_gguf(&path, &bad, &[]).unwrap_err();
        assert!(matches!(err, GgufWriteError::Encode { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(files_in(dir.path()), vec!["m.gguf"]);
    }

    #[test]
    fn missing_directory_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no_such_dir").join("m.gguf");
        let err = write_gguf(&path, &md(), &[]).unwrap_err();
        assert!(matches!(err, GgufWriteError::Io { .. }), "{err}");
        assert!(err.to_string().contains("no_such_dir"), "{err}");
        assert!(files_in(dir.path()).is_empty());
    }

    #[test]
    fn duplicate_names_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let mut meta = md();
        meta.push(("llama.block_count".into(), Value::U32(3)));
        let err = write_gguf(&path, &meta, &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("`llama.block_count` is given twice"),
            "{err}"
        );
        let err = write_gguf(
            &path,
            &[],
            &[("w".into(), matrix()), ("w".into(), matrix())],
        )
        .unwrap_err();
        assert!(matches!(
            err,
            GgufWriteError::Duplicate {
                what: "tensor name",
                ..
            }
        ));
        assert!(files_in(dir.path()).is_empty());
    }
}
