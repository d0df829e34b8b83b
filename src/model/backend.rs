//! How the model executes, chosen once at load and consulted by every op that has two forms.
//!
//! Owns: [`Backend`] (our CPU kernels, or candle's device-generic ops that CUDA and Metal run),
//! the resolution of the user's [`BackendChoice`] (`--backend`, `backend:` in a recipe; the value
//! is `recipe::device`'s) against the device and dtype, the [`Execution`] a model is loaded
//! with, and a per-thread count of CPU kernel entries that tests use to prove the Candle backend
//! runs none of them.
//! Does not: pick the device (see `device`) or implement any op (each op's two forms sit side by
//! side in its own file under `ops`: linear, adapted, norm, rope, activation, attention, head).
//!
//! No op decides from `device.is_cpu()`: an op is handed the backend and matches on it.

use std::cell::Cell;

use candle_core::{DType, Device, Tensor};

pub use crate::recipe::BackendChoice;

/// How every op of a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Our f32 CPU kernels: custom ops with hand-written backwards, pairs one per core.
    CpuKernels,
    /// candle's device-generic ops (what CUDA and Metal run; on the CPU, for tests that hold
    /// the two forms against each other).
    Candle,
}

impl BackendChoice {
    /// The backend for `device` and `dtype`, or why the choice cannot run there.
    pub fn resolve(self, device: &Device, dtype: DType) -> Result<Backend, String> {
        if dtype == DType::F16 {
            return Err(
                "f16 is refused: Gemma 3's residual stream leaves its range (±65504); \
                        use bf16, which takes the same memory"
                    .into(),
            );
        }
        let kernels_fit = kernels_fit(device, dtype);
        match self {
            Self::Auto if kernels_fit => Ok(Backend::CpuKernels),
            Self::Auto if device.is_cpu() => Err(format!(
                "{dtype:?} on the CPU: the CPU runs f32 (--backend candle computes {dtype:?} \
                 there, slowly, for testing)"
            )),
            Self::Auto | Self::Candle => Ok(Backend::Candle),
            Self::CpuKernels if kernels_fit => Ok(Backend::CpuKernels),
            Self::CpuKernels => Err(format!(
                "cpu-kernels runs f32 on the CPU only, not {dtype:?} on {:?}; use --backend \
                 candle or auto",
                device.location()
            )),
        }
    }
}

/// Whether our CPU kernels can run `dtype` on `device`: f32 on the CPU only. The one place the
/// rule is written (the backend choice, the load and every kernel entry ask it).
pub fn kernels_fit(device: &Device, dtype: DType) -> bool {
    device.is_cpu() && dtype == DType::F32
}

/// Where and how a model runs: fixed when it is loaded.
#[derive(Debug, Clone)]
pub struct Execution {
    pub device: Device,
    /// Activation type of the forward (the log-softmax, the loss and the LoRA weights stay f32).
    pub dtype: DType,
    pub backend: Backend,
}

impl Execution {
    /// f32 on the CPU with our kernels: what the tests and CPU users run.
    pub fn cpu() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            backend: Backend::CpuKernels,
        }
    }

    /// The user's three choices resolved: `dtype` against the device, then the backend.
    pub fn choose(
        device: Device,
        dtype: crate::device::ComputeDtype,
        backend: BackendChoice,
    ) -> Result<Self, String> {
        let dtype = dtype.resolve(&device);
        let backend = backend.resolve(&device, dtype)?;
        Ok(Self {
            device,
            dtype,
            backend,
        })
    }

    /// candle's ops on the CPU in `dtype`: the GPU's path, run where a test can compare it.
    pub fn candle_on_cpu(dtype: DType) -> Self {
        Self {
            device: Device::Cpu,
            dtype,
            backend: Backend::Candle,
        }
    }
}

thread_local! {
    static KERNEL_ENTRIES: Cell<u64> = const { Cell::new(0) };
}

/// How many CPU kernels this thread has entered. The Candle backend runs on the calling thread
/// (no per-core lanes), so a test that runs it and sees this unchanged has run no CPU kernel.
pub fn cpu_kernel_entries() -> u64 {
    KERNEL_ENTRIES.with(|c| c.get())
}

/// Called at the entry of every CPU kernel with its main input: counts the entry, and refuses
/// a tensor the kernels cannot read (a model loaded with the CPU kernels holds only such).
pub(crate) fn enter_cpu_kernel(op: &str, x: &Tensor) -> candle_core::Result<()> {
    KERNEL_ENTRIES.with(|c| c.set(c.get() + 1));
    if !kernels_fit(x.device(), x.dtype()) {
        candle_core::bail!(
            "{op}: the CPU kernels take f32 on the CPU, got {:?} on {:?}",
            x.dtype(),
            x.device().location()
        )
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_the_kernels_for_cpu_f32_only() {
        let cpu = Device::Cpu;
        assert_eq!(
            BackendChoice::Auto.resolve(&cpu, DType::F32),
            Ok(Backend::CpuKernels)
        );
        assert!(BackendChoice::Auto.resolve(&cpu, DType::BF16).is_err());
        assert_eq!(
            BackendChoice::Candle.resolve(&cpu, DType::BF16),
            Ok(Backend::Candle)
        );
        let e = BackendChoice::CpuKernels
            .resolve(&cpu, DType::BF16)
            .unwrap_err();
        assert!(e.contains("--backend candle"), "{e}");
        for choice in [BackendChoice::Auto, BackendChoice::Candle] {
            let e = choice.resolve(&cpu, DType::F16).unwrap_err();
            assert!(e.contains("use bf16"), "{e}");
        }
    }
}
