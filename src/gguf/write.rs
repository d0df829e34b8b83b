//! Write a GGUF file atomically, plus small builders for metadata [`Value`]s.
//!
//! Owns: turning `(key, Value)` metadata and named tensors into a file on disk, all in memory
//! ([`write_gguf`]) or streamed a tensor at a time ([`write_gguf_streamed`], for 8B-sized
//! synthetic models). The bytes are what candle's `gguf_file::write` writes (GGUF v2, 32-byte
//! alignment, dims reversed into GGUF order, so
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

use std::io::Write;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};

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
    let infos: Vec<TensorInfo> = tensors
        .iter()
        .map(|(n, t)| TensorInfo {
            name: n.clone(),
            shape: t.shape().dims().to_vec(),
            dtype: t.dtype(),
        })
        .collect();
    write_gguf_streamed(path, metadata, &infos, |i| {
        tensors[i].1.data().map_err(|e| e.to_string())
    })
}

/// What the header says of one tensor: name, candle-order shape, type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: GgmlDType,
}

impl TensorInfo {
    /// Bytes of the tensor's data (`None`: rows that do not fill the type's blocks).
    pub fn size_in_bytes(&self) -> Option<usize> {
        let n: usize = self.shape.iter().product();
        let block = self.dtype.block_size();
        n.is_multiple_of(block)
            .then(|| n / block * self.dtype.type_size())
    }
}

/// [`write_gguf`] with each tensor's bytes asked for only when it is written (`data(i)` for
/// `infos[i]`, in order): memory of one tensor, not of the model. The header is written from
/// `infos` first; a `data(i)` of the wrong length is an error, and nothing is left at `path`.
pub fn write_gguf_streamed<'a>(
    path: &Path,
    metadata: &[(String, Value)],
    infos: &[TensorInfo],
    mut data: impl FnMut(usize) -> std::result::Result<std::borrow::Cow<'a, [u8]>, String>,
) -> Result<()> {
    // A repeated key or tensor name would be silently shadowed by a reader's hash map.
    check_unique(path, "metadata key", metadata.iter().map(|(k, _)| k))?;
    check_unique(path, "tensor name", infos.iter().map(|t| &t.name))?;
    if path.file_name().is_none() {
        return Err(GgufWriteError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let io_err = |err| GgufWriteError::Io {
        path: path.to_path_buf(),
        err,
    };
    let enc_err = |reason: String| GgufWriteError::Encode {
        path: path.to_path_buf(),
        reason,
    };
    let mut sizes = Vec::with_capacity(infos.len());
    for t in infos {
        sizes.push(t.size_in_bytes().ok_or_else(|| {
            enc_err(format!(
                "`{}` of shape {:?} does not fill whole {:?} blocks",
                t.name, t.shape, t.dtype
            ))
        })?);
    }
    let mut staged = StagedFile::create(path).map_err(io_err)?;
    let w = staged.writer();
    let mut header = Vec::new();
    encode_header(&mut header, metadata, infos, &sizes).map_err(enc_err)?;
    w.write_all(&header).map_err(io_err)?;
    w.write_all(&[0u8; ALIGN][..pad(header.len())])
        .map_err(io_err)?;
    for (i, (t, &size)) in infos.iter().zip(&sizes).enumerate() {
        let bytes = data(i).map_err(|e| enc_err(format!("`{}`: {e}", t.name)))?;
        if bytes.len() != size {
            return Err(enc_err(format!(
                "`{}`: {} bytes of data for a {:?} tensor of shape {:?} ({size} bytes)",
                t.name,
                bytes.len(),
                t.dtype,
                t.shape
            )));
        }
        w.write_all(&bytes).map_err(io_err)?;
        w.write_all(&[0u8; ALIGN][..pad(size)]).map_err(io_err)?;
    }
    staged.commit().map_err(io_err)
}

/// GGUF's default alignment of the data section and of each tensor in it.
const ALIGN: usize = 32;

fn pad(n: usize) -> usize {
    (ALIGN - n % ALIGN) % ALIGN
}

/// GGUF v2 header: magic, version, counts, metadata, tensor infos (dims reversed into GGUF
/// order, offsets from the start of the data section).
fn encode_header(
    out: &mut Vec<u8>,
    metadata: &[(String, Value)],
    infos: &[TensorInfo],
    sizes: &[usize],
) -> std::result::Result<(), String> {
    out.extend(0x4655_4747u32.to_le_bytes());
    out.extend(2u32.to_le_bytes());
    out.extend((infos.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_string(out, k);
        out.extend(value_type(v).to_le_bytes());
        put_value(out, v).map_err(|e| format!("metadata `{k}`: {e}"))?;
    }
    let mut offset = 0u64;
    for (t, &size) in infos.iter().zip(sizes) {
        put_string(out, &t.name);
        out.extend((t.shape.len() as u32).to_le_bytes());
        for &d in t.shape.iter().rev() {
            out.extend((d as u64).to_le_bytes());
        }
        out.extend(ggml_type_id(t.dtype).to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (size + pad(size)) as u64;
    }
    Ok(())
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// GGUF's value type ids.
fn value_type(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) -> std::result::Result<(), String> {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend(x.to_le_bytes()),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_string(out, s),
        Value::Array(items) => {
            let ty = items.first().map_or(4, value_type);
            if items.iter().any(|x| value_type(x) != ty) {
                return Err("an array mixes value types".into());
            }
            out.extend(ty.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for x in items {
                put_value(out, x)?;
            }
        }
    }
    Ok(())
}

/// ggml's type ids (`enum ggml_type`).
fn ggml_type_id(t: GgmlDType) -> u32 {
    match t {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q5_0 => 6,
        GgmlDType::Q5_1 => 7,
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q8_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 11,
        GgmlDType::Q4K => 12,
        GgmlDType::Q5K => 13,
        GgmlDType::Q6K => 14,
        GgmlDType::Q8K => 15,
        GgmlDType::BF16 => 30,
    }
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
    fn the_bytes_are_candles_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let q4 = QTensor::quantize(
            &Tensor::from_vec(
                crate::synth::uniform_values(3 * 256, 1, 1.0),
                (3, 256),
                &Device::Cpu,
            )
            .unwrap(),
            GgmlDType::Q4K,
        )
        .unwrap();
        let mut md = md();
        md.push(("x.flag".into(), Value::Bool(true)));
        md.push(("x.f64".into(), Value::F64(0.25)));
        let tensors = vec![
            ("w.weight".to_string(), matrix()),
            ("q.weight".to_string(), q4),
        ];
        write_gguf(&path, &md, &tensors).unwrap();
        let mut theirs = std::io::Cursor::new(Vec::new());
        let m: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let t: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        candle_core::quantized::gguf_file::write(&mut theirs, &m, &t).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), theirs.into_inner());
    }

    #[test]
    fn a_tensor_of_the_wrong_size_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let info = TensorInfo {
            name: "w".into(),
            shape: vec![2, 32],
            dtype: GgmlDType::F32,
        };
        let err = write_gguf_streamed(&path, &md(), &[info], |_| Ok(vec![0u8; 8].into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("8 bytes") && err.contains("256 bytes"),
            "{err}"
        );
        assert!(files_in(dir.path()).is_empty());
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
