//! Ground resolution of chips. The model learned from imagery of a known range of ground
//! sample distances (GSD, metres per pixel); a scene far outside it (Landsat at 30 m, a
//! drone at 3 cm) makes chips unlike anything seen in training. `index --gsd METRES`
//! resamples: a chip of `chip` output pixels covers `chip · gsd / native` scene pixels,
//! read by GDAL straight into the chip-sized buffer (so every chip covers the same ground).

use super::tiling::{Window, chip_windows};

/// Mean Earth radius (IUGG), for distances between CRS84 points.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Largest upsampling `--gsd` may ask for: beyond it a chip is interpolation, not imagery.
pub const MAX_UPSAMPLE: f64 = 8.0;
/// Largest downsampling `--gsd` may ask for: beyond it one chip reads a huge window.
pub const MAX_DOWNSAMPLE: f64 = 64.0;
/// How far outside the training range (as a factor) a scene's GSD may be before `index` warns.
pub const WARN_FACTOR: f64 = 2.0;

/// How one scene is cut into chips: windows of `window` scene pixels every `stride` scene
/// pixels, each read into `chip` × `chip` model pixels (fewer for a scene smaller than a
/// window, which is padded as at native resolution).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChipGrid {
    /// Model input side (224).
    pub chip: usize,
    /// Scene pixels covered by one chip side.
    pub window: usize,
    /// Scene pixels between chip origins.
    pub stride: usize,
}

impl ChipGrid {
    /// The grid at native resolution: one scene pixel per chip pixel.
    pub fn native(chip: usize, stride: usize) -> ChipGrid {
        ChipGrid { chip, window: chip, stride }
    }

    /// The grid for chips of `target_m` metres per pixel over a scene of `native_m`;
    /// `stride` is in chip pixels (at the target resolution). `Err` says why the scene cannot
    /// be read at that resolution (unknown pixel size, absurd factor).
    pub fn at_gsd(
        chip: usize,
        stride: usize,
        native_m: Option<f64>,
        target_m: f64,
    ) -> Result<ChipGrid, String> {
        let native = native_m.ok_or_else(|| {
            "has no georeferencing, so its pixel size is unknown and --gsd cannot resample it".to_string()
        })?;
        let factor = target_m / native;
        if !factor.is_finite() || factor <= 0.0 {
            return Err(format!("pixel size {native} m cannot be resampled to --gsd {target_m}"));
        }
        if factor < 1.0 / MAX_UPSAMPLE {
            return Err(format!(
                "--gsd {target_m} would upsample this {} scene {:.0}× (at most {MAX_UPSAMPLE}×)",
                show_m(native),
                1.0 / factor
            ));
        }
        if factor > MAX_DOWNSAMPLE {
            return Err(format!(
                "--gsd {target_m} would downsample this {} scene {:.0}× (at most {MAX_DOWNSAMPLE}×)",
                show_m(native),
                factor
            ));
        }
        let scaled = |n: usize| ((n as f64 * factor).round() as usize).max(1);
        Ok(ChipGrid { chip, window: scaled(chip), stride: scaled(stride) })
    }

    /// Every window of a `width` × `height` scene, row by row (see [`chip_windows`]).
    pub fn windows(&self, width: usize, height: usize) -> Vec<Window> {
        chip_windows(width, height, self.window, self.stride)
    }

    /// The buffer a window is read into: `chip` × `chip` for a full window, proportionally
    /// less for the short side of a scene smaller than a window.
    pub fn buffer(&self, window: &Window) -> (usize, usize) {
        let scale = |n: usize| {
            if n >= self.window {
                self.chip
            } else {
                ((n * self.chip) as f64 / self.window as f64).round().clamp(1.0, self.chip as f64) as usize
            }
        };
        (scale(window.width), scale(window.height))
    }
}

/// The distance in metres between two CRS84 points (haversine).
pub fn ground_distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lon1, lat1) = (a.0.to_radians(), a.1.to_radians());
    let (lon2, lat2) = (b.0.to_radians(), b.1.to_radians());
    let h =
        ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// A warning when `gsd_m` (what chips will have) is more than [`WARN_FACTOR`] outside the
