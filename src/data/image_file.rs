//! Decoding JPEG, PNG and TIFF files into 8-bit RGB chips of the model's input size.

use std::path::Path;

use image::imageops::FilterType;
use tch::Tensor;

use crate::error::{AcfError, Result};

/// An 8-bit RGB chip in channel-major (C, H, W) order.
#[derive(Debug, Clone, PartialEq)]
pub struct Chip {
    /// Side length in pixels.
    pub size: u32,
    /// `3 * size * size` bytes: all red, then all green, then all blue.
    pub chw: Vec<u8>,
}

impl Chip {
    /// Stacks chips into a (B, 3, S, S) uint8 tensor.
    pub fn batch(chips: &[Chip]) -> Tensor {
        let size = chips.first().map_or(0, |c| c.size) as i64;
        let flat: Vec<u8> = chips.iter().flat_map(|c| c.chw.iter().copied()).collect();
        Tensor::from_slice(&flat).reshape([chips.len() as i64, 3, size, size])
    }
}

/// Decodes an image file and resizes it (bilinear) to `size`×`size` RGB.
pub fn load_chip(path: &Path, size: u32) -> Result<Chip> {
    let bad = |reason: String| AcfError::Dataset { path: path.to_path_buf(), reason };
    let reader = image::ImageReader::open(path)
        .map_err(|e| AcfError::io(path, "cannot open image", e))?
        .with_guessed_format()
        .map_err(|e| AcfError::io(path, "cannot read image", e))?;
    let img = reader.decode().map_err(|e| bad(format!("cannot decode image: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(bad("image has no pixels".into()));
    }
    let rgb = img.to_rgb8();
    let rgb = if rgb.width() == size && rgb.height() == size {
        rgb
    } else {
        image::imageops::resize(&rgb, size, size, FilterType::Triangle)
    };
    Ok(Chip { size, chw: hwc_to_chw(rgb.as_raw(), size as usize) })
}

/// Reorders interleaved RGB (H, W, 3) into planes (3, H, W).
pub fn hwc_to_chw(hwc: &[u8], size: usize) -> Vec<u8> {
    let plane = size * size;
    let mut chw = vec![0u8; 3 * plane];
    for (i, px) in hwc.chunks_exact(3).enumerate() {
        chw[i] = px[0];
        chw[plane + i] = px[1];
        chw[2 * plane + i] = px[2];
    }
    chw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_png_and_resizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("red.png");
        let img = image::RgbImage::from_pixel(10, 20, image::Rgb([200, 10, 30]));
        img.save(&path).unwrap();
        let chip = load_chip(&path, 224).unwrap();
        assert_eq!(chip.chw.len(), 3 * 224 * 224);
        assert_eq!(chip.chw[0], 200);
        assert_eq!(chip.chw[224 * 224], 10);
        assert_eq!(chip.chw[2 * 224 * 224 + 5], 30);
        assert_eq!(Chip::batch(&[chip.clone(), chip]).size(), vec![2, 3, 224, 224]);
    }

    #[test]
    fn corrupt_file_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.jpg");
        std::fs::write(&path, b"\xff\xd8\xff garbage").unwrap();
        let err = load_chip(&path, 224).unwrap_err().to_string();
        assert!(err.contains("broken.jpg") && err.contains("decode"), "{err}");
    }
}
