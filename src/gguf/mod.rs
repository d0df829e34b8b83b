//! GGUF files: open one as untrusted input, read typed metadata, load tensors.
//!
//! Owns: the only place that opens a `.gguf` and interprets its key/value metadata, and which
//! tensor types fit a row length ([`fit_type`], llama-quantize's fallbacks). It does not
//! know architectures (see `model::config`) or tokenizers (see `tokenizer`); it hands them typed
//! getters whose errors name the file and the key.
//!
//! Reading uses candle's `gguf_file` (which already bounds-checks counts and offsets); every
//! tensor's declared shape and type is checked again here before any data is read.
//! Reference: the GGUF spec in ggml's `docs/gguf.md`.

pub mod write;

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

/// An error in a GGUF file; the message names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: cannot open: {err}")]
    Open { path: PathBuf, err: std::io::Error },
    #[error("{path}: not a readable GGUF file ({reason}); is it truncated or not a .gguf?")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: metadata key `{key}` is missing")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: metadata key `{key}` has type {found}, expected {expected}")]
    KeyType {
        path: PathBuf,
        key: String,
        found: String,
        expected: &'static str,
    },
    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor `{name}` has shape {found:?}, the metadata implies {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error(
        "{path}: tensor `{name}` has type {found:?}; supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K"
    )]
    UnsupportedType {
        path: PathBuf,
        name: String,
        found: GgmlDType,
    },
    #[error("{path}: tensor `{name}`: {reason}")]
    Tensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
}

pub type Result<T> = std::result::Result<T, GgufError>;

/// The quant types whose blocks we can dequantize (everything candle reads except Q8_1/Q8_K,
/// which are activation-only types that no model file should carry).
pub fn is_supported(dtype: GgmlDType) -> bool {
    use GgmlDType::*;
    matches!(
        dtype,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K
    )
}

/// The type a matrix with rows of `cols` values gets when `want` is asked for: `want` if its
/// block fits, else llama.cpp's fallback (k-quants need 256-value blocks), as llama-quantize picks it.
pub fn fit_type(want: GgmlDType, cols: usize) -> GgmlDType {
    if cols.is_multiple_of(want.block_size()) {
        return want;
    }
    let fallback = match want {
        GgmlDType::Q2K | GgmlDType::Q3K => GgmlDType::Q4_0,
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        _ => GgmlDType::F16,
    };
    if cols.is_multiple_of(fallback.block_size()) {
        fallback
    } else {
        GgmlDType::F16
    }
}

