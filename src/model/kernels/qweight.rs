//! A frozen weight matrix kept in its GGUF quant type, dequantized on demand, a row range at a time.
//!
//! Owns: the bytes of one `(rows, cols)` weight (any type of [`crate::gguf::is_supported`]),
//! dequantization of row ranges to f32, and the f32 matrix products the model builds on
//! (`x · Wᵀ`, `g · W`), computed block of rows by block of rows so a whole f32 copy of a large
//! matrix (Gemma's 262,144 x 640 embedding is 671 MB) never exists.
//! Does not: track gradients (see `ops::linear` and `ops::head`, which wrap these products in ops).
//!
//! Why dequantize-then-f32 rather than candle's quantized kernel: that kernel quantizes the
//! activations to 8 bits and lands 0.2-1.3 nats per sequence away from the f32 reference; on
//! this CPU dequantize + f32 gemm was also faster at training sequence lengths (FACTS.md).

use std::borrow::Cow;

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0,
};
use candle_core::quantized::{GgmlDType, GgmlType, QStorage, QTensor};
use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

/// Rows dequantized per block in the streaming products: 64 rows of a 2048-wide matrix is 512 KB,
/// which stays in L2 while the gemm walks it.
const ROW_BLOCK: usize = 256;

pub struct QWeight {
    q: QTensor,
    rows: usize,
    cols: usize,
}

impl std::fmt::Debug for QWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "QWeight({:?}, {}x{})",
            self.q.dtype(),
            self.rows,
            self.cols
        )
    }
}

impl QWeight {
    /// `q` must be 2-D `(rows, cols)` with `cols` a multiple of the block size (checked by the
    /// GGUF reader before the data is read).
    pub fn new(q: QTensor) -> Result<Self> {
        let (rows, cols) = q.shape().dims2()?;
        Ok(Self { q, rows, cols })
    }

    /// A 1-D tensor (norm weight, bias) as a plain f32 tensor.
    pub fn vector(q: &QTensor, device: &Device) -> Result<Tensor> {
        q.dequantize(device)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn dtype(&self) -> GgmlDType {
        self.q.dtype()
    }
    pub fn qtensor(&self) -> &QTensor {
        &self.q
    }
    pub fn size_in_bytes(&self) -> usize {
        self.q.storage_size_in_bytes()
    }

    fn row_bytes(&self) -> usize {
        self.cols / self.dtype().block_size() * self.dtype().type_size()
    }

    fn data(&self) -> Result<Cow<'_, [u8]>> {
        self.q.data()
    }

    /// Reorder rows: row `i` of the result is row `perm[i]` of `self`. Used once at load time to
    /// undo llama.cpp's Q/K row permutation for llama-type models, so that every tensor inside
    /// dpo-lora (and every LoRA B) is in Hugging Face's row order.
    pub fn permute_rows(&self, perm: &[usize]) -> Result<Self> {
        if perm.len() != self.rows {
            candle_core::bail!(
                "row permutation of length {} for {} rows",
                perm.len(),
                self.rows
            )
        }
        let rb = self.row_bytes();
        let data = self.data()?;
        let mut out = Vec::with_capacity(data.len());
        for &r in perm {
            if r >= self.rows {
                candle_core::bail!("row permutation index {r} out of range")
            }
            out.extend_from_slice(&data[r * rb..(r + 1) * rb]);
        }
        let storage = QStorage::from_data(Cow::Owned(out), &self.q.device(), self.dtype())?;
        Self::new(QTensor::new(storage, (self.rows, self.cols))?)
    }

    /// Dequantize rows `r0..r1` into `out` (length `(r1 - r0) * cols`).
    pub fn dequantize_rows(&self, r0: usize, r1: usize, out: &mut [f32]) -> Result<()> {
        let data = self.data()?;
        self.dequantize_rows_from(&data, r0, r1, out)
    }

    fn dequantize_rows_from(
        &self,
        data: &[u8],
        r0: usize,
        r1: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let rb = self.row_bytes();
        if r1 > self.rows || r0 > r1 || out.len() != (r1 - r0) * self.cols {
            candle_core::bail!("dequantize_rows {r0}..{r1} of {} rows", self.rows)
        }
        let bytes = &data[r0 * rb..r1 * rb];
        // Split the rows across threads; each thread converts whole blocks.
        let per_thread = ((r1 - r0) / rayon::current_num_threads().max(1)).max(16);
        out.par_chunks_mut(per_thread * self.cols)
            .zip(bytes.par_chunks(per_thread * rb))
            .try_for_each(|(o, b)| to_f32(self.dtype(), b, o))
    }

