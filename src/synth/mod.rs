//! Random models written as GGUF (tiny ones for tests, or a real model's shape from
//! [`shapes`], streamed tensor by tensor), in exactly the layout llama.cpp's converter
//! (`convert_hf_to_gguf.py`) writes for each architecture, so tests and the `tiny` recipe run
//! the real loading path: same metadata keys, tensor names, shapes and types as a downloaded file.
//!
//! Owns: [`SynthSpec`] (sizes, quant types, seed, vocabulary size) -> metadata + tensors -> one
//! `.gguf`, through [`crate::gguf::write::write_gguf_streamed`] (a tensor drawn only when it is
//! written). It does not load or run models.
//!
//! Layout per architecture (`{a}` = `llama` | `qwen2` | `qwen3` | `gemma3`; shapes rows first,
//! candle order, `q = n_head * head_dim`, `kv = n_kv_head * head_dim`):
//! ```text
//! token_embd.weight          (vocab, hidden)   embed_type
//! blk.N.attn_norm.weight     (hidden)          F32
//! blk.N.attn_q.weight        (q, hidden)       weight_type   (attn_k, attn_v: (kv, hidden))
//! blk.N.attn_output.weight   (hidden, q)       weight_type
//! blk.N.attn_{q,k,v}.bias    (q | kv)          F32           qwen2 only
//! blk.N.attn_{q,k}_norm.weight (head_dim)      F32           qwen3, gemma3
//! blk.N.post_attention_norm.weight (hidden)    F32           gemma3
//! blk.N.ffn_norm.weight      (hidden)          F32
//! blk.N.ffn_{gate,up}.weight (ffn, hidden)     weight_type
//! blk.N.ffn_down.weight      (hidden, ffn)     weight_type
//! blk.N.post_ffw_norm.weight (hidden)          F32           gemma3
//! output_norm.weight         (hidden)          F32
//! output.weight              (vocab, hidden)   embed_type    only when not tied
//! ```
//! Gemma's norm weights are stored as `1 + w` (the converter adds the 1), so every norm here is
//! `1 + N(0, 0.1²)` whatever the architecture. Matrices are `N(0, 1/in_features)` and the
//! embedding `N(0, 1/hidden)`, so activations and tied logits stay O(1); biases `N(0, 0.1²)`.
//! llama.cpp's converter also permutes llama's Q/K rows for RoPE; on random weights that is
//! invisible, so nothing here does it.
//!
//! Gemma 3 alternates sliding-window and global attention; llama.cpp hard-codes "every 6th layer
//! is global" (layer `i` global iff `(i + 1) % 6 == 0`) unless the file carries
//! `gemma3.attention.sliding_window_pattern` (a u32 period; gguf-py's `add_sliding_window_pattern`).
//! Our loader reads that key when present and otherwise uses 6. [`SynthSpec::gemma3_global_every`]
//! is written to that key only when it is not 6, so a 2-layer test model can have both kinds.
//!
//! Random numbers: splitmix64 seeded per tensor from `(seed, tensor name)`, so the same spec
//! always gives the same bytes, independent of `rand`'s version, and adding a layer does not
//! change the ones before it.

pub mod shapes;
mod vocab;

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::gguf::write::{string, write_gguf_streamed, GgufWriteError, TensorInfo};
use crate::rng::{fnv1a, SplitMix64};

/// llama.cpp's default Gemma 3 period of global layers.
pub const GEMMA3_DEFAULT_GLOBAL_EVERY: usize = 6;

/// An architecture as llama.cpp names it in `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthArch {
    Llama,
    Qwen2,
    Qwen3,
    Gemma3,
}

impl SynthArch {
    pub const ALL: [SynthArch; 4] = [Self::Llama, Self::Qwen2, Self::Qwen3, Self::Gemma3];

    /// The `general.architecture` string and metadata key prefix.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma3 => "gemma3",
        }
    }

    /// (`rope.freq_base`, `attention.layer_norm_rms_epsilon`) as the real models have them.
    fn rope_and_eps(self) -> (f32, f32) {
        match self {
            Self::Llama => (100_000.0, 1e-5), // SmolLM2
            Self::Qwen2 | Self::Qwen3 | Self::Gemma3 => (1_000_000.0, 1e-6),
        }
    }
}

