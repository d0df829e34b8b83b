//! The frozen quantized linear layer as a differentiable op: `y = x · Wᵀ (+ b)`.
//!
//! Owns: the forward through a [`QWeight`] and its backward, which returns the input gradient
//! `g · W` and never forms a weight gradient (the base is frozen; `Tensor::matmul` would compute
//! `xᵀ · g` for the weight on every step, and `QMatMul` drops the input gradient entirely).
//! Does not: hold LoRA (see `lora`), which adds its own differentiable branch beside this one.
//!
//! Two forms, chosen by the model's [`Backend`]: the CPU kernel (a custom op over the host
//! [`QWeight`]), or candle's ops: the quantized weight (a [`DeviceMatrix`]) dequantized on its
//! device for each product, off the graph, and dropped right after it; the backward dequantizes
//! it again. At rest it stays quantized.

use std::sync::{Arc, Mutex};

use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, Device, Layout, MetalStorage, Result, Shape, Tensor,
};

use super::dense::DeviceMatrix;

use crate::model::backend::{enter_cpu_kernel, Backend};
use crate::model::handover::{self, handover};
use crate::model::kernels::host::contiguous_f32;
use crate::model::kernels::qweight::QWeight;

/// `x (.., in) -> (.., out)` through a frozen weight `(out, in)` and an optional f32 bias `(out,)`.
#[derive(Debug, Clone)]
pub struct QLinear {
    weight: Arc<QWeight>,
    bias: Option<Tensor>,
    /// The weight as the Candle form reads it, prepared at load for the model's device; built
    /// on the fly over the host weight when absent (the Candle backend on the CPU).
    candle: Option<DeviceMatrix>,
}

impl QLinear {
    pub fn new(weight: QWeight, bias: Option<Tensor>) -> Self {
        Self {
            weight: Arc::new(weight),
            bias,
            candle: None,
        }
    }

    /// Prepare the Candle form on `device`: the quantized weight copied there once (shared on
    /// the CPU), and the bias; the host copy stays for exports.
    pub fn use_device(&mut self, device: &Device) -> Result<()> {
        self.candle = Some(DeviceMatrix::new(&self.weight, device)?);
        if let Some(b) = &self.bias {
            self.bias = Some(b.to_device(device)?);
        }
        Ok(())
    }

    pub fn weight(&self) -> &QWeight {
        &self.weight
    }

    pub fn in_features(&self) -> usize {
        self.weight.cols()
    }

    pub fn out_features(&self) -> usize {
        self.weight.rows()
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The weight dequantized in f32 for one Candle-form product, on `device`.
    fn candle_dense(&self, device: &Device) -> Result<Tensor> {
        match &self.candle {
            Some(m) => m.all_f32(),
            None => DeviceMatrix::new(&self.weight, device)?.all_f32(),
        }
    }

    pub fn forward(&self, be: Backend, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_f = *dims.last().unwrap_or(&0);
        if in_f != self.in_features() {
            candle_core::bail!(
                "linear expects {} input features, got shape {dims:?}",
                self.in_features()
            )
        }
        let n = x.elem_count() / in_f.max(1);
        let x2 = x.reshape((n, in_f))?.contiguous()?;
        let mut out_dims = dims;
        *out_dims.last_mut().unwrap() = self.out_features();
        let y = match be {
            // The product is formed off the graph and the dequantized W dropped at once; the
            // backward dequantizes it again (`input_grad`). A matmul in the graph would keep W
            // alive until the backward and form its gradient `xᵀ · g`, which nobody reads.
            Backend::Candle => {
                let y = {
                    let w = self.candle_dense(x.device())?;
                    x2.detach().matmul(&w.to_dtype(x.dtype())?.t()?)?
                };
                let y = match &self.bias {
                    Some(b) => y.broadcast_add(&b.to_dtype(y.dtype())?)?,
                    None => y,
                };
                return given(be, self, &x2, &y)?.reshape(out_dims);
            }
            Backend::CpuKernels => {
                enter_cpu_kernel("frozen linear", &x2)?;
                x2.apply_op1(QMatMulOp {
                    weight: self.weight.clone(),
                })?
            }
        };
        let y = y.reshape(out_dims)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.to_dtype(y.dtype())?),
            None => Ok(y),
        }
    }
}