    /// Dequantize the listed rows (token ids for an embedding lookup) into a `(ids.len(), cols)`
    /// f32 tensor. Ids are checked against the row count.
    pub fn gather_rows(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        let data = self.data()?;
        let mut out = vec![0f32; ids.len() * self.cols];
        for (i, &id) in ids.iter().enumerate() {
            let r = id as usize;
            if r >= self.rows {
                candle_core::bail!(
                    "token id {id} is out of range for a vocabulary of {}",
                    self.rows
                )
            }
            let rb = self.row_bytes();
            to_f32(
                self.dtype(),
                &data[r * rb..(r + 1) * rb],
                &mut out[i * self.cols..(i + 1) * self.cols],
            )?;
        }
        Tensor::from_vec(out, (ids.len(), self.cols), device)
    }

    /// The whole matrix in f32 (for tests and small matrices).
    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        let mut out = vec![0f32; self.rows * self.cols];
        self.dequantize_rows(0, self.rows, &mut out)?;
        Tensor::from_vec(out, (self.rows, self.cols), device)
    }

    /// Call `f(r0, r1, w)` for consecutive blocks of rows, `w` the block dequantized to f32
    /// `(r1 - r0, cols)`. One buffer is reused, so at most `ROW_BLOCK` rows exist in f32.
    fn for_each_row_block(&self, mut f: impl FnMut(usize, usize, &[f32])) -> Result<()> {
        let data = self.data()?;
        let mut wbuf = vec![0f32; ROW_BLOCK.min(self.rows) * self.cols];
        let mut r0 = 0;
        while r0 < self.rows {
            let r1 = (r0 + ROW_BLOCK).min(self.rows);
            let w = &mut wbuf[..(r1 - r0) * self.cols];
            self.dequantize_rows_from(&data, r0, r1, w)?;
            f(r0, r1, w);
            r0 = r1;
        }
        Ok(())
    }

    /// `y = x · Wᵀ` for `x` `(n, cols)` row-major: returns `(n, rows)` row-major.
    pub fn matmul_t(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let (rows, cols) = (self.rows, self.cols);
        if x.len() != n * cols {
            candle_core::bail!("matmul_t: x has {} values, expected {n} x {cols}", x.len())
        }
        let mut y = vec![0f32; n * rows];
        self.for_each_row_block(|r0, r1, w| {
            // y[:, r0..r1] = x (n, cols) · w (r1-r0, cols)ᵀ
            unsafe {
                gemm_f32(
                    n,
                    r1 - r0,
                    cols,
                    y.as_mut_ptr().add(r0),
                    1,
                    rows as isize,
                    false,
                    x.as_ptr(),
                    1,
                    cols as isize,
                    w.as_ptr(),
                    cols as isize,
                    1,
                );
            }
        })?;
        Ok(y)
    }

    /// `gx = g · W` for `g` `(n, rows)` row-major: returns `(n, cols)` row-major. The input
    /// gradient of `x · Wᵀ`; no weight gradient is ever formed.
    pub fn matmul(&self, g: &[f32], n: usize) -> Result<Vec<f32>> {
        let (rows, cols) = (self.rows, self.cols);
        if g.len() != n * rows {
            candle_core::bail!("matmul: g has {} values, expected {n} x {rows}", g.len())
        }
        let mut gx = vec![0f32; n * cols];
        self.for_each_row_block(|r0, r1, w| {
            // gx += g[:, r0..r1] (n, r1-r0) · w (r1-r0, cols)
            unsafe {
                gemm_f32(
                    n,
                    cols,
                    r1 - r0,
                    gx.as_mut_ptr(),
                    1,
                    cols as isize,
                    r0 > 0,
                    g.as_ptr().add(r0),
                    1,
                    rows as isize,
                    w.as_ptr(),
                    1,
                    cols as isize,
                );
            }
        })?;
        Ok(gx)
    }
}

/// `dst (m, n) [+]= lhs (m, k) · rhs (k, n)`, all strided; `accumulate` adds to `dst`.
/// Safety: the pointers must cover the strided extents.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: isize,
    dst_rs: isize,
    accumulate: bool,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
) {
    let threads = super::lanes::gemm_threads();
    let par = if threads > 1 && m * n * k > 64 * 64 * 64 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs,
        dst_rs,
        accumulate,
        lhs,
        lhs_cs,
        lhs_rs,
        rhs,
        rhs_cs,
        rhs_rs,
        if accumulate { 1.0 } else { 0.0 },
        1.0,
        false,
        false,
        false,
        par,
    )
}

/// `dst (m, n) [+]= lhs · rhs` with `lhs` `(m, k)` and `rhs` `(k, n)` read through (row, column)
/// strides, so a transpose is a swap of strides.
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

