//! The CPU kernels under the `CpuKernels` backend: quantized weights and their dequantizing
//! matrix products (`qweight`), grouped-query attention and its softmax rows (`attend`), the
//! per-core lanes that run a micro-batch's pairs in parallel (`lanes`), the vectorized
//! element-wise math (`fastmath`), and f32 views of host tensors (`host`).
//!
//! Owns: code that reads host memory directly, with no candle op around it. Does not: know the
//! model's structure or choose a backend; the ops that wrap these kernels in candle custom ops,
//! beside their Candle forms, live in `ops`.

pub mod attend;
pub mod fastmath;
pub mod host;
pub mod lanes;
pub mod qweight;
