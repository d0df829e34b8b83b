//! A value computed outside the autograd graph, handed to it as a custom op's output.
//!
//! Owns: taking the stashed tensor once and giving its storage to candle as the op's forward
//! result, on the CPU, CUDA or Metal. Used where a value's graph would cost more than its
//! backward: a checkpointed block's output (`recompute`) and a frozen linear's product whose
//! dequantized weight must not stay alive (`ops::linear::given`).

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, Layout, MetalStorage, Result, Shape, Storage, Tensor};

/// Take the tensor a custom op hands to the graph as its value, as `(storage, shape)`: its
/// storage is cloned once (one activation).
pub(crate) fn handover<T>(
    stash: &Mutex<Option<Tensor>>,
    pick: impl Fn(&Storage, &Layout) -> Result<T>,
) -> Result<(T, Shape)> {
    let y = stash
        .lock()
        .map_err(|_| candle_core::Error::Msg("handover: poisoned output".into()))?
        .take()
        .ok_or_else(|| candle_core::Error::Msg("handover: output taken twice".into()))?
        .contiguous()?;
    let (s, l) = y.storage_and_layout();
    if l.start_offset() != 0 {
        candle_core::bail!("handover: handed-over output is a view")
    }
    Ok((pick(&s, l)?, y.shape().clone()))
}

pub(crate) fn cpu(s: &Storage, l: &Layout) -> Result<CpuStorage> {
    match s {
        Storage::Cpu(s) => s.try_clone(l),
        _ => candle_core::bail!("handover: output is not on the CPU"),
    }
}

pub(crate) fn cuda(s: &Storage, l: &Layout) -> Result<CudaStorage> {
    match s {
        Storage::Cuda(s) => s.try_clone(l),
        _ => candle_core::bail!("handover: output is not on the CUDA device"),
    }
}

pub(crate) fn metal(s: &Storage, l: &Layout) -> Result<MetalStorage> {
    match s {
        Storage::Metal(s) => s.try_clone(l),
        _ => candle_core::bail!("handover: output is not on the Metal device"),
    }
}
