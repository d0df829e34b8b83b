//! f32 views of host tensors for the CPU kernels' custom ops, and how many rows one rayon task
//! takes.
//!
//! Owns: reading a CPU storage or tensor as contiguous f32 (copied only when not contiguous).
//! Does not: compute anything.

use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};

/// Floats handed to one rayon task: below this the task overhead outweighs the work.
pub(crate) const TASK_FLOATS: usize = 1 << 14;

/// Rows of `row` floats per rayon task.
pub(crate) fn task_rows(row: usize) -> usize {
    (TASK_FLOATS / row.max(1)).max(1)
}

/// Runs `f` on the f32 values of `t` in row-major order (copied only when `t` is not contiguous).
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("the CPU kernels run on the CPU only")
    };
    f(contiguous_f32(cpu, layout)?)
}

pub(crate) fn last_dim(layout: &Layout) -> Result<usize> {
    match layout.dims().last() {
        Some(&d) if d > 0 => Ok(d),
        _ => candle_core::bail!("CPU kernel: empty last dimension in {:?}", layout.dims()),
    }
}

/// The f32 values of the three contiguous arguments of a `CustomOp3`.
pub(crate) fn contiguous_f32x3<'a>(
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
    (s3, l3): (&'a CpuStorage, &Layout),
) -> Result<(&'a [f32], &'a [f32], &'a [f32])> {
    Ok((
        contiguous_f32(s1, l1)?,
        contiguous_f32(s2, l2)?,
        contiguous_f32(s3, l3)?,
    ))
}

/// The f32 values of a contiguous CPU storage (the op is only applied to contiguous inputs).
pub(crate) fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!(
            "expected f32 activations, got {:?}",
            candle_core::backend::BackendStorage::dtype(storage)
        )
    };
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("expected contiguous activations"),
    }
}
