//! `acf-index doctor`: what this build and machine can do, for bug reports and set-up checks.

use std::fmt;

/// Facts about the build and the machine.
#[derive(Debug, serde::Serialize)]
pub struct DoctorReport {
    pub acf_index_version: String,
    /// libtorch version this binary was built against.
    pub libtorch_version: String,
    /// Path of the libtorch shared library actually loaded.
    pub libtorch_loaded_from: Option<String>,
    /// Whether libtorch_cuda is linked into the process.
    pub cuda_linked: bool,
    pub cuda_available: bool,
    pub cuda_devices: i64,
    pub cudnn_available: bool,
    pub cpu_threads: i32,
    pub gdal: Option<GdalReport>,
}

/// GDAL's version and the drivers acf-index relies on.
#[derive(Debug, serde::Serialize)]
pub struct GdalReport {
    pub version: String,
    /// (driver name, present) for GTiff, COG and the JPEG 2000 drivers.
    pub drivers: Vec<(String, bool)>,
}

/// Collects the report (cheap: no model is loaded).
pub fn collect() -> DoctorReport {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let loaded = |name: &str| {
        maps.lines().find(|l| l.contains(name)).and_then(|l| l.split_whitespace().last()).map(String::from)
    };
    DoctorReport {
        acf_index_version: env!("CARGO_PKG_VERSION").to_string(),
        libtorch_version: env!("ACF_LIBTORCH_BUILD_VERSION").to_string(),
        libtorch_loaded_from: loaded("libtorch_cpu.so"),
        cuda_linked: loaded("libtorch_cuda.so").is_some(),
        cuda_available: tch::Cuda::is_available(),
        cuda_devices: tch::Cuda::device_count(),
        cudnn_available: tch::Cuda::cudnn_is_available(),
        cpu_threads: tch::get_num_threads(),
        gdal: gdal_report(),
    }
}

#[cfg(feature = "gdal")]
fn gdal_report() -> Option<GdalReport> {
    let drivers = ["GTiff", "COG", "JP2OpenJPEG", "JPEG2000", "JP2ECW", "JP2KAK"]
        .iter()
        .map(|name| (name.to_string(), gdal::DriverManager::get_driver_by_name(name).is_ok()))
        .collect();
    Some(GdalReport { version: gdal::version::version_info("RELEASE_NAME"), drivers })
}

#[cfg(not(feature = "gdal"))]
fn gdal_report() -> Option<GdalReport> {
    None
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        writeln!(f, "acf-index        {}", self.acf_index_version)?;
        writeln!(f, "libtorch         {} (built against)", self.libtorch_version)?;
        writeln!(
            f,
            "  loaded from    {}",
            self.libtorch_loaded_from.as_deref().unwrap_or("(not found in process maps)")
        )?;
        writeln!(f, "CUDA linked      {}", yes(self.cuda_linked))?;
        writeln!(
            f,
            "CUDA available   {} ({} device(s), cuDNN {})",
            yes(self.cuda_available),
            self.cuda_devices,
            yes(self.cudnn_available)
        )?;
        writeln!(f, "CPU threads      {}", self.cpu_threads)?;
        match &self.gdal {
            None => writeln!(f, "GDAL             not built in (cargo feature `gdal` off)")?,
            Some(g) => {
                writeln!(f, "GDAL             {}", g.version)?;
                for (name, present) in &g.drivers {
                    writeln!(f, "  driver {name:<13}{}", yes(*present))?;
                }
            }
        }
        Ok(())
    }
}
