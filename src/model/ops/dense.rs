//! A quantized matrix as the Candle forms read it: quantized on the model's device (the host
//! copy itself on the CPU), dequantized there on demand through `QTensor::embedding`, a gather
//! of rows: all of them for a linear's product, a block of rows at a time for the log-prob
//! head, the listed ones for the token embedding and the head's target rows.
//!
//! Owns: the device copy and the row ids the gather reads. Does not: multiply (see `linear`,
//! `head`) or keep a dequantized matrix: each call returns a fresh f32 tensor for the caller to
//! drop after its product.
//!
//! Why the gather and not `QTensor::dequantize`: on Metal `dequantize` copies the weight to the
//! host, dequantizes it on one core and uploads it again; the gather runs on the GPU on CUDA and
//! Metal alike (candle 0.11.1 `quantized/{cuda,metal}.rs` `embedding`), and on the CPU it reads
//! the host blocks in place.

use std::sync::Arc;

use candle_core::quantized::{QStorage, QTensor};
use candle_core::{DType, Device, Result, Tensor};

use crate::model::kernels::qweight::QWeight;

#[derive(Clone)]
pub struct DeviceMatrix {
    q: Quantized,
    /// `0..rows` as u32 on the device, narrowed to the rows a call wants.
    ids: Tensor,
    rows: usize,
}

#[derive(Clone)]
enum Quantized {
    /// On the CPU the host weight is read in place: no second copy.
    Host(Arc<QWeight>),
    Device(Arc<QTensor>),
}

impl std::fmt::Debug for DeviceMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.qtensor();
        write!(f, "DeviceMatrix({:?}, {:?})", q.dtype(), q.shape())
    }
}

impl DeviceMatrix {
    /// `w` on `device`: copied there once in its quant type, or shared as it is on the CPU.
    pub fn new(w: &Arc<QWeight>, device: &Device) -> Result<Self> {
        let rows = w.rows();
        let q = if device.is_cpu() {
            Quantized::Host(w.clone())
        } else {
            let host = w.qtensor();
            let storage = QStorage::from_data(host.data()?, device, host.dtype())?;
            Quantized::Device(Arc::new(QTensor::new(storage, host.shape().clone())?))
        };
        let ids = Tensor::arange(0u32, rows as u32, device)?;
        Ok(Self { q, ids, rows })
    }

    fn qtensor(&self) -> &QTensor {
        match &self.q {
            Quantized::Host(w) => w.qtensor(),
            Quantized::Device(q) => q,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Rows `r0..r1` in f32, `(r1 - r0, cols)`, on the matrix's device.
    pub fn rows_f32(&self, r0: usize, r1: usize) -> Result<Tensor> {
        if r0 > r1 || r1 > self.rows {
            candle_core::bail!("rows {r0}..{r1} of a matrix of {} rows", self.rows)
        }
        self.qtensor().embedding(&self.ids.narrow(0, r0, r1 - r0)?)
    }

    /// The whole matrix in f32, `(rows, cols)`.
    pub fn all_f32(&self) -> Result<Tensor> {
        self.rows_f32(0, self.rows)
    }

    /// The rows `ids` (token ids) in f32, `(ids.len(), cols)`; every id is checked first.
    pub fn gather_f32(&self, ids: &[u32]) -> Result<Tensor> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.rows) {
            candle_core::bail!(
                "token id {id} is out of range for a vocabulary of {}",
                self.rows
            )
        }
        let ids = Tensor::new(ids, self.ids.device())?;
        let out = self.qtensor().embedding(&ids)?;
        debug_assert_eq!(out.dtype(), DType::F32);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::uniform_values;
    use candle_core::quantized::GgmlDType;

    /// The gather is the dequantization: whole, by block and by id, for each quant type the
    /// models use.
    #[test]
    fn gathered_rows_are_the_dequantized_matrix() {
        let dev = Device::Cpu;
        for dtype in [
            GgmlDType::Q4K,
            GgmlDType::Q6K,
            GgmlDType::Q8_0,
            GgmlDType::F16,
        ] {
            let (rows, cols) = (40, 256);
            let w =
                Tensor::from_vec(uniform_values(rows * cols, 3, 1.0), (rows, cols), &dev).unwrap();
            let q = Arc::new(QWeight::new(QTensor::quantize(&w, dtype).unwrap()).unwrap());
            let want = q.dequantize(&dev).unwrap();
            let m = DeviceMatrix::new(&q, &dev).unwrap();
            let diff = |a: &Tensor, b: &Tensor| {
                (a - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            assert_eq!(diff(&m.all_f32().unwrap(), &want), 0.0, "{dtype:?} whole");
            let block = m.rows_f32(8, 24).unwrap();
            assert_eq!(
                diff(&block, &want.narrow(0, 8, 16).unwrap()),
                0.0,
                "{dtype:?} rows"
            );
            let ids = [39u32, 0, 7, 7];
            let got = m.gather_f32(&ids).unwrap();
            let idx = Tensor::new(&ids, &dev).unwrap();
            assert_eq!(
                diff(&got, &want.index_select(&idx, 0).unwrap()),
                0.0,
                "{dtype:?} ids"
            );
            let err = m.gather_f32(&[40]).unwrap_err().to_string();
            assert!(err.contains("token id 40 is out of range"), "{err}");
        }
    }
}
