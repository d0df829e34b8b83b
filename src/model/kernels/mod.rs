//! The CPU kernels under the `CpuKernels` backend: quantized weights and their dequantizing
//! matrix products (`qweight`), the per-core lanes that run a micro-batch's pairs in parallel
//! (`lanes`), and the vectorized element-wise math (`fastmath`).
//!
//! Owns: code that reads host memory directly, with no candle op around it. Does not: know the
//! model's structure or autograd; the ops that wrap these kernels in candle custom ops, beside
//! their candle-generic forms, live one level up (`fused`, `attend`, `adapted`, `qlinear`, `head`).

pub mod fastmath;
pub mod lanes;
pub mod qweight;
