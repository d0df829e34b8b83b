//! The log-prob head: `h (n, hidden) -> log p(target_i | h_i)` through the output matrix `W (vocab, hidden)`.
//!
//! Owns: the vocabulary projection and log-softmax, streamed over blocks of vocabulary rows with an
//! online log-sum-exp, so `(positions x vocab)` logits never exist at once (Gemma's 262,144-token
//! vocabulary makes them 268 MB per 256 positions), and the matrix is dequantized block by block.
//! Only the positions that are scored are passed in (completion tokens), never prompt positions.
//!
//! Gradient: `d logp_i / d h_i = W[t_i] - Σ_v softmax_v · W_v`. It is accumulated in the same pass
//! as the forward when a gradient is wanted (one more gemm per block, no second dequantization),
//! and attached with a first-order identity: `out = logp + (h·J) - stopgrad(h·J)`, whose value is
//! exactly `logp` and whose gradient w.r.t. `h` is exactly `J`.

use candle_core::{Result, Tensor, D};
use rayon::prelude::*;

use super::dense::DeviceMatrix;
use crate::model::kernels::fastmath::{exp, lane_max, lane_sum_f64, wide};
use crate::model::kernels::qweight::{gemm_f32, QWeight};

/// Floats held at once in the logits block and in the dequantized block of rows (16 MB each).
const MAX_LOGITS: usize = 4 << 20;