/// Sizes, types and seed of a synthetic model.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    pub arch: SynthArch,
    /// Type of the 2-D linear weights (attention and MLP); norms and biases stay F32.
    pub weight_type: GgmlDType,
    /// Type of `token_embd.weight` (and `output.weight` when not tied).
    pub embed_type: GgmlDType,
    /// No `output.weight`: the head reuses `token_embd.weight`.
    pub tied: bool,
    pub seed: u64,
    pub hidden: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ffn: usize,
    /// Gemma 3 only: `gemma3.attention.sliding_window`.
    pub sliding_window: usize,
    /// Gemma 3 only: layer `i` is global iff `(i + 1) % gemma3_global_every == 0`.
    pub gemma3_global_every: usize,
    /// `tokenizer.chat_template` in place of the vocabulary's own (a model's real template).
    pub chat_template: Option<String>,
    /// Tokens in the vocabulary, filler tokens added to the synthetic tokenizer's own (`None`:
    /// its own few hundred). A real model's size makes the embedding and head real-sized.
    pub vocab: Option<usize>,
    /// A matrix whose rows do not fill `weight_type`'s blocks takes llama-quantize's fallback
    /// type (`gguf::fit_type`) instead of being refused.
    pub fallback: bool,
    /// Zero bytes for every tensor instead of drawn values: the header, sizes and file size are
    /// the real shape's, written in seconds, for `dpo-lora plan` (the model computes nothing).
    pub zeros: bool,
}

/// The largest vocabulary a spec may ask for (Gemma 3's is 262,208).
const MAX_VOCAB: usize = 1 << 20;

/// An error building a synthetic model; the message names what to change.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("synthetic {arch} model: {reason}")]
    Spec { arch: &'static str, reason: String },
    #[error("synthetic tensor `{name}`: cannot build as {dtype:?}: {reason}")]
    Tensor {
        name: String,
        dtype: GgmlDType,
        reason: String,
    },
    #[error(transparent)]
    Write(#[from] GgufWriteError),
}

/// One tensor a spec writes: its GGUF name, candle shape (rows first) and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: GgmlDType,
    init: Init,
}

/// How a tensor's values are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Init {
    /// `1 + N(0, 0.1²)`.
    Norm,
    /// `N(0, 0.1²)`.
    Bias,
    /// `N(0, 1 / fan_in)`, fan_in = the last dim.
    Matrix,
}

/// Rows quantized per task when a matrix is spread over the cores.
const ROWS_PER_TASK: usize = 256;

/// The largest size (and layer count) a spec may ask for.
const MAX_SIZE: usize = 65_536;

impl SynthSpec {
    /// The test model: 2 layers, hidden 256 (a multiple of 256 so K-quants fit), 4 heads of 64
    /// with 2 kv heads, ffn 512, F32, tied. Gemma 3: 1 kv head, sliding window 4 (so the window
    /// matters in short tests) and a global layer every 2 (layer 0 sliding, layer 1 global).
    pub fn tiny(arch: SynthArch) -> Self {
        let gemma = arch == SynthArch::Gemma3;
        Self {
            arch,
            weight_type: GgmlDType::F32,
            embed_type: GgmlDType::F32,
            tied: true,
            seed: 0x5EED_D0E5,
            hidden: 256,
            n_layer: 2,
            n_head: 4,
            n_kv_head: if gemma { 1 } else { 2 },
            head_dim: 64,
            ffn: 512,
            sliding_window: if gemma { 4 } else { 0 },
            gemma3_global_every: if gemma {
                2
            } else {
                GEMMA3_DEFAULT_GLOBAL_EVERY
            },
            chat_template: None,
            vocab: None,
            fallback: false,
            zeros: false,
        }
    }

    /// A real model's shape ([`shapes::SHAPES`]), `q4_k` weights and embedding as people
    /// download Q4_K_M (rows that do not fit 256-value blocks take llama-quantize's fallback).
    pub fn from_shape(s: &shapes::Shape) -> Self {
        Self {
            arch: s.arch,
            weight_type: GgmlDType::Q4K,
            embed_type: GgmlDType::Q4K,
            tied: s.tied,
            seed: 0x5EED_D0E5,
            hidden: s.hidden,
            n_layer: s.n_layer,
            n_head: s.n_head,
            n_kv_head: s.n_kv_head,
            head_dim: s.head_dim,
            ffn: s.ffn,
            sliding_window: s.sliding_window,
            gemma3_global_every: GEMMA3_DEFAULT_GLOBAL_EVERY,
            chat_template: None,
            vocab: Some(s.vocab),
            fallback: true,
            zeros: false,
        }
    }

