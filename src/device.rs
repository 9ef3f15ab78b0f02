//! `--device auto|cpu|cuda|cuda:N`: chosen once, then handed to everything else.

use std::str::FromStr;

use tch::{Cuda, Device};

use crate::error::{AcfError, Result};

/// What the user asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA device 0 when CUDA is available, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = AcfError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| AcfError::Device { spec: s.to_string(), reason: reason.to_string() };
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) => {
                    n.parse().map(DeviceChoice::Cuda).map_err(|_| bad("expected cuda:N with N a number"))
                }
                None => Err(bad("expected auto, cpu, cuda or cuda:N")),
            },
        }
    }
}

impl DeviceChoice {
    /// The tch device, checking that a requested CUDA device exists.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceChoice::Auto => Ok(Device::cuda_if_available()),
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(n) => {
                let spec = format!("cuda:{n}");
                if !Cuda::is_available() {
                    return Err(AcfError::Device {
                        spec,
                        reason: "CUDA is not available (no GPU visible, or libtorch without CUDA)".into(),
                    });
                }
                let count = Cuda::device_count() as usize;
                if n >= count {
                    return Err(AcfError::Device {
                        spec,
                        reason: format!("only {count} CUDA device(s) visible"),
                    });
                }
                Ok(Device::Cuda(n))
            }
        }
    }
}

/// Human name of a device (`cpu`, `cuda:0`).
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Makes the C allocator keep freed memory for reuse instead of handing it back to the
/// kernel (glibc: no `mmap` for large blocks, no trimming of the heap top). libtorch
/// allocates and frees tensors of tens of megabytes per layer; by default glibc maps every
/// block over 32 MiB afresh, and the kernel's page faults and page zeroing then cost about a
/// third of the image encoder's CPU time at batch 64. The price: the process keeps its peak
/// memory until it exits. For commands that encode many images; process-wide, call early.
/// Returns whether the setting took effect (false on non-glibc targets).
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_MAX: c_int = -4;
        unsafe extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        // SAFETY: mallopt only changes glibc malloc's tuning parameters; both parameters
        // accept these values and may be changed at any time, from any thread.
        unsafe { mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, c_int::MAX) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Peak resident memory of this process (VmHWM), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_specs() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(3));
        let err = "cuda:x".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(err.contains("cuda:x"), "{err}");
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn missing_cuda_device_is_a_clear_error() {
        let err = DeviceChoice::Cuda(99).resolve().unwrap_err().to_string();
        assert!(err.contains("cuda:99"), "{err}");
        assert_eq!(DeviceChoice::Cpu.resolve().unwrap(), Device::Cpu);
    }
}
