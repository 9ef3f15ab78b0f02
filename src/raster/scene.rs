//! One scene opened with GDAL: which three bands become R, G, B, how their values become
//! 8 bits, where its nodata is, and windowed reads of single chips (never the whole scene).

use gdal::raster::{ColorInterpretation, GdalDataType, RasterBand, ResampleAlg};
use gdal::{Dataset, Metadata};

use super::footprint::{Georef, crs_name};
use super::stretch::Stretch;
use super::tiling::Window;
use crate::error::{AcfError, Result};

/// How to read scenes (from the command line).
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// 1-based band numbers for R, G, B (`--bands`); one number is replicated.
    pub bands: Option<Vec<usize>>,
    /// Fixed value range mapped to 0..=255 for every band (`--scale MIN,MAX`).
    pub scale: Option<(f64, f64)>,
}

/// Pixel data of one window, three planes of `width*height` values.
#[derive(Debug, Clone)]
pub enum WindowData {
    /// 8-bit bands, used as they are.
    Byte(Vec<u8>),
    /// Other types, to be stretched.
    Float(Vec<f32>),
}

/// One window read from a scene, before conversion to a model chip.
#[derive(Debug, Clone)]
pub struct RawChip {
    /// The window in scene pixels (what the footprint and the catalog record).
    pub window: Window,
    /// Width and height of `data`: the window's own size, or the buffer it was resampled into.
    pub size: (usize, usize),
    pub data: WindowData,
    /// Per pixel of `data`: valid (not nodata / masked / NaN). `None` = all valid.
    pub valid: Option<Vec<bool>>,
    /// Valid pixels over the window's area (the padding of a scene smaller than a chip is
    /// not counted: such a scene is indexed as padded chips).
    pub valid_fraction: f32,
}

/// An open scene.
pub struct Scene {
    pub path: String,
    dataset: Dataset,
    /// 1-based band numbers read as R, G, B.
    pub bands: [usize; 3],
    pub width: usize,
    pub height: usize,
    /// Per-band stretch (`None` for 8-bit bands read as they are).
    pub stretch: Option<[Stretch; 3]>,
    masked: bool,
    /// RGB of each index of a paletted single-band scene (its colour table, expanded).
    palette: Option<Vec<[u8; 3]>>,
    pub georef: Option<Georef>,
    pub crs: Option<String>,
    /// Ground sample distance in metres (from the georeferencing; `None` without it).
    pub pixel_size_m: Option<f64>,
    pub acquired_us: Option<i64>,
    /// Things the operator should know (band replication, missing georeferencing).
    pub warnings: Vec<String>,
}

impl Scene {
    /// Opens `path` with GDAL and works out bands, stretch, masks and georeferencing.
    pub fn open(path: &str, opts: &ReadOptions) -> Result<Scene> {
        let bad = |reason: String| AcfError::Raster { path: path.to_string(), reason };
        if let Some(reason) = local_file_problem(path) {
            return Err(bad(reason));
        }
        let dataset = Dataset::open(path).map_err(|e| bad(format!("not a raster GDAL can open ({e})")))?;
        let count = dataset.raster_count();
        let (width, height) = dataset.raster_size();
        if count == 0 || width == 0 || height == 0 {
            return Err(bad("has no raster bands".into()));
        }
        let mut warnings = Vec::new();
        let bands = select_bands(&dataset, opts.bands.as_deref(), &mut warnings).map_err(bad)?;
        let band = |i: usize| dataset.rasterband(i).map_err(|e| bad(format!("band {i}: {e}")));
        let mut masked = false;
        let mut all_byte = true;
        for &b in &bands {
            let rb = band(b)?;
            let t = rb.band_type();
            if matches!(t, GdalDataType::Unknown) {
                return Err(bad(format!("band {b} has an unsupported data type")));
            }
            all_byte &= t == GdalDataType::UInt8;
            masked |= t.is_floating() || !rb.mask_flags().map(|f| f.is_all_valid()).unwrap_or(true);
        }
        let stretch = match (opts.scale, all_byte) {
            (Some((lo, hi)), _) => Some([Stretch { lo, hi }; 3]),
            (None, true) => None,
            (None, false) => {
                let mut s = [Stretch { lo: 0.0, hi: 1.0 }; 3];
                for (k, &b) in bands.iter().enumerate() {
                    let mut sample =
                        sample_values(&band(b)?, width, height).map_err(|e| bad(e.to_string()))?;
                    s[k] = Stretch::from_percentiles(&mut sample, 2.0, 98.0)
                        .unwrap_or(Stretch { lo: 0.0, hi: 1.0 });
                }
                Some(s)
            }
        };
        let palette = palette_of(&dataset, &bands, opts.bands.is_some());
        if palette.is_some() {
            warnings.retain(|w| !w.contains("replicated"));
        }
        let (georef, crs) = georeferencing(&dataset, &mut warnings);
        let pixel_size_m = georef.as_ref().and_then(|g| g.pixel_size_m(width, height));
        Ok(Scene {
            path: path.to_string(),
            acquired_us: acquisition_time(&dataset),
            dataset,
            bands,
            width,
            height,
            stretch,
            masked,
            palette,
            georef,
            crs,
            pixel_size_m,
            warnings,
        })
    }