    /// Number of tokens, which is also the row count of `token_embd.weight`.
    pub fn vocab_size(&self) -> usize {
        self.vocab().tokens.len()
    }

    fn vocab(&self) -> vocab::Vocab {
        match self.arch {
            SynthArch::Llama => vocab::gpt2("llama-bpe", self.vocab),
            SynthArch::Qwen2 | SynthArch::Qwen3 => vocab::gpt2("qwen2", self.vocab),
            SynthArch::Gemma3 => vocab::gemma(self.vocab),
        }
    }

    /// The type a matrix with rows of `cols` is written in.
    fn matrix_type(&self, want: GgmlDType, cols: usize) -> GgmlDType {
        if self.fallback {
            crate::gguf::fit_type(want, cols)
        } else {
            want
        }
    }

    /// Every tensor this spec writes, in file order.
    pub fn tensors(&self) -> Vec<SynthTensor> {
        let (h, q, kv) = (
            self.hidden,
            self.n_head * self.head_dim,
            self.n_kv_head * self.head_dim,
        );
        let f32 = GgmlDType::F32;
        let t = |name: String, shape: Vec<usize>, dtype: GgmlDType, init| SynthTensor {
            dtype: if shape.len() == 2 {
                self.matrix_type(dtype, shape[1])
            } else {
                dtype
            },
            name,
            shape,
            init,
        };
        let wt = self.weight_type;
        let vocab = self.vocab_size();
        let mut out = vec![t(
            "token_embd.weight".into(),
            vec![vocab, h],
            self.embed_type,
            Init::Matrix,
        )];
        let (qwen2, qk_norm, gemma) = match self.arch {
            SynthArch::Llama => (false, false, false),
            SynthArch::Qwen2 => (true, false, false),
            SynthArch::Qwen3 => (false, true, false),
            SynthArch::Gemma3 => (false, true, true),
        };
        for i in 0..self.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            out.push(t(n("attn_norm.weight"), vec![h], f32, Init::Norm));
            out.push(t(n("attn_q.weight"), vec![q, h], wt, Init::Matrix));
            out.push(t(n("attn_k.weight"), vec![kv, h], wt, Init::Matrix));
            out.push(t(n("attn_v.weight"), vec![kv, h], wt, Init::Matrix));
            if qwen2 {
                out.push(t(n("attn_q.bias"), vec![q], f32, Init::Bias));
                out.push(t(n("attn_k.bias"), vec![kv], f32, Init::Bias));
                out.push(t(n("attn_v.bias"), vec![kv], f32, Init::Bias));
            }
            if qk_norm {
                out.push(t(
                    n("attn_q_norm.weight"),
                    vec![self.head_dim],
                    f32,
                    Init::Norm,
                ));
                out.push(t(
                    n("attn_k_norm.weight"),
                    vec![self.head_dim],
                    f32,
                    Init::Norm,
                ));
            }
            out.push(t(n("attn_output.weight"), vec![h, q], wt, Init::Matrix));
            if gemma {
                out.push(t(n("post_attention_norm.weight"), vec![h], f32, Init::Norm));
            }
            out.push(t(n("ffn_norm.weight"), vec![h], f32, Init::Norm));
            out.push(t(n("ffn_gate.weight"), vec![self.ffn, h], wt, Init::Matrix));
            out.push(t(n("ffn_up.weight"), vec![self.ffn, h], wt, Init::Matrix));
            out.push(t(n("ffn_down.weight"), vec![h, self.ffn], wt, Init::Matrix));
            if gemma {
                out.push(t(n("post_ffw_norm.weight"), vec![h], f32, Init::Norm));
            }
        }
        out.push(t("output_norm.weight".into(), vec![h], f32, Init::Norm));
        if !self.tied {
            out.push(t(
                "output.weight".into(),
                vec![vocab, h],
                self.embed_type,
                Init::Matrix,
            ));
        }
        out
    }

    /// All metadata this spec writes: model hyperparameters, then the tokenizer.
    pub fn metadata(&self) -> Vec<(String, Value)> {
        let a = self.arch.gguf_name();
        let u32v = |n: usize| Value::U32(n as u32);
        let (rope, eps) = self.arch.rope_and_eps();
        let mut md: Vec<(String, Value)> = vec![
            ("general.architecture".into(), string(a)),
            ("general.type".into(), string("model")),
            ("general.name".into(), string(format!("synth-{a}"))),
            (format!("{a}.block_count"), u32v(self.n_layer)),
            (format!("{a}.context_length"), u32v(2048)),
            (format!("{a}.embedding_length"), u32v(self.hidden)),
            (format!("{a}.feed_forward_length"), u32v(self.ffn)),
            (format!("{a}.attention.head_count"), u32v(self.n_head)),
            (format!("{a}.attention.head_count_kv"), u32v(self.n_kv_head)),
            (format!("{a}.rope.freq_base"), Value::F32(rope)),
            (
                format!("{a}.attention.layer_norm_rms_epsilon"),
                Value::F32(eps),
            ),
        ];
        // The converter writes head_dim for qwen3/gemma3 always, for others only when the HF
        // config has one; without it llama.cpp assumes hidden / n_head.
        let explicit_head_dim = matches!(self.arch, SynthArch::Qwen3 | SynthArch::Gemma3)
            || self.n_head * self.head_dim != self.hidden;
        if explicit_head_dim {
            md.push((format!("{a}.attention.key_length"), u32v(self.head_dim)));
            md.push((format!("{a}.attention.value_length"), u32v(self.head_dim)));
        }
        match self.arch {
            SynthArch::Llama => {
                md.push(("llama.vocab_size".into(), u32v(self.vocab_size())));
                md.push(("llama.rope.dimension_count".into(), u32v(self.head_dim)));
            }
            SynthArch::Gemma3 => {
                md.push((
                    "gemma3.attention.sliding_window".into(),
                    u32v(self.sliding_window),
                ));
                if self.gemma3_global_every != GEMMA3_DEFAULT_GLOBAL_EVERY {
                    md.push((
                        "gemma3.attention.sliding_window_pattern".into(),
                        u32v(self.gemma3_global_every),
                    ));
                }
            }
            SynthArch::Qwen2 | SynthArch::Qwen3 => {}
        }
        md.push((
            "general.file_type".into(),
            u32v(file_type(self.weight_type)),
        ));
        md.push(("general.quantization_version".into(), Value::U32(2)));
        let mut tokenizer = self.vocab().metadata;
        if let Some(t) = &self.chat_template {
            tokenizer.retain(|(k, _)| k != "tokenizer.chat_template");
            tokenizer.push(("tokenizer.chat_template".into(), string(t.as_str())));
        }
        md.extend(tokenizer);
        md
    }

    /// Check sizes and quant types before anything is written.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |reason: String| SynthError::Spec {
            arch: self.arch.gguf_name(),
            reason,
        };
        let sizes = [
            ("hidden", self.hidden),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_kv_head", self.n_kv_head),
            ("head_dim", self.head_dim),
            ("ffn", self.ffn),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(bad(format!("{name} is 0; every size must be at least 1")));
        }
        // Checked before anything is drawn: each tensor is drawn as f32 in memory first.
        if let Some((name, v)) = sizes.iter().find(|(_, v)| *v > MAX_SIZE) {
            return Err(bad(format!(
                "{name} {v} is over {MAX_SIZE}; Llama 3 70B's largest size is 28672"
            )));
        }
        if let Some(v) = self.vocab {
            let own = Self {
                vocab: None,
                ..self.clone()
            }
            .vocab_size();
            if v < own || v > MAX_VOCAB {
                return Err(bad(format!(
                    "vocab {v}: choose between the synthetic tokenizer's own {own} tokens and {MAX_VOCAB}"
                )));
            }
        }
        if !self.n_head.is_multiple_of(self.n_kv_head) {
            return Err(bad(format!(
                "n_head {} is not a multiple of n_kv_head {}",
                self.n_head, self.n_kv_head
            )));
        }
        if self.arch == SynthArch::Gemma3
            && (self.sliding_window == 0 || self.gemma3_global_every == 0)
        {
            return Err(bad(
                "gemma3 needs sliding_window >= 1 and gemma3_global_every >= 1".into(),
            ));
        }
        for dtype in [self.weight_type, self.embed_type] {
            if !crate::gguf::is_supported(dtype) {
                return Err(bad(format!("{dtype:?} is not a type model files carry")));
            }
        }
        for t in self.tensors() {
            let row = *t.shape.last().unwrap_or(&1);
            let block = t.dtype.block_size();
            if !row.is_multiple_of(block) {
                return Err(bad(format!(
                    "`{}` has rows of {row}, not a multiple of the {:?} block size {block}; \
                     pick sizes that are multiples of {block} or another type",
                    t.name, t.dtype
                )));
            }
        }
        Ok(())
    }

    /// Draw every tensor and write the model to `path` (atomically; see `gguf::write`), one
    /// tensor in memory at a time, with a progress bar over the bytes when `progress`.
    pub fn write_with(&self, path: &Path, progress: bool) -> Result<(), SynthError> {
        self.validate()?;
        let tensors = self.tensors();
        let infos: Vec<TensorInfo> = tensors
            .iter()
            .map(|t| TensorInfo {
                name: t.name.clone(),
                shape: t.shape.clone(),
                dtype: t.dtype,
            })
            .collect();
        let total: usize = infos.iter().filter_map(|t| t.size_in_bytes()).sum();
        let bar = if progress {
            indicatif::ProgressBar::new(total as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "synth {bar:30} {bytes}/{total_bytes}  {bytes_per_sec}  eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            )
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut failed = None;
        let written = write_gguf_streamed(path, &self.metadata(), &infos, |i| {
            let drawn = if self.zeros {
                Ok(vec![0u8; infos[i].size_in_bytes().unwrap_or(0)])
            } else {
                self.draw_bytes(&tensors[i])
            };
            match drawn {
                Ok(bytes) => {
                    bar.inc(bytes.len() as u64);
                    Ok(bytes.into())
                }
                Err(e) => {
                    let msg = e.to_string();
                    failed = Some(e);
                    Err(msg)
                }
            }
        });
        bar.finish_and_clear();
        match (written, failed) {
            (_, Some(e)) => Err(e),
            (Err(e), None) => Err(e.into()),
            (Ok(()), None) => Ok(()),
        }
    }

    /// [`SynthSpec::write_with`] without a progress bar.
    pub fn write(&self, path: &Path) -> Result<(), SynthError> {
        self.write_with(path, false)
    }

    /// The tensor's bytes as stored: drawn in one stream (so the values do not depend on the
    /// number of cores), quantized in blocks of rows across the cores (a row's blocks do not
    /// depend on other rows, so the bytes are those of one whole-tensor quantization).
    fn draw_bytes(&self, t: &SynthTensor) -> Result<Vec<u8>, SynthError> {
        use rayon::prelude::*;
        let err = |e: candle_core::Error| SynthError::Tensor {
            name: t.name.clone(),
            dtype: t.dtype,
            reason: e.to_string(),
        };
        if t.shape.len() != 2 || t.shape[0] < 2 * ROWS_PER_TASK {
            return self.draw(t)?.data().map(|d| d.into_owned()).map_err(err);
        }
        let values = self.values(t);
        let cols = t.shape[1];
        let parts: Vec<Vec<u8>> = values
            .par_chunks(ROWS_PER_TASK * cols)
            .map(|chunk| {
                let rows = chunk.len() / cols;
                let x = Tensor::from_slice(chunk, (rows, cols), &Device::Cpu)?;
                Ok(QTensor::quantize(&x, t.dtype)?.data()?.into_owned())
            })
            .collect::<candle_core::Result<_>>()
            .map_err(err)?;
        Ok(parts.concat())
    }

    fn values(&self, t: &SynthTensor) -> Vec<f32> {
        let mut rng = SplitMix64::new(self.seed ^ fnv1a(&t.name));
        let n: usize = t.shape.iter().product();
        let fan_in = *t.shape.last().unwrap_or(&1) as f32;
        (0..n)
            .map(|_| {
                let z = rng.normal();
                match t.init {
                    Init::Norm => 1.0 + 0.1 * z,
                    Init::Bias => 0.1 * z,
                    Init::Matrix => z / fan_in.sqrt(),
                }
            })
            .collect()
    }

    fn draw(&self, t: &SynthTensor) -> Result<QTensor, SynthError> {
        let err = |e: candle_core::Error| SynthError::Tensor {
            name: t.name.clone(),
            dtype: t.dtype,
            reason: e.to_string(),
        };
        let tensor =
            Tensor::from_vec(self.values(t), t.shape.as_slice(), &Device::Cpu).map_err(err)?;
        QTensor::quantize(&tensor, t.dtype).map_err(err)
    }
}

/// `general.file_type` (llama.cpp's `llama_ftype`) for a file whose linear weights are `dtype`;
/// K-quants map to the `_M` mixes llama-quantize names them by.
fn file_type(dtype: GgmlDType) -> usize {
    use GgmlDType::*;
    match dtype {
        F32 => 0,
        F16 => 1,
        Q4_0 => 2,
        Q4_1 => 3,
        Q8_0 => 7,
        Q5_0 => 8,
        Q5_1 => 9,
        Q2K => 10,
        Q3K => 12,
        Q4K => 15,
        Q5K => 17,
        Q6K => 18,
        BF16 => 32,
        // Activation-only types; validate() refuses them before this is reached.
        Q8_1 | Q8K => 0,
    }
}

/// FNV-1a of a tensor name: decorrelates the per-tensor streams.
/// `n` values uniform in `[-scale/2, scale/2)`, fixed forever for a seed: the deterministic
/// inputs that tests feed to ops (weights, activations, gradient probes).
pub fn uniform_values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    (0..n)
        .map(|_| ((r.uniform() - 0.5) as f32) * scale)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_and_normal_has_unit_moments() {
        // First output for seed 0 from the reference C implementation (Vigna's splitmix64.c).
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
        let mut r = SplitMix64::new(7);
        let xs: Vec<f64> = (0..20_000).map(|_| r.normal() as f64).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }

    #[test]
    fn quantizing_across_the_cores_gives_the_bytes_of_one_quantization() {
        let mut s = SynthSpec::tiny(SynthArch::Llama);
        s.weight_type = GgmlDType::Q4K;
        s.ffn = 2048;
        let t = s
            .tensors()
            .into_iter()
            .find(|t| t.name == "blk.0.ffn_up.weight")
            .unwrap();
        assert!(t.shape[0] >= 2 * ROWS_PER_TASK);
        let whole = s.draw(&t).unwrap().data().unwrap().into_owned();
        assert_eq!(s.draw_bytes(&t).unwrap(), whole);
    }

    #[test]
    fn unfit_sizes_are_refused_with_the_tensor_name() {
        let mut s = SynthSpec::tiny(SynthArch::Qwen3);
        s.weight_type = GgmlDType::Q4K;
        s.ffn = 320;
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("blk.0.ffn_down.weight") && err.contains("256"),
            "{err}"
        );
        let mut s = SynthSpec::tiny(SynthArch::Llama);
        s.n_kv_head = 3;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("n_kv_head 3"));
    }

    /// `--zeros` writes the drawn file's header and size, with every tensor's bytes zero.
    #[test]
    fn zero_weights_keep_the_header_and_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SynthSpec::tiny(SynthArch::Qwen2);
        s.weight_type = GgmlDType::Q8_0;
        let (drawn, zeros) = (dir.path().join("d.gguf"), dir.path().join("z.gguf"));
        s.write(&drawn).unwrap();
        s.zeros = true;
        s.write(&zeros).unwrap();
        let (a, b) = (
            std::fs::read(&drawn).unwrap(),
            std::fs::read(&zeros).unwrap(),
        );
        assert_eq!(a.len(), b.len());
        let fa = crate::gguf::GgufFile::open(&drawn).unwrap();
        let fz = crate::gguf::GgufFile::open(&zeros).unwrap();
        let start = fa.content.tensor_data_offset as usize;
        assert_eq!(start, fz.content.tensor_data_offset as usize);
        assert_eq!(a[..start], b[..start], "headers differ");
        assert!(b[start..].iter().all(|&x| x == 0));
        assert!(a[start..].iter().any(|&x| x != 0));
    }
}