pub(crate) fn product(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    lhs: Mat,
    rhs: Mat,
    add: bool,
) {
    let last =
        |rows: usize, cols: usize, mt: &Mat| (rows.max(1) - 1) * mt.rs + (cols.max(1) - 1) * mt.cs;
    assert!(dst.len() >= m * n, "product: destination too small");
    assert!(
        lhs.data.len() > last(m, k, &lhs) || m * k == 0,
        "product: lhs too small"
    );
    assert!(
        rhs.data.len() > last(k, n, &rhs) || k * n == 0,
        "product: rhs too small"
    );
    // Safety: the asserts above bound every strided read and the row-major write.
    unsafe {
        gemm_f32(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            add,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
        );
    }
}

/// Row-major `(rows, cols)`.
pub(crate) fn rm(data: &[f32], cols: usize) -> Mat<'_> {
    Mat {
        data,
        rs: cols,
        cs: 1,
    }
}

/// The transpose of row-major `(rows, cols)`, as `(cols, rows)`.
pub(crate) fn tr(data: &[f32], cols: usize) -> Mat<'_> {
    Mat {
        data,
        rs: 1,
        cs: cols,
    }
}

fn to_f32(dtype: GgmlDType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    use GgmlDType::*;
    match dtype {
        F32 => blocks::<f32>(bytes, out),
        F16 => blocks::<half::f16>(bytes, out),
        BF16 => blocks::<half::bf16>(bytes, out),
        Q4_0 => blocks::<BlockQ4_0>(bytes, out),
        Q4_1 => blocks::<BlockQ4_1>(bytes, out),
        Q5_0 => blocks::<BlockQ5_0>(bytes, out),
        Q5_1 => blocks::<BlockQ5_1>(bytes, out),
        Q8_0 => blocks::<BlockQ8_0>(bytes, out),
        Q2K => blocks::<BlockQ2K>(bytes, out),
        Q3K => blocks::<BlockQ3K>(bytes, out),
        Q4K => blocks::<BlockQ4K>(bytes, out),
        Q5K => blocks::<BlockQ5K>(bytes, out),
        Q6K => blocks::<BlockQ6K>(bytes, out),
        other => candle_core::bail!("cannot dequantize {other:?}"),
    }
}

fn blocks<T: GgmlType>(bytes: &[u8], out: &mut [f32]) -> Result<()> {
    // candle stores CPU quantized data as a Vec of blocks, so its bytes are aligned for T;
    // check rather than assume (the data came from an untrusted file).
    let (pre, xs, post) = unsafe { bytes.align_to::<T>() };
    if !pre.is_empty() || !post.is_empty() || xs.len() * T::BLCK_SIZE != out.len() {
        candle_core::bail!(
            "misaligned or short {:?} data: {} bytes for {} values",
            T::DTYPE,
            bytes.len(),
            out.len()
        )
    }
    T::to_float(xs, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_mat(rows: usize, cols: usize, seed: u64) -> Tensor {
        Tensor::from_vec(
            crate::synth::uniform_values(rows * cols, seed, 1.0),
            (rows, cols),
            &Device::Cpu,
        )
        .unwrap()
    }

    #[test]
    fn dequantize_rows_matches_candle() {
        for dt in [
            GgmlDType::F32,
            GgmlDType::F16,
            GgmlDType::Q4_0,
            GgmlDType::Q5_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
            GgmlDType::Q8_0,
        ] {
            let w = rand_mat(300, 512, 7);
            let q = QTensor::quantize(&w, dt).unwrap();
            let reference = q.dequantize(&Device::Cpu).unwrap();
            let qw = QWeight::new(q).unwrap();
            let ours = qw.dequantize(&Device::Cpu).unwrap();
            let diff = (ours - &reference)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(diff, 0.0, "{dt:?}");
            let rows = qw.gather_rows(&[5, 299, 0], &Device::Cpu).unwrap();
            let want = reference
                .index_select(&Tensor::new(&[5u32, 299, 0], &Device::Cpu).unwrap(), 0)
                .unwrap();
            assert_eq!(
                (rows - want)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap(),
                0.0
            );
        }
    }

    #[test]
    fn products_match_dense_f32() {
        let w = rand_mat(600, 256, 1);
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let qw = QWeight::new(q).unwrap();
        let wd = qw.dequantize(&Device::Cpu).unwrap();
        let x = rand_mat(5, 256, 2);
        let y = qw
            .matmul_t(&x.flatten_all().unwrap().to_vec1().unwrap(), 5)
            .unwrap();
        let want = x
            .matmul(&wd.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, b) in y.iter().zip(want.iter()) {
            assert!((a - b).abs() < 1e-4, "{a} {b}");
        }
        let g = rand_mat(5, 600, 3);
        let gx = qw
            .matmul(&g.flatten_all().unwrap().to_vec1().unwrap(), 5)
            .unwrap();
        let want = g
            .matmul(&wd)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, b) in gx.iter().zip(want.iter()) {
            assert!((a - b).abs() < 1e-4, "{a} {b}");
        }
    }
}