    /// Reads one window (all three bands and the mask) at its own size.
    pub fn read(&self, window: &Window) -> Result<RawChip> {
        self.read_resampled(window, (window.width, window.height))
    }

    /// Reads one window into a `buffer` (width, height) of another size: GDAL averages when
    /// the buffer is smaller (`index --gsd` coarser than the scene) and interpolates
    /// bilinearly when it is larger; palette indices and masks take the nearest pixel.
    pub fn read_resampled(&self, window: &Window, buffer: (usize, usize)) -> Result<RawChip> {
        let bad = |e: gdal::errors::GdalError| AcfError::Raster {
            path: self.path.clone(),
            reason: format!(
                "cannot read window {}x{} at ({}, {}): {e}",
                window.width, window.height, window.col, window.row
            ),
        };
        let n = buffer.0 * buffer.1;
        let at = (window.col as isize, window.row as isize);
        let size = (window.width, window.height);
        let resampled = buffer != size;
        let smooth = match (resampled, buffer.0 < size.0) {
            (false, _) => None,
            (true, true) => Some(ResampleAlg::Average),
            (true, false) => Some(ResampleAlg::Bilinear),
        };
        let nearest = resampled.then_some(ResampleAlg::NearestNeighbour);
        let data = if let Some(palette) = &self.palette {
            let band = self.dataset.rasterband(self.bands[0]).map_err(bad)?;
            let mut index = vec![0u8; n];
            band.read_into_slice(at, size, buffer, &mut index, nearest).map_err(bad)?;
            let mut buf = vec![0u8; 3 * n];
            for (i, &v) in index.iter().enumerate() {
                let rgb = palette.get(v as usize).copied().unwrap_or([0, 0, 0]);
                for k in 0..3 {
                    buf[k * n + i] = rgb[k];
                }
            }
            WindowData::Byte(buf)
        } else if self.stretch.is_none() {
            let mut buf = vec![0u8; 3 * n];
            for (k, &b) in self.bands.iter().enumerate() {
                let band = self.dataset.rasterband(b).map_err(bad)?;
                band.read_into_slice(at, size, buffer, &mut buf[k * n..(k + 1) * n], smooth).map_err(bad)?;
            }
            WindowData::Byte(buf)
        } else {
            let mut buf = vec![0f32; 3 * n];
            for (k, &b) in self.bands.iter().enumerate() {
                let band = self.dataset.rasterband(b).map_err(bad)?;
                band.read_into_slice(at, size, buffer, &mut buf[k * n..(k + 1) * n], smooth).map_err(bad)?;
            }
            WindowData::Float(buf)
        };
        let valid = if self.masked {
            let mut valid = vec![true; n];
            let mut mask = vec![0u8; n];
            for &b in dedup(&self.bands).iter() {
                let band = self.dataset.rasterband(b).map_err(bad)?;
                let mask_band = band.open_mask_band().map_err(bad)?;
                mask_band.read_into_slice(at, size, buffer, &mut mask, nearest).map_err(bad)?;
                for (v, &m) in valid.iter_mut().zip(&mask) {
                    *v &= m > 0;
                }
            }
            if let WindowData::Float(buf) = &data {
                for k in 0..3 {
                    for (v, x) in valid.iter_mut().zip(&buf[k * n..(k + 1) * n]) {
                        *v &= !x.is_nan();
                    }
                }
            }
            Some(valid)
        } else {
            None
        };
        let valid_count = valid.as_ref().map_or(n, |v| v.iter().filter(|&&x| x).count());
        Ok(RawChip {
            window: *window,
            size: buffer,
            data,
            valid,
            valid_fraction: valid_count as f32 / n.max(1) as f32,
        })
    }
}

