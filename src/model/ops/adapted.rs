//! A frozen linear and its LoRA branch as one op on the CPU: `y = x · Wᵀ + s · (x · Aᵀ) · Bᵀ`.
//!
//! Owns: the op's forward and backward (input gradient `g · W + s · (g · B) · A`, and the
//! adapter's `dA = s · (g · B)ᵀ · x`, `dB = s · gᵀ · (x · Aᵀ)`), each product a direct gemm.
//! Does not: hold the weights (see `linear`, `lora`), or run dropout: a branch with dropout
//! and the Candle backend take the composed form (`lin(x) + branch(x)`).
//!
//! Why: composed, every adapted linear added five nodes to the graph (the two thin products,
//! the scale, the add, a transpose), each of whose gradients candle materializes and sums into a
//! zero-filled buffer, plus a full `(tokens, out)` delta tensor and the add that folds it in.
//! Here the branch's `(tokens, rank)` product is the only intermediate.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::linear::QLinear;
use crate::model::backend::{enter_cpu_kernel, Backend};
use crate::model::kernels::host::{contiguous_f32x3, with_f32};
use crate::model::kernels::qweight::{product, rm, tr};
use crate::model::lora::Branch;

/// `lin(x) + branch(x)` (`lin(x)` alone for no branch), in `x`'s type: one op where it can be.
/// `base`, when given, is `lin(x)` from an earlier forward of the same `x` (a checkpointed
/// block's kept output): its value is used instead of multiplying again; the backward is the same.
pub(crate) fn forward(
    be: Backend,
    lin: &QLinear,
    x: &Tensor,
    branch: Option<&Branch>,
    base: Option<&Tensor>,
) -> Result<Tensor> {
    let plain = |x: &Tensor| match base {
        Some(y) => super::linear::given(be, lin, x, y),
        None => lin.forward(be, x),
    };
    let Some(br) = branch else {
        return plain(x);
    };
    let fusable = be == Backend::CpuKernels
        && br.drop.is_none()
        && br.a.dtype() == DType::F32
        && br.b.dtype() == DType::F32;
    if !fusable {
        // The branch is f32 (see `lora::branch`); the sum is formed in f32 and rounded once, so
        // a small delta is not lost to the activation type's rounding first.
        let y = plain(x)?;
        let dt = y.dtype();
        let d = br.apply(x)?;
        return match dt {
            DType::F32 => y + d,
            _ => (y.to_dtype(DType::F32)? + d)?.to_dtype(dt),
        };
    }
    let dims = x.dims().to_vec();
    let in_f = lin.in_features();
    let n = x.elem_count() / in_f.max(1);
    if dims.last() != Some(&in_f) || br.a.dims() != [br.a.dim(0)?, in_f] {
        candle_core::bail!(
            "adapted linear: input {dims:?}, A {:?} for {in_f} input features",
            br.a.dims()
        )
    }
    let (rank, out_f) = (br.a.dim(0)?, lin.out_features());
    if br.b.dims() != [out_f, rank] {
        candle_core::bail!(
            "adapted linear: B {:?}, expected [{out_f}, {rank}]",
            br.b.dims()
        )
    }
    enter_cpu_kernel("adapted linear", x)?;
    let base_given = base.is_some();
    // A kept output is `lin(x)`, bias included: the op starts from it and adds no bias.
    let base = base.map(|y| y.reshape((n, out_f))).transpose()?;
    if base.as_ref().is_some_and(|y| y.dtype() != DType::F32) {
        candle_core::bail!("adapted linear: kept output is not f32")
    }
    let y = x.reshape((n, in_f))?.contiguous()?.apply_op3(
        &br.a.contiguous()?,
        &br.b.contiguous()?,
        Adapted {
            lin: lin.clone(),
            scale: br.scale as f32,
            base,
        },
    )?;
    let mut out_dims = dims;
    *out_dims.last_mut().unwrap() = out_f;
    let y = y.reshape(out_dims)?;
    match (lin.bias(), &base_given) {
        (Some(b), false) => y.broadcast_add(b),
        _ => Ok(y),
    }
}

/// Args `x (n, in)`, `A (r, in)`, `B (out, r)`; value `x · Wᵀ + scale · (x · Aᵀ) · Bᵀ`, where
/// `x · Wᵀ` is `base` when given (which then carries the bias too).
struct Adapted {
    lin: QLinear,
    scale: f32,
    base: Option<Tensor>,
}

impl Adapted {
    /// `s · x · Aᵀ`, `(n, r)`.
    fn scaled_xa(&self, x: &[f32], a: &[f32], n: usize, in_f: usize, r: usize) -> Vec<f32> {
        let mut t = vec![0f32; n * r];
        product(&mut t, (n, r, in_f), rm(x, in_f), tr(a, in_f), false);
        t.iter_mut().for_each(|v| *v *= self.scale);
        t
    }
}

