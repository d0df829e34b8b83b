//! How much arithmetic a step does, and how fast this machine multiplies f32 matrices.
//!
//! Owns: the FLOP count of a forward (and a forward + backward) from the model's shapes, and the
//! matrix-product peak measured through the same gemm call the frozen linears use
//! ([`crate::model::kernels::qweight`]'s `gemm_f32`, rayon-parallel over every core).
//!
//! The count (one multiply-add = 2 FLOPs; matrix products only: norms, RoPE, softmax, GELU and
//! the optimizer are element-wise and left out, so the share of peak they cost shows as lost time):
//!
//! ```text
//! N = n_seq · seq_len               positions, padding included (the forward runs on them);
//!                                   a packed pair (prompt shared) is one row
//! P = Σ_layers Σ_linears in · out   frozen linear weights (q, k, v, o, gate, up, down)
//! R = Σ_adapted r · (in + out)      LoRA A and B
//! A = 4 · n_seq · n_head · seq_len² · head_dim    QKᵀ and PV, full masked matrices
//! H = 2 · n_scored · vocab · hidden  the log-prob head, at completion positions only
//!
//! forward, no gradient (reference):  2NP + 2NR (if adapters on) + A + H
//! forward + backward (policy):       2NP + 2NP      frozen linears: forward and g·W (no weight grad)
//!                                  + 3 · 2NR        LoRA: forward, input grad, A and B grads
//!                                  + 3A             attention: forward, then two products per one
//!                                  + 2H             head: logits and Σ softmax·W in one pass
//! ```
//! This is the "6 · params · tokens" rule of full fine-tuning with the weight gradients of the
//! frozen base (a third of it) removed. Like a model-FLOPs utilization, it leaves out the second
//! forward that gradient checkpointing runs in the backward: that is overhead, not useful work.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::model::{Lora, Model};

/// The shape of one forward: `n_seq` sequences right-padded to `seq_len`, `n_scored` head rows.
#[derive(Debug, Clone, Copy)]
pub struct Shapes {
    pub n_seq: usize,
    pub seq_len: usize,
    pub n_scored: usize,
}

struct Counts {
    linear: f64,
    lora: f64,
    attention: f64,
    head: f64,
}

fn counts(model: &Model, lora: Option<&Lora>, s: Shapes) -> Counts {
    let c = &model.config;
    let n = (s.n_seq * s.seq_len) as f64;
    let mut p = 0f64;
    for il in 0..c.n_layer {
        for t in crate::model::Target::ALL {
            let (i, o) = model.linear_dims(il, t);
            p += (i * o) as f64;
        }
    }
    let r: f64 = lora.map_or(0.0, |l| {
        l.layers
            .keys()
            .map(|&(il, t)| {
                let (i, o) = model.linear_dims(il, t);
                (l.config.rank * (i + o)) as f64
            })
            .sum()
    });
    let attention =
        4.0 * (s.n_seq * c.n_head * s.seq_len * s.seq_len * c.head_dim) as f64 * c.n_layer as f64;
    Counts {
        linear: 2.0 * n * p,
        lora: 2.0 * n * r,
        attention,
        head: 2.0 * (s.n_scored * c.vocab * c.hidden) as f64,
    }
}

/// FLOPs of a forward with no gradient graph (`lora` = the adapters that are on, if any).
pub fn forward(model: &Model, lora: Option<&Lora>, s: Shapes) -> f64 {
    let k = counts(model, lora, s);
    k.linear + k.lora + k.attention + k.head
}

/// FLOPs of a training forward + backward with `lora` trained and the base frozen.
pub fn forward_backward(model: &Model, lora: &Lora, s: Shapes) -> f64 {
    let k = counts(model, Some(lora), s);
    2.0 * k.linear + 3.0 * k.lora + 3.0 * k.attention + 2.0 * k.head
}

/// One measured size of the matrix-product peak.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatmulPoint {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub gflops: f64,
}

/// `(m, k) · (k, n)` f32 products through `gemm_f32`, best of `reps` after one warm-up, at
/// sizes that bracket the model's: square 512 / 1024 / 2048 and `(1024 positions, hidden) · ffn`.
pub fn matmul_peak(hidden: usize, ffn: usize, reps: usize) -> Vec<MatmulPoint> {
    let sizes = [
        (512, 512, 512),
        (1024, 1024, 1024),
        (2048, 2048, 2048),
        (1024, ffn, hidden),
    ];
    sizes
        .into_iter()
        .map(|(m, n, k)| {
            let a: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
            let mut c = vec![0f32; m * n];
            let mut best = f64::INFINITY;
            for rep in 0..=reps.max(1) {
                let t = Instant::now();
                // Safety: a, b and c are m·k, k·n and m·n row-major buffers.
                unsafe {
                    crate::model::kernels::qweight::gemm_f32(
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        1,
                        n as isize,
                    );
                }
                let secs = t.elapsed().as_secs_f64();
                if rep > 0 {
                    best = best.min(secs);
                }
            }
            std::hint::black_box(&c);
            MatmulPoint {
                m,
                n,
                k,
                gflops: 2.0 * (m * n * k) as f64 / best / 1e9,
            }
        })
        .collect()
}