impl QLinear {
    /// The input gradient `g · W` for `g (n, out)`, no graph: the backward of
    /// [`QLinear::forward`] (the bias has none). Used where the forward's value came from
    /// elsewhere (a checkpointed block's recompute reusing an earlier output).
    pub(crate) fn input_grad(&self, be: Backend, g: &Tensor) -> Result<Tensor> {
        let (n, _) = g.dims2()?;
        match be {
            Backend::Candle => {
                let w = self.candle_dense(g.device())?;
                g.detach().matmul(&w.to_dtype(g.dtype())?)
            }
            Backend::CpuKernels => {
                enter_cpu_kernel("frozen linear backward", g)?;
                let gv = g.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                let gx = self.weight.matmul(&gv, n)?;
                Tensor::from_vec(gx, (n, self.weight.cols()), g.device())
            }
        }
    }
}

/// `lin.forward(x)` whose value is `y`, computed without a graph (a checkpointed block's kept
/// output, or the Candle backend's product whose dequantized weight is already dropped), bias
/// included: no multiply here, and the backward is still `lin`'s input gradient `g · W`.
pub(crate) fn given(be: Backend, lin: &QLinear, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let (in_f, out_f) = (lin.in_features(), lin.out_features());
    let n = x.elem_count() / in_f.max(1);
    if y.elem_count() != n * out_f {
        candle_core::bail!(
            "frozen linear: given output {:?} for input {:?}",
            y.dims(),
            x.dims()
        )
    }
    let out = x.reshape((n, in_f))?.apply_op1(Given {
        be,
        lin: lin.clone(),
        out: Mutex::new(Some(y.reshape((n, out_f))?)),
    })?;
    out.reshape(y.shape())
}

/// The graph node of [`given`]: arg `x (n, in)`, value the kept output `(n, out)`.
struct Given {
    be: Backend,
    lin: QLinear,
    out: Mutex<Option<Tensor>>,
}

impl CustomOp1 for Given {
    fn name(&self) -> &'static str {
        "frozen-linear-given-value"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        handover(&self.out, handover::cpu)
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        handover(&self.out, handover::cuda)
    }

    fn metal_fwd(&self, _: &MetalStorage, _: &Layout) -> Result<(MetalStorage, Shape)> {
        handover(&self.out, handover::metal)
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        self.lin.input_grad(self.be, grad).map(Some)
    }
}

/// `(n, in) -> (n, out)`; backward `g (n, out) -> g · W (n, in)`.
struct QMatMulOp {
    weight: Arc<QWeight>,
}