/// An opened GGUF file: its metadata and tensor directory, tensors not yet read.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    reader: std::cell::RefCell<BufReader<File>>,
    /// Size of the file in bytes.
    pub file_size: u64,
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|err| GgufError::Open {
            path: path.clone(),
            err,
        })?;
        let file_size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| GgufError::Corrupt {
            path: path.clone(),
            reason: first_line(&e.to_string()),
        })?;
        if content.tensor_data_offset > file_size {
            return Err(GgufError::Corrupt {
                path,
                reason: "tensor data starts past the end of the file".into(),
            });
        }
        Ok(Self {
            path,
            content,
            reader: std::cell::RefCell::new(reader),
            file_size,
        })
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    pub fn has(&self, key: &str) -> bool {
        self.content.metadata.contains_key(key)
    }

    fn get(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| GgufError::MissingKey {
                path: self.path.clone(),
                key: key.to_string(),
            })
    }

    fn type_err(&self, key: &str, v: &Value, expected: &'static str) -> GgufError {
        GgufError::KeyType {
            path: self.path.clone(),
            key: key.to_string(),
            found: format!("{:?}", v.value_type()),
            expected,
        }
    }

    /// An unsigned integer of any width (GGUF writers disagree on u32 vs u64 vs i32).
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key)?;
        let n: Option<i128> = match v {
            Value::U8(x) => Some(*x as i128),
            Value::I8(x) => Some(*x as i128),
            Value::U16(x) => Some(*x as i128),
            Value::I16(x) => Some(*x as i128),
            Value::U32(x) => Some(*x as i128),
            Value::I32(x) => Some(*x as i128),
            Value::U64(x) => Some(*x as i128),
            Value::I64(x) => Some(*x as i128),
            _ => None,
        };
        match n {
            Some(n) if (0..=(1i128 << 40)).contains(&n) => Ok(n as usize),
            _ => Err(self.type_err(key, v, "a non-negative integer")),
        }
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        if self.has(key) {
            self.get_usize(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.get(key)?;
        match v {
            Value::F32(x) => Ok(*x as f64),
            Value::F64(x) => Ok(*x),
            _ => Err(self.type_err(key, v, "a float")),
        }
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        if self.has(key) {
            self.get_f64(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.type_err(key, v, "a bool")),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.get(key)?;
        match v {
            Value::String(s) => Ok(s.as_str()),
            _ => Err(self.type_err(key, v, "a string")),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        if self.has(key) {
            self.get_str(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An array of strings (e.g. `tokenizer.ggml.tokens`).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.get(key)?;
        let Value::Array(items) = v else {
            return Err(self.type_err(key, v, "an array of strings"));
        };
        items
            .iter()
            .map(|it| match it {
                Value::String(s) => Ok(s.as_str()),
                other => Err(self.type_err(key, other, "an array of strings")),
            })
            .collect()
    }

    /// An array of numbers as f32 (e.g. `tokenizer.ggml.scores`).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        let v = self.get(key)?;
        let Value::Array(items) = v else {
            return Err(self.type_err(key, v, "an array of floats"));
        };
        items
            .iter()
            .map(|it| match it {
                Value::F32(x) => Ok(*x),
                Value::F64(x) => Ok(*x as f32),
                other => Err(self.type_err(key, other, "an array of floats")),
            })
            .collect()
    }

    /// An array of integers as i64 (e.g. `tokenizer.ggml.token_type`).
    pub fn get_int_array(&self, key: &str) -> Result<Vec<i64>> {
        let v = self.get(key)?;
        let Value::Array(items) = v else {
            return Err(self.type_err(key, v, "an array of integers"));
        };
        items
            .iter()
            .map(|it| match it {
                Value::U8(x) => Ok(*x as i64),
                Value::I8(x) => Ok(*x as i64),
                Value::U16(x) => Ok(*x as i64),
                Value::I16(x) => Ok(*x as i64),
                Value::U32(x) => Ok(*x as i64),
                Value::I32(x) => Ok(*x as i64),
                Value::U64(x) => Ok(*x as i64),
                Value::I64(x) => Ok(*x),
                other => Err(self.type_err(key, other, "an array of integers")),
            })
            .collect()
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Tensor names in the order their data lies in the file (the order writers keep).
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut v: Vec<(&str, u64)> = self
            .content
            .tensor_infos
            .iter()
            .map(|(n, i)| (n.as_str(), i.offset))
            .collect();
        v.sort_by_key(|(_, off)| *off);
        v.into_iter().map(|(n, _)| n).collect()
    }

    /// Shape of a tensor in candle order (rows first: a `(out, in)` matrix for a linear weight).
    pub fn tensor_shape(&self, name: &str) -> Option<&[usize]> {
        self.content.tensor_infos.get(name).map(|t| t.shape.dims())
    }

    /// Count of tensors per quant type, for `inspect`.
    pub fn type_counts(&self) -> Vec<(GgmlDType, usize)> {
        let mut counts: Vec<(GgmlDType, usize)> = Vec::new();
        for info in self.content.tensor_infos.values() {
            match counts.iter_mut().find(|(t, _)| *t == info.ggml_dtype) {
                Some((_, n)) => *n += 1,
                None => counts.push((info.ggml_dtype, 1)),
            }
        }
        counts.sort_by_key(|(t, _)| format!("{t:?}"));
        counts
    }

    /// Read a tensor, checking its type is supported and its shape is `expected` (candle order).
    pub fn tensor(&self, name: &str, expected: &[usize], device: &Device) -> Result<QTensor> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| GgufError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        if !is_supported(info.ggml_dtype) {
            return Err(GgufError::UnsupportedType {
                path: self.path.clone(),
                name: name.to_string(),
                found: info.ggml_dtype,
            });
        }
        if info.shape.dims() != expected {
            return Err(GgufError::Shape {
                path: self.path.clone(),
                name: name.to_string(),
                found: info.shape.dims().to_vec(),
                expected: expected.to_vec(),
            });
        }
        let last = *expected.last().unwrap_or(&1);
        if !last.is_multiple_of(info.ggml_dtype.block_size()) {
            return Err(GgufError::Tensor {
                path: self.path.clone(),
                name: name.to_string(),
                reason: format!(
                    "row length {last} is not a multiple of the {:?} block size {}",
                    info.ggml_dtype,
                    info.ggml_dtype.block_size()
                ),
            });
        }
        // The data's size, from dimensions read from the file: checked before candle allocates
        // a buffer of that size (an overflowing product panicked there; found by fuzzing).
        let dtype = info.ggml_dtype;
        let end = expected
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| (n / dtype.block_size()).checked_mul(dtype.type_size()))
            .and_then(|bytes| u64::try_from(bytes).ok())
            .and_then(|bytes| {
                self.content
                    .tensor_data_offset
                    .checked_add(info.offset)?
                    .checked_add(bytes)
            });
        if end.is_none_or(|end| end > self.file_size) {
            return Err(GgufError::Tensor {
                path: self.path.clone(),
                name: name.to_string(),
                reason: format!(
                    "its data ({expected:?} {dtype:?} at offset {}) runs past the end of the {}-byte file; is the file truncated?",
                    info.offset, self.file_size
                ),
            });
        }
        let mut reader = self.reader.borrow_mut();
        info.read(&mut *reader, self.content.tensor_data_offset, device)
            .map_err(|e| GgufError::Tensor {
                path: self.path.clone(),
                name: name.to_string(),
                reason: first_line(&e.to_string()),
            })
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}
