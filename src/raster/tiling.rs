//! The grid of chip windows over a scene: every `stride` pixels, with the last window of a
//! row or column shifted back inside the scene so that no chip hangs over the edge, and one
//! (padded) window along a dimension shorter than a chip.

/// A pixel window of a scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    pub col: usize,
    pub row: usize,
    pub width: usize,
    pub height: usize,
}

impl Window {
    /// True when the window is smaller than a chip and the chip is padded.
    pub fn padded(&self, chip: usize) -> bool {
        self.width < chip || self.height < chip
    }
}

/// Window offsets along one dimension of `len` pixels.
pub fn offsets(len: usize, chip: usize, stride: usize) -> Vec<usize> {
    if len <= chip {
        return vec![0];
    }
    let stride = stride.max(1);
    let mut out: Vec<usize> = (0..).map(|i| i * stride).take_while(|&o| o + chip < len).collect();
    if out.last() != Some(&(len - chip)) {
        out.push(len - chip);
    }
    out
}

/// All chip windows of a `width`×`height` scene, row by row.
pub fn chip_windows(width: usize, height: usize, chip: usize, stride: usize) -> Vec<Window> {
    let cols = offsets(width, chip, stride);
    let rows = offsets(height, chip, stride);
    rows.iter()
        .flat_map(|&row| {
            cols.iter().map(move |&col| Window { col, row, width: chip.min(width), height: chip.min(height) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_window_is_shifted_inside_the_scene() {
        assert_eq!(offsets(448, 224, 224), vec![0, 224]);
        assert_eq!(offsets(500, 224, 224), vec![0, 224, 276]);
        assert_eq!(offsets(791, 224, 224), vec![0, 224, 448, 567]);
        assert_eq!(offsets(224, 224, 224), vec![0]);
    }

    #[test]
    fn a_smaller_stride_overlaps() {
        assert_eq!(offsets(500, 224, 112), vec![0, 112, 224, 276]);
    }

    #[test]
    fn a_scene_smaller_than_a_chip_gives_one_padded_window() {
        let w = chip_windows(100, 300, 224, 224);
        assert_eq!(w.len(), 2);
        assert_eq!(w[1], Window { col: 0, row: 76, width: 100, height: 224 });
        assert!(w[0].padded(224));
        assert!(!chip_windows(300, 300, 224, 224)[0].padded(224));
    }

    #[test]
    fn every_pixel_is_covered() {
        for (w, h, s) in [(791, 718, 224), (1024, 1024, 224), (300, 500, 160)] {
            let windows = chip_windows(w, h, 224, s);
            let mut covered = vec![false; w * h];
            for win in &windows {
                assert!(win.col + win.width <= w && win.row + win.height <= h, "{win:?} outside {w}x{h}");
                for y in win.row..win.row + win.height {
                    for x in win.col..win.col + win.width {
                        covered[y * w + x] = true;
                    }
                }
            }
            assert!(covered.iter().all(|&c| c), "{w}x{h} stride {s} leaves pixels out");
        }
    }
}