/// `h (n, hidden)`, `targets (n)` -> `(n,)` natural-log probabilities, f32 on `h`'s device.
/// When `h` tracks gradients the result is differentiable w.r.t. `h`.
pub fn token_logps(h: &Tensor, targets: &[u32], w: &QWeight) -> Result<Tensor> {
    let (n, d) = h.dims2()?;
    if n != targets.len() || d != w.cols() {
        candle_core::bail!(
            "head: h {:?} for {} targets and W {:?}",
            h.dims(),
            targets.len(),
            w
        )
    }
    if n == 0 {
        return Tensor::zeros(0, candle_core::DType::F32, h.device());
    }
    crate::model::backend::enter_cpu_kernel("log-prob head", h)?;
    let need_grad = h.track_op();
    let hv = h.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let trow = w
        .gather_rows(targets, &candle_core::Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let vocab = w.rows();
    // Both the logits block (n x block) and the dequantized rows (block x hidden) stay bounded.
    let block = (MAX_LOGITS / n)
        .min(MAX_LOGITS / d)
        .clamp(256, vocab.max(256))
        .min(vocab);

    let mut m = vec![f32::NEG_INFINITY; n];
    let mut s = vec![0f64; n];
    let mut acc = if need_grad {
        vec![0f32; n * d]
    } else {
        Vec::new()
    };
    let mut wbuf = vec![0f32; block * d];
    let mut logits = vec![0f32; n * block];
    let mut r0 = 0;
    while r0 < vocab {
        let r1 = (r0 + block).min(vocab);
        let c = r1 - r0;
        let wc = &mut wbuf[..c * d];
        w.dequantize_rows(r0, r1, wc)?;
        let lg = &mut logits[..n * c];
        // lg (n, c) = h (n, d) · wcᵀ (d, c)
        unsafe {
            gemm_f32(
                n,
                c,
                d,
                lg.as_mut_ptr(),
                1,
                c as isize,
                false,
                hv.as_ptr(),
                1,
                d as isize,
                wc.as_ptr(),
                d as isize,
                1,
            );
        }
        // Online log-sum-exp; rows become exp(logit - running max). When the max moves, what was
        // accumulated is rescaled by exp(old - new).
        let rescale: Vec<f32> = lg
            .par_chunks_mut(c)
            .zip(m.par_iter_mut())
            .zip(s.par_iter_mut())
            .map(|((row, mi), si)| {
                wide(
                    #[inline(always)]
                    || exp_row(row, mi, si),
                )
            })
            .collect();
        if need_grad {
            acc.par_chunks_mut(d)
                .zip(rescale.par_iter())
                .for_each(|(a, &f)| {
                    if f != 1.0 {
                        a.iter_mut().for_each(|x| *x *= f);
                    }
                });
            // acc (n, d) += P (n, c) · wc (c, d)
            unsafe {
                gemm_f32(
                    n,
                    d,
                    c,
                    acc.as_mut_ptr(),
                    1,
                    d as isize,
                    true,
                    lg.as_ptr(),
                    1,
                    c as isize,
                    wc.as_ptr(),
                    1,
                    d as isize,
                );
            }
        }
        r0 = r1;
    }
    let logp: Vec<f32> = (0..n)
        .map(|i| {
            let tl: f64 = hv[i * d..(i + 1) * d]
                .iter()
                .zip(&trow[i * d..(i + 1) * d])
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum();
            (tl - (m[i] as f64 + s[i].ln())) as f32
        })
        .collect();
    let logp = Tensor::from_vec(logp, n, h.device())?;
    if !need_grad {
        return Ok(logp);
    }
    // J_i = W[t_i] - acc_i / s_i
    let jac: Vec<f32> = (0..n * d)
        .map(|k| {
            let i = k / d;
            trow[k] - (acc[k] as f64 / s[i]) as f32
        })
        .collect();
    let jac = Tensor::from_vec(jac, (n, d), h.device())?;
    let lin = h.mul(&jac)?.sum(D::Minus1)?;
    logp + (&lin - lin.detach())?
}

/// Rows per block of the output matrix in the Candle form (Gemma: 16 blocks of 16,384 rows).
const CANDLE_BLOCK_ROWS: usize = 16_384;

/// [`token_logps`] from candle's device-generic ops (the Candle backend): the output matrix
/// `w` dequantized on its device a block of rows at a time, the same streaming (online
/// log-sum-exp over blocks, no graph kept) and the same first-order identity for the gradient.
pub fn token_logps_candle(h: &Tensor, targets: &[u32], w: &DeviceMatrix) -> Result<Tensor> {
    let (n, _) = h.dims2()?;
    if n != targets.len() {
        candle_core::bail!("head: h {:?} for {} targets", h.dims(), targets.len())
    }
    let dev = h.device();
    let trow = w.gather_f32(targets)?;
    let hd = h.detach().to_dtype(candle_core::DType::F32)?;
    let mut m = Tensor::full(f32::NEG_INFINITY, (n, 1), dev)?;
    let mut s = Tensor::zeros((n, 1), candle_core::DType::F32, dev)?;
    let mut acc = Tensor::zeros_like(&hd)?;
    for r0 in (0..w.rows()).step_by(CANDLE_BLOCK_ROWS) {
        let wc = w.rows_f32(r0, (r0 + CANDLE_BLOCK_ROWS).min(w.rows()))?;
        let lg = hd.matmul(&wc.t()?)?;
        let new_m = m.maximum(&lg.max_keepdim(1)?)?;
        let factor = (&m - &new_m)?.exp()?;
        let p = lg.broadcast_sub(&new_m)?.exp()?;
        s = ((s * &factor)? + p.sum_keepdim(1)?)?;
        acc = (acc.broadcast_mul(&factor)? + p.matmul(&wc)?)?;
        m = new_m;
    }
    let logp = ((&hd * &trow)?.sum_keepdim(1)? - (m + s.log()?)?)?.squeeze(1)?;
    if !h.track_op() {
        return Ok(logp);
    }
    let jac = (trow - acc.broadcast_div(&s)?)?;
    let lin = h
        .to_dtype(candle_core::DType::F32)?
        .mul(&jac)?
        .sum(D::Minus1)?;
    logp + (&lin - lin.detach())?
}

/// One row of the online log-sum-exp: `row` becomes `exp(row - max)` against the running max
/// `m` (raised to the row's max when that is larger, the running sum `s` rescaled by the returned
/// factor), its sum added to `s`. Inlined into [`wide`]'s AVX2 function.
#[inline(always)]
fn exp_row(row: &mut [f32], m: &mut f32, s: &mut f64) -> f32 {
    let cm = lane_max(row);
    let mut factor = 1f32;
    if cm > *m {
        factor = exp(*m - cm);
        *s *= factor as f64;
        *m = cm;
    }
    for x in row.iter_mut() {
        *x = exp(*x - *m);
    }
    *s += lane_sum_f64(row);
    factor
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::uniform_values;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Var};

    /// `sum(out · coef)`'s gradient w.r.t. `h`, flattened.
    fn grad(out: &Tensor, coef: &Tensor, h: &Var) -> Vec<f32> {
        let g = out
            .mul(coef)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g = g.get(h.as_tensor()).expect("a gradient for h");
        g.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Both forms against dense log_softmax over full logits, value and gradient, with a
    /// vocabulary that spans several blocks of each (the online rescaling path).
    #[test]
    fn both_forms_match_dense_log_softmax_and_its_gradient() {
        let dev = Device::Cpu;
        let (n, d, v) = (300, 64, 2 * CANDLE_BLOCK_ROWS + 123);
        let w = Tensor::from_vec(uniform_values(v * d, 1, 2.0), (v, d), &dev).unwrap();
        let qw = std::sync::Arc::new(
            QWeight::new(QTensor::quantize(&w, GgmlDType::F32).unwrap()).unwrap(),
        );
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % v as u32).collect();
        let h = Var::from_vec(uniform_values(n * d, 2, 3.0), (n, d), &dev).unwrap();
        let coef = Tensor::from_vec(uniform_values(n, 3, 1.0), n, &dev).unwrap();

        let logits = h.as_tensor().matmul(&w.t().unwrap()).unwrap();
        let lsm = logits
            .broadcast_sub(&logits.exp().unwrap().sum_keepdim(1).unwrap().log().unwrap())
            .unwrap();
        let idx = Tensor::from_vec(targets.clone(), (n, 1), &dev).unwrap();
        let dense = lsm.gather(&idx, 1).unwrap().squeeze(1).unwrap();
        let (want, g_want) = (dense.to_vec1::<f32>().unwrap(), grad(&dense, &coef, &h));
        let max_g = g_want.iter().fold(0f32, |m, x| m.max(x.abs()));

        let matrix = DeviceMatrix::new(&qw, &dev).unwrap();
        for (name, ours) in [
            (
                "cpu kernels",
                token_logps(h.as_tensor(), &targets, &qw).unwrap(),
            ),
            (
                "candle",
                token_logps_candle(h.as_tensor(), &targets, &matrix).unwrap(),
            ),
        ] {
            for (x, y) in ours.to_vec1::<f32>().unwrap().iter().zip(&want) {
                assert!((x - y).abs() < 1e-3 * (1.0 + y.abs()), "{name}: {x} vs {y}");
            }
            for (x, y) in grad(&ours, &coef, &h).iter().zip(&g_want) {
                assert!((x - y).abs() < 1e-4 * (1.0 + max_g), "{name}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn no_grad_path_returns_same_values() {
        let dev = Device::Cpu;
        let (n, d, v) = (5, 32, 300);
        let w = Tensor::from_vec(uniform_values(v * d, 4, 1.0), (v, d), &dev).unwrap();
        let qw = QWeight::new(QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()).unwrap();
        let targets = [1u32, 2, 3, 299, 0];
        let hv = uniform_values(n * d, 5, 1.0);
        let a = token_logps(
            &Tensor::from_vec(hv.clone(), (n, d), &dev).unwrap(),
            &targets,
            &qw,
        )
        .unwrap();
        let hvar = Var::from_vec(hv, (n, d), &dev).unwrap();
        let b = token_logps(hvar.as_tensor(), &targets, &qw).unwrap();
        assert_eq!(a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
    }
}