impl CustomOp1 for QMatMulOp {
    fn name(&self) -> &'static str {
        "qmatmul-dequant"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, k) = layout.shape().dims2()?;
        let x = contiguous_f32(storage, layout)?;
        if k != self.weight.cols() {
            candle_core::bail!("qmatmul: {k} input features for a {:?}", self.weight)
        }
        let y = self.weight.matmul_t(x, n)?;
        Ok((CpuStorage::F32(y), Shape::from((n, self.weight.rows()))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (n, out) = grad_res.dims2()?;
        debug_assert_eq!(out, self.weight.rows());
        let g = grad_res.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let gx = self.weight.matmul(&g, n)?;
        Ok(Some(Tensor::from_vec(
            gx,
            (n, self.weight.cols()),
            grad_res.device(),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::uniform_values;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Var};

    /// Central finite differences of `L = sum(y * r)` w.r.t. `x` against the op's backward, for
    /// the quant types the real models use. The loss is linear in x, so FD is exact up to f32
    /// rounding; the check still catches a transposed, missing or wrongly scaled gradient.
    #[test]
    fn backward_matches_finite_differences() {
        let dev = Device::Cpu;
        let (n, k, m) = (3, 256, 40);
        for dt in [
            GgmlDType::Q4_0,
            GgmlDType::Q4K,
            GgmlDType::Q5_0,
            GgmlDType::Q6K,
            GgmlDType::Q8_0,
        ] {
            let w = Tensor::from_vec(uniform_values(m * k, 11, 1.0), (m, k), &dev).unwrap();
            let lin = QLinear::new(
                QWeight::new(QTensor::quantize(&w, dt).unwrap()).unwrap(),
                None,
            );
            let r = Tensor::from_vec(uniform_values(n * m, 5, 2.0), (n, m), &dev).unwrap();
            let x0 = uniform_values(n * k, 3, 2.0);
            let x = Var::from_vec(x0.clone(), (n, k), &dev).unwrap();
            let loss = lin
                .forward(Backend::CpuKernels, x.as_tensor())
                .unwrap()
                .mul(&r)
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            let gx = grads
                .get(x.as_tensor())
                .expect("gradient reaches x")
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let f = |xs: Vec<f32>| -> f64 {
                let xt = Tensor::from_vec(xs, (n, k), &dev).unwrap();
                lin.forward(Backend::CpuKernels, &xt)
                    .unwrap()
                    .mul(&r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap() as f64
            };
            let eps = 1e-2f32;
            let mut max_err = 0f64;
            for i in (0..n * k).step_by(37) {
                let mut xp = x0.clone();
                xp[i] += eps;
                let mut xm = x0.clone();
                xm[i] -= eps;
                let fd = (f(xp) - f(xm)) / (2.0 * eps as f64);
                max_err = max_err.max((fd - gx[i] as f64).abs() / (1.0 + fd.abs()));
            }
            assert!(
                max_err < 2e-3,
                "{dt:?}: finite differences disagree by {max_err}"
            );
        }
    }

    #[test]
    fn no_gradient_for_frozen_weight_and_bias_broadcasts() {
        let dev = Device::Cpu;
        let w = Tensor::from_vec(uniform_values(8 * 32, 1, 1.0), (8, 32), &dev).unwrap();
        let b = Tensor::from_vec(uniform_values(8, 2, 1.0), 8, &dev).unwrap();
        let lin = QLinear::new(
            QWeight::new(QTensor::quantize(&w, GgmlDType::F32).unwrap()).unwrap(),
            Some(b.clone()),
        );
        let x = Tensor::from_vec(uniform_values(2 * 3 * 32, 3, 1.0), (2, 3, 32), &dev).unwrap();
        let y = lin.forward(Backend::CpuKernels, &x).unwrap();
        let want = x
            .broadcast_matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        let d = (y - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "{d}");
    }

    /// The CPU kernel against the Candle form (the weight dequantized through the row gather,
    /// the product off the graph, the backward through `given`): values and input gradients,
    /// with a bias, for a K-quant and Q8_0.
    #[test]
    fn the_cpu_kernel_matches_the_candle_form() {
        use crate::model::ops::check::{check, tensor};
        let dev = Device::Cpu;
        for dtype in [GgmlDType::Q4K, GgmlDType::Q8_0] {
            let w = Tensor::from_vec(uniform_values(40 * 256, 7, 1.0), (40, 256), &dev).unwrap();
            let bias = Tensor::from_vec(uniform_values(40, 8, 1.0), 40, &dev).unwrap();
            let lin = QLinear::new(
                QWeight::new(QTensor::quantize(&w, dtype).unwrap()).unwrap(),
                Some(bias),
            );
            check(
                &format!("frozen linear {dtype:?}"),
                &[tensor(&[2, 3, 256], 9, 2.0)],
                |x| lin.forward(Backend::CpuKernels, &x[0]),
                |x| lin.forward(Backend::Candle, &x[0]),
            );
        }
    }
}
