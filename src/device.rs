//! Which device a command runs on: `--device auto|cpu|cuda[:N]|metal`, and `device:` in a recipe.
//!
//! Owns: opening the choice (the value and its parsing are `recipe::device`'s), resolving `auto`
//! (CUDA, then Metal, then the CPU), saying which one was picked, a clear error when a device was
//! asked for that this build or machine lacks, the activation type a `ComputeDtype` resolves to,
//! and how much memory a device has free.
//! The CPU build carries no GPU code: `cuda` needs `--features cuda` (scripts/build-cuda.sh),
//! `metal` needs `--features metal`.

use candle_core::Device;

pub use crate::recipe::{ComputeDtype, DeviceChoice};

impl ComputeDtype {
    pub fn resolve(self, device: &Device) -> candle_core::DType {
        use candle_core::DType;
        match self {
            Self::Auto if device.is_cuda() => DType::BF16,
            Self::Auto | Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
            Self::F16 => DType::F16,
        }
    }
}

/// The device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("--device {0}: this dpo-lora was built without {1} support; build it with `{2}`")]
    NotBuilt(DeviceChoice, &'static str, &'static str),
    #[error("--device {0}: {1}")]
    Open(DeviceChoice, String),
}

impl DeviceChoice {
    /// Open the device. `auto` never fails: it falls back to the CPU.
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) => {
                if !cfg!(feature = "cuda") {
                    return Err(DeviceError::NotBuilt(self, "CUDA", "scripts/build-cuda.sh"));
                }
                Device::new_cuda(n).map_err(|e| DeviceError::Open(self, first_line(&e)))
            }
            Self::Metal => {
                if !cfg!(feature = "metal") {
                    return Err(DeviceError::NotBuilt(
                        self,
                        "Metal",
                        "cargo build --release --features metal",
                    ));
                }
                Device::new_metal(0).map_err(|e| DeviceError::Open(self, first_line(&e)))
            }
            Self::Auto => {
                if candle_core::utils::cuda_is_available() {
                    if let Ok(d) = Device::new_cuda(0) {
                        return Ok(d);
                    }
                }
                if candle_core::utils::metal_is_available() {
                    if let Ok(d) = Device::new_metal(0) {
                        return Ok(d);
                    }
                }
                Ok(Device::Cpu)
            }
        }
    }

    /// [`open`](Self::open), then say on stderr which device was picked (and why, for `auto`).
    pub fn open_and_report(self) -> Result<Device, DeviceError> {
        let d = self.open()?;
        let what = describe(&d);
        match self {
            Self::Auto => {
                let built: Vec<&str> = [
                    ("cuda", cfg!(feature = "cuda")),
                    ("metal", cfg!(feature = "metal")),
                ]
                .iter()
                .filter(|(_, b)| *b)
                .map(|(n, _)| *n)
                .collect();
                let why = if d.is_cpu() && built.is_empty() {
                    " (this build has no GPU support)"
                } else if d.is_cpu() {
                    " (no GPU found)"
                } else {
                    ""
                };
                eprintln!("device: {what} (auto){why}");
            }
            _ => eprintln!("device: {what}"),
        }
        Ok(d)
    }
}

/// A device in words, for logs and reports.
pub fn describe(d: &Device) -> String {
    match d {
        Device::Cpu => format!(
            "cpu ({} threads)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}

/// Bytes `device` can still allocate, where that is known: `MemAvailable` on a Linux CPU, the
/// device's free memory on CUDA (`cuMemGetInfo`); `None` on Metal and elsewhere.
pub fn free_memory(device: &Device) -> Option<u64> {
    match device {
        Device::Cpu => {
            let text = std::fs::read_to_string("/proc/meminfo").ok()?;
            let kb: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kb * 1024)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(c) => {
            let (free, _total) = c.cuda_stream().context().mem_get_info().ok()?;
            Some(free as u64)
        }
        _ => None,
    }
}

fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_falls_back() {
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("CUDA:1".parse(), Ok(DeviceChoice::Cuda(1)));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert!("tpu"
            .parse::<DeviceChoice>()
            .unwrap_err()
            .contains("cuda:N"));
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
        // This machine has no GPU: auto must land on the CPU whatever the build.
        if !cfg!(any(feature = "cuda", feature = "metal")) {
            assert!(DeviceChoice::Auto.open().unwrap().is_cpu());
            let e = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
            assert!(
                e.contains("built without CUDA") && e.contains("build-cuda.sh"),
                "{e}"
            );
        }
    }
}
