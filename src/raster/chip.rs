//! A window read from a scene as the model's input: three 8-bit channels of a square chip,
//! stretched when the source is not 8-bit, invalid pixels black, padded at the right and
//! bottom when the scene is smaller than a chip.

use super::scene::{RawChip, WindowData};
use super::stretch::Stretch;

/// A raw window as the model's (3, chip, chip) 8-bit input: stretched when not 8-bit,
/// invalid pixels black, padded at the right and bottom.
pub fn to_model_chip(raw: &RawChip, stretch: Option<&[Stretch; 3]>, chip: usize) -> Vec<u8> {
    let (w, h) = raw.size;
    let n = w * h;
    let mut out = vec![0u8; 3 * chip * chip];
    for k in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                if raw.valid.as_ref().is_some_and(|v| !v[i]) {
                    continue;
                }
                out[k * chip * chip + y * chip + x] = match (&raw.data, stretch) {
                    (WindowData::Byte(b), _) => b[k * n + i],
                    (WindowData::Float(f), Some(s)) => s[k].apply(f[k * n + i]),
                    (WindowData::Float(f), None) => f[k * n + i].clamp(0.0, 255.0) as u8,
                };
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raster::Window;

    fn raw(data: WindowData, valid: Option<Vec<bool>>) -> RawChip {
        RawChip {
            window: Window { col: 0, row: 0, width: 2, height: 1 },
            size: (2, 1),
            data,
            valid,
            valid_fraction: 1.0,
        }
    }

    #[test]
    fn bytes_are_copied_and_padding_and_invalid_pixels_are_black() {
        // 2×1 window, three bands, second pixel invalid, into a 3×3 chip.
        let chip =
            to_model_chip(&raw(WindowData::Byte(vec![1, 2, 3, 4, 5, 6]), Some(vec![true, false])), None, 3);
        assert_eq!(chip.len(), 27);
        assert_eq!(&chip[0..3], &[1, 0, 0]);
        assert_eq!(&chip[9..12], &[3, 0, 0]);
        assert_eq!(&chip[18..21], &[5, 0, 0]);
        assert!(chip[3..9].iter().all(|&v| v == 0), "padding rows are black");
    }

    #[test]
    fn floats_without_a_stretch_are_clamped_to_bytes() {
        let chip =
            to_model_chip(&raw(WindowData::Float(vec![-5.0, 300.0, 7.0, 8.0, 9.0, 10.0]), None), None, 2);
        assert_eq!(&chip[0..2], &[0, 255]);
        assert_eq!(&chip[4..6], &[7, 8]);
    }
}
