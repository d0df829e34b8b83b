//! The model's differentiable ops, one file per op, each with its two forms side by side and
//! chosen by the model's [`Backend`](super::Backend):
//!
//! - `CpuKernels`: a candle custom op over host f32 whose backward is written out and keeps only
//!   what it needs (the heavy loops live in `kernels`);
//! - `Candle`: candle's device-generic ops, what a GPU runs, whose backward is candle's own.
//!
//! | file         | op                                                                   |
//! |--------------|----------------------------------------------------------------------|
//! | `linear`     | the frozen quantized linear `x · Wᵀ (+ b)`, no weight gradient         |
//! | `adapted`    | a frozen linear and its LoRA branch as one op                        |
//! | `norm`       | RMSNorm                                                              |
//! | `rope`       | rotary position embedding and its tables                             |
//! | `activation` | the gated activation `act(gate) · up`                                |
//! | `attention`  | grouped-query attention, its masked softmax and its mask             |
//! | `head`       | the log-prob head over the vocabulary, streamed in row blocks        |
//! | `dense`      | a quantized matrix dequantized on its device for the Candle forms    |
//!
//! Owns: the ops. Does not: compose them into a block (see `block`) or hold weights.
//! Each file's tests hold its CPU kernel against its Candle form (`check`).

pub mod activation;
pub mod adapted;
pub mod attention;
pub mod dense;
pub mod head;
pub mod linear;
pub mod norm;
pub mod rope;

#[cfg(test)]
pub(crate) mod check;