impl CustomOp3 for Adapted {
    fn name(&self) -> &'static str {
        "linear-with-lora"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, a, b) = contiguous_f32x3((s1, l1), (s2, l2), (s3, l3))?;
        let (n, in_f) = l1.shape().dims2()?;
        let (r, out_f) = (l2.shape().dims2()?.0, self.lin.out_features());
        let mut y = match &self.base {
            Some(base) => with_f32(base, |v| Ok(v.to_vec()))?,
            None => self.lin.weight().matmul_t(x, n)?,
        };
        let t = self.scaled_xa(x, a, n, in_f, r);
        // y += (s · x · Aᵀ) · Bᵀ
        product(&mut y, (n, out_f, r), rm(&t, r), tr(b, r), true);
        Ok((CpuStorage::F32(y), Shape::from((n, out_f))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, in_f) = x.dims2()?;
        let (r, out_f) = (a.dim(0)?, self.lin.out_features());
        let dev = x.device();
        with_f32(x, |x| {
            with_f32(a, |a| {
                with_f32(b, |b| {
                    with_f32(grad, |g| {
                        // u = s · g · B   (n, r)
                        let mut u = vec![0f32; n * r];
                        product(&mut u, (n, r, out_f), rm(g, out_f), rm(b, r), false);
                        u.iter_mut().for_each(|v| *v *= self.scale);
                        // dx = g · W + u · A
                        let mut dx = self.lin.weight().matmul(g, n)?;
                        product(&mut dx, (n, in_f, r), rm(&u, r), rm(a, in_f), true);
                        // dA = uᵀ · x   (r, in)
                        let mut da = vec![0f32; r * in_f];
                        product(&mut da, (r, in_f, n), tr(&u, r), rm(x, in_f), false);
                        // dB = gᵀ · (s · x · Aᵀ)   (out, r)
                        let t = self.scaled_xa(x, a, n, in_f, r);
                        let mut db = vec![0f32; out_f * r];
                        product(&mut db, (out_f, r, n), tr(g, out_f), rm(&t, r), false);
                        Ok((
                            Some(Tensor::from_vec(dx, (n, in_f), dev)?),
                            Some(Tensor::from_vec(da, (r, in_f), dev)?),
                            Some(Tensor::from_vec(db, (out_f, r), dev)?),
                        ))
                    })
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const CPU: Backend = Backend::CpuKernels;
    use crate::model::kernels::qweight::QWeight;
    use crate::synth::uniform_values;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Var};

    fn var(dims: (usize, usize), seed: u64, scale: f32) -> Var {
        Var::from_vec(
            uniform_values(dims.0 * dims.1, seed, scale),
            dims,
            &Device::Cpu,
        )
        .unwrap()
    }

    fn max_err(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The op against the composed form (`lin(x) + branch(x)`, candle's own backward): value and
    /// the gradients of `sum(y · r)` w.r.t. x, A and B, with a bias and a 3-D input.
    #[test]
    fn matches_the_composed_linear_plus_branch() {
        let dev = Device::Cpu;
        let (in_f, out_f, rank) = (64, 48, 4);
        let w =
            Tensor::from_vec(uniform_values(out_f * in_f, 1, 0.5), (out_f, in_f), &dev).unwrap();
        let bias = Tensor::from_vec(uniform_values(out_f, 2, 0.5), out_f, &dev).unwrap();
        let lin = QLinear::new(
            QWeight::new(QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()).unwrap(),
            Some(bias),
        );
        let x = Var::from_vec(uniform_values(2 * 7 * in_f, 3, 1.0), (2, 7, in_f), &dev).unwrap();
        let (a, b) = (var((rank, in_f), 4, 0.3), var((out_f, rank), 5, 0.3));
        let r =
            Tensor::from_vec(uniform_values(2 * 7 * out_f, 6, 1.0), (2, 7, out_f), &dev).unwrap();
        let br = Branch {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale: 2.5,
            drop: None,
        };
        let composed =
            (lin.forward(CPU, x.as_tensor()).unwrap() + br.apply(x.as_tensor()).unwrap()).unwrap();
        let gc = (&composed * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        // both forms, without and with the frozen product given (a checkpoint's kept output,
        // bias included)
        let kept = lin.forward(CPU, &x.as_tensor().detach()).unwrap();
        let cases = [
            (CPU, None),
            (CPU, Some(&kept)),
            (Backend::Candle, None),
            (Backend::Candle, Some(&kept)),
        ];
        for (be, base) in cases {
            let fused = forward(be, &lin, x.as_tensor(), Some(&br), base).unwrap();
            assert!(max_err(&fused, &composed) < 1e-5);
            let gf = (&fused * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (name, v) in [("x", &x), ("A", &a), ("B", &b)] {
                let (f, c) = (
                    gf.get(v.as_tensor()).unwrap(),
                    gc.get(v.as_tensor()).unwrap(),
                );
                let e = max_err(f, c);
                assert!(
                    e < 1e-4,
                    "{be:?}: d{name} off by {e} (base given: {})",
                    base.is_some()
                );
            }
        }
    }
}