/// model's training range `range` (metres per pixel); `what` names it ("ground sample
/// distance" of a scene, or "--gsd"). Finer imagery can be resampled (the advice names a
/// `--gsd`); coarser imagery cannot get back the detail the model learned from.
pub fn out_of_range_warning(gsd_m: f64, range: [f64; 2], what: &str) -> Option<String> {
    let (lo, hi) = (range[0], range[1]);
    let span = format!("{}–{} m", show_number(lo), show_number(hi));
    let chosen = what.starts_with("--");
    if gsd_m > hi * WARN_FACTOR {
        let advice = if chosen {
            format!("choose a --gsd within {span}")
        } else {
            "resampling cannot add the detail the model learned from, expect poor matches".to_string()
        };
        Some(format!(
            "{what} {} per pixel is far coarser than the model's training imagery ({span}): {advice}",
            show_m(gsd_m)
        ))
    } else if gsd_m < lo / WARN_FACTOR {
        let advice = if chosen {
            format!("choose a --gsd within {span}")
        } else {
            format!("index with --gsd {} to resample", show_number(hi.min(lo.max(1.0))))
        };
        Some(format!(
            "{what} {} per pixel is far finer than the model's training imagery ({span}): {advice}",
            show_m(gsd_m)
        ))
    } else {
        None
    }
}

fn show_number(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn show_m(v: f64) -> String {
    if v >= 0.1 {
        format!("{} m", show_number((v * 100.0).round() / 100.0))
    } else {
        format!("{} cm", show_number(v * 100.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coarser_target_reads_bigger_windows_into_chip_sized_buffers() {
        // 1 m scene at 2 m: a chip covers 448 scene pixels.
        let g = ChipGrid::at_gsd(224, 224, Some(1.0), 2.0).unwrap();
        assert_eq!((g.window, g.stride), (448, 448));
        let windows = g.windows(1000, 900);
        assert_eq!(windows.len(), 3 * 3, "{windows:?}");
        assert!(windows.iter().all(|w| w.width == 448 && w.height == 448));
        assert_eq!(g.buffer(&windows[0]), (224, 224));
        // At 0.5 m a chip covers 112 scene pixels (upsampled 2×).
        let g = ChipGrid::at_gsd(224, 224, Some(1.0), 0.5).unwrap();
        assert_eq!((g.window, g.stride), (112, 112));
        assert_eq!(g.windows(1000, 900).len(), 9 * 9);
        assert_eq!(g.buffer(&Window { col: 0, row: 0, width: 112, height: 112 }), (224, 224));
        // Stride counts target pixels.
        assert_eq!(ChipGrid::at_gsd(224, 112, Some(1.0), 2.0).unwrap().stride, 224);
    }

    #[test]
    fn a_scene_smaller_than_a_window_is_padded_in_proportion() {
        let g = ChipGrid::at_gsd(224, 224, Some(1.0), 2.0).unwrap();
        let w = g.windows(300, 1000);
        assert_eq!(w[0].width, 300);
        assert_eq!(g.buffer(&w[0]), (150, 224));
        assert_eq!(
            ChipGrid::native(224, 224).buffer(&Window { col: 0, row: 0, width: 100, height: 224 }),
            (100, 224)
        );
    }

    #[test]
    fn absurd_factors_and_unknown_pixel_sizes_are_refused_with_the_reason() {
        let e = ChipGrid::at_gsd(224, 224, Some(30.0), 0.5).unwrap_err();
        assert!(e.contains("upsample") && e.contains("60×"), "{e}");
        let e = ChipGrid::at_gsd(224, 224, Some(0.03), 30.0).unwrap_err();
        assert!(e.contains("downsample"), "{e}");
        assert!(ChipGrid::at_gsd(224, 224, None, 1.0).unwrap_err().contains("georeferencing"));
    }

    #[test]
    fn distances_on_the_sphere() {
        // One degree of latitude ≈ 111.2 km; one of longitude at 60° half that.
        assert!((ground_distance_m((0.0, 0.0), (0.0, 1.0)) - 111_195.0).abs() < 10.0);
        assert!((ground_distance_m((10.0, 60.0), (11.0, 60.0)) - 55_597.0).abs() < 50.0);
    }

    #[test]
    fn warnings_only_far_outside_the_training_range() {
        let range = [0.3, 8.0];
        assert!(out_of_range_warning(1.0, range, "scene").is_none());
        assert!(out_of_range_warning(15.0, range, "scene").is_none(), "within the factor of 2");
        let w = out_of_range_warning(30.0, range, "ground sample distance").unwrap();
        assert!(w.contains("30 m") && w.contains("coarser") && !w.contains("--gsd"), "{w}");
        let w = out_of_range_warning(0.03, range, "ground sample distance").unwrap();
        assert!(w.contains("3 cm") && w.contains("finer") && w.contains("--gsd 1"), "{w}");
        let w = out_of_range_warning(30.0, range, "--gsd").unwrap();
        assert!(w.contains("choose a --gsd within 0.3–8 m"), "{w}");
    }
}