/// Why a local scene path cannot be a raster, said plainly (GDAL reports all of these as
/// "not recognised" with an empty message); `None` for GDAL paths and ordinary files.
fn local_file_problem(path: &str) -> Option<String> {
    if path.starts_with("/vsi") {
        return None;
    }
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("no such file".into()),
        Err(e) => Some(format!("cannot access: {e}")),
        Ok(m) if m.is_dir() => Some("is a directory".into()),
        Ok(m) if m.len() == 0 => Some("empty file (0 bytes)".into()),
        Ok(_) => match std::fs::File::open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some("permission denied".into()),
            Err(e) => Some(format!("cannot open: {e}")),
            Ok(_) => None,
        },
    }
}

/// The colour table of a single-band paletted scene read without `--bands`, as RGB per
/// index, so its chips are the colours people see rather than grey indices.
fn palette_of(dataset: &Dataset, bands: &[usize; 3], bands_given: bool) -> Option<Vec<[u8; 3]>> {
    if bands_given || bands[0] != bands[1] || bands[1] != bands[2] {
        return None;
    }
    let band = dataset.rasterband(bands[0]).ok()?;
    if band.color_interpretation() != ColorInterpretation::PaletteIndex
        || band.band_type() != GdalDataType::UInt8
    {
        return None;
    }
    let table = band.color_table()?;
    let clamp = |v: i16| v.clamp(0, 255) as u8;
    Some(
        (0..256)
            .map(|i| table.entry_as_rgb(i).map_or([0, 0, 0], |e| [clamp(e.r), clamp(e.g), clamp(e.b)]))
            .collect(),
    )
}

fn dedup(bands: &[usize; 3]) -> Vec<usize> {
    let mut v = bands.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// `--bands`, else the red/green/blue bands by colour interpretation, else the first three;
/// a scene with fewer than three bands has its first band replicated (with a warning).
fn select_bands(
    dataset: &Dataset,
    wanted: Option<&[usize]>,
    warnings: &mut Vec<String>,
) -> Result<[usize; 3], String> {
    let count = dataset.raster_count();
    if let Some(w) = wanted {
        if let Some(&b) = w.iter().find(|&&b| b == 0 || b > count) {
            return Err(format!("--bands asks for band {b}, the scene has {count}"));
        }
        return match w {
            [a, b, c] => Ok([*a, *b, *c]),
            [a] => Ok([*a, *a, *a]),
            _ => Err(format!("--bands needs 1 or 3 band numbers, got {}", w.len())),
        };
    }
    let find = |want: ColorInterpretation| {
        (1..=count).find(|&i| dataset.rasterband(i).is_ok_and(|b| b.color_interpretation() == want))
    };
    if let (Some(r), Some(g), Some(b)) = (
        find(ColorInterpretation::RedBand),
        find(ColorInterpretation::GreenBand),
        find(ColorInterpretation::BlueBand),
    ) {
        return Ok([r, g, b]);
    }
    if count >= 3 {
        return Ok([1, 2, 3]);
    }
    warnings.push(format!("{count} band(s): band 1 replicated to R, G and B"));
    Ok([1, 1, 1])
}

/// Values of a band for the percentile stretch, without a full pass over a big scene: the
/// smallest overview of at least 256 pixels a side when there is one, else an 8×8 grid of
/// 64×64 windows. Nodata values are dropped (as NaN).
fn sample_values(band: &RasterBand, width: usize, height: usize) -> gdal::errors::Result<Vec<f32>> {
    let nodata = band.no_data_value();
    let mut values = Vec::new();
    let overviews = band.overview_count().unwrap_or(0);
    let mut overview = None;
    for i in 0..overviews.max(0) as usize {
        let ov = band.overview(i)?;
        let (w, h) = ov.size();
        if w.min(h) >= 256 || overview.is_none() {
            overview = Some(ov);
        }
    }
    if let Some(ov) = overview.filter(|ov| ov.size().0 * ov.size().1 < width * height) {
        let (w, h) = ov.size();
        values = vec![0f32; w * h];
        ov.read_into_slice((0, 0), (w, h), (w, h), &mut values, None)?;
    } else {
        let side = 64.min(width).min(height);
        let grid = 8;
        for gy in 0..grid {
            for gx in 0..grid {
                let x = (width - side) * gx / (grid - 1);
                let y = (height - side) * gy / (grid - 1);
                let mut buf = vec![0f32; side * side];
                band.read_into_slice((x as isize, y as isize), (side, side), (side, side), &mut buf, None)?;
                values.extend(buf);
            }
        }
    }
    if let Some(nd) = nodata {
        for v in values.iter_mut() {
            if (*v as f64 - nd).abs() < 1e-9 || (*v as f64) == nd {
                *v = f32::NAN;
            }
        }
    }
    Ok(values)
}

/// The geotransform + CRS when both exist (else a warning and pixel coordinates only).
fn georeferencing(dataset: &Dataset, warnings: &mut Vec<String>) -> (Option<Georef>, Option<String>) {
    let gt = dataset.geo_transform().ok();
    let srs = dataset.spatial_ref().ok();
    match (gt, srs) {
        (Some(gt), Some(srs)) => match Georef::new(gt, &srs) {
            Ok(g) => (Some(g), crs_name(&srs)),
            Err(e) => {
                warnings.push(format!("CRS cannot be transformed to CRS84 ({e}): chips get no geometry"));
                (None, crs_name(&srs))
            }
        },
        _ => {
            warnings
                .push("no georeferencing: chips are indexed with pixel windows only (null geometry)".into());
            (None, None)
        }
    }
}

/// Acquisition time from GDAL metadata (`ACQUISITIONDATETIME` of the IMAGERY domain, or
/// `TIFFTAG_DATETIME`), as microseconds since the epoch.
fn acquisition_time(dataset: &Dataset) -> Option<i64> {
    let candidates = [
        dataset.metadata_item("ACQUISITIONDATETIME", "IMAGERY"),
        dataset.metadata_item("ACQUISITIONDATETIME", ""),
        dataset.metadata_item("TIFFTAG_DATETIME", ""),
    ];
    candidates.into_iter().flatten().find_map(|s| super::timestamp::parse_time(&s))
}

/// Sends GDAL's own error messages to the debug log instead of stderr: the caller reports
/// each failure once, as one line naming the file.
pub fn route_gdal_errors_to_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gdal::config::set_error_handler(|class, code, msg| tracing::debug!("GDAL {class:?} {code}: {msg}"));
    });
}

/// Caps GDAL's block cache (default: 5 % of RAM) at 64 MiB unless GDAL_CACHEMAX is set:
/// windows are read row by row, so the cache needs about one row of chips per scene being
/// read (a 10,980-pixel-wide 3-band UInt16 scene in 256×256 tiles: two tile rows, 33 MB),
/// and a larger cache only makes memory grow with scene size.
pub fn bound_gdal_cache() {
    if std::env::var_os("GDAL_CACHEMAX").is_none() {
        let _ = gdal::config::set_config_option("GDAL_CACHEMAX", "64");
    }
}
