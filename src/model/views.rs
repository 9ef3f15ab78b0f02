//! Test-time views: a chip encoded as several of its rotations and mirror images, the
//! features mapped back onto the original chip's region grid and averaged. Overhead
//! imagery has no "up" and the model trains on all eight such views (`train::loader`),
//! so averaging them removes orientation noise from each chip's features.

use tch::Tensor;

use super::features::{ImageFeatures, l2_normalize};

/// The (quarter turns, mirrored) transforms of `views` views: 1 (the chip as it is), 2
/// (plus its mirror image), 4 (the four rotations) or 8 (rotations × mirror). `None` for
/// any other count.
pub fn transforms(views: u32) -> Option<Vec<(i64, bool)>> {
    let rotations = |flip| (0..4).map(move |k| (k, flip));
    match views {
        1 => Some(vec![(0, false)]),
        2 => Some(vec![(0, false), (0, true)]),
        4 => Some(rotations(false).collect()),
        8 => Some(rotations(false).chain(rotations(true)).collect()),
        _ => None,
    }
}

/// Encodes chips (B, 3, S, S) with `encode` once per view of [`transforms`]`(views)` and
/// averages: each view's regions are turned back onto the original `grid` × `grid` layout
/// (row-major, as the encoders flatten it) before the mean, then regions and the global
/// vector are L2-normalised again. One view is `encode(pixels)` itself; an unsupported
/// count is treated as one view (configs are checked against the schema on load).
pub fn encode_views(
    pixels: &Tensor,
    views: u32,
    grid: i64,
    encode: impl Fn(&Tensor) -> ImageFeatures,
) -> ImageFeatures {
    let plan = transforms(views).unwrap_or_else(|| vec![(0, false)]);
    if plan.len() == 1 {
        return encode(pixels);
    }
    let sums = plan
        .into_iter()
        .map(|(turns, mirrored)| view_on_chip_grid(pixels, turns, mirrored, grid, &encode))
        .reduce(|a, b| ImageFeatures { regions: a.regions + b.regions, global: a.global + b.global });
    match sums {
        Some(s) => {
            ImageFeatures { regions: l2_normalize(&s.regions, -1), global: l2_normalize(&s.global, -1) }
        }
        None => encode(pixels),
    }
}

/// The features of one view ("mirror, then turn `turns` quarter turns") with its regions
/// turned back onto the chip's grid: (B, g, g, D), dims 1 and 2 following the chip's rows
/// and columns; the inverse of "mirror, then turn" is "turn back, then mirror".
fn view_on_chip_grid(
    pixels: &Tensor,
    turns: i64,
    mirrored: bool,
    grid: i64,
    encode: &impl Fn(&Tensor) -> ImageFeatures,
) -> ImageFeatures {
    let mirror = |x: Tensor, dim: i64| if mirrored { x.flip([dim]) } else { x };
    let f = encode(&mirror(pixels.shallow_clone(), 3).rot90(turns, [2, 3]));
    let (b, k, d) = f.regions.size3().unwrap_or((0, 0, 0));
    let back = mirror(f.regions.view([b, grid, grid, d]).rot90(-turns, [1, 2]), 2);
    ImageFeatures { regions: back.reshape([b, k, d]), global: f.global }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// An encoder that is exactly equivariant: regions are the chip's 7 × 7 average-pooled
    /// colours (D = 3), the global vector their mean.
    fn pooled(pixels: &Tensor) -> ImageFeatures {
        let x = pixels.to_kind(Kind::Float).adaptive_avg_pool2d([7, 7]);
        let regions = l2_normalize(&x.flatten(2, 3).transpose(1, 2), -1);
        let global = l2_normalize(&regions.mean_dim([1i64].as_slice(), false, Kind::Float), -1);
        ImageFeatures { regions, global }
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn every_view_lands_back_on_the_original_grid() {
        tch::manual_seed(7);
        let pixels = Tensor::randint(256, [2, 3, 14, 14], (Kind::Uint8, Device::Cpu));
        let one = pooled(&pixels);
        for views in [2, 4, 8] {
            let avg = encode_views(&pixels, views, 7, pooled);
            assert!(max_abs_diff(&avg.regions, &one.regions) < 1e-6, "{views} views: regions moved");
            assert!(max_abs_diff(&avg.global, &one.global) < 1e-6, "{views} views: global");
        }
    }

    #[test]
    fn views_are_really_encoded_and_averaged() {
        tch::manual_seed(8);
        let pixels = Tensor::randint(256, [1, 3, 14, 14], (Kind::Uint8, Device::Cpu));
        let calls = std::cell::Cell::new(0);
        // Not equivariant: the top-left region only, tiled (it sees a different corner per view).
        let corner = |p: &Tensor| {
            calls.set(calls.get() + 1);
            let f = pooled(p);
            let tl = f.regions.narrow(1, 0, 1).repeat([1, 49, 1]);
            ImageFeatures { regions: tl, global: f.global }
        };
        let avg = encode_views(&pixels, 4, 7, corner);
        assert_eq!(calls.get(), 4);
        let single = corner(&pixels);
        assert!(max_abs_diff(&avg.regions, &single.regions) > 1e-3, "four corners averaged");
        let norms = avg.regions.square().sum_dim_intlist(-1, false, Kind::Float).sqrt();
        assert!(max_abs_diff(&norms, &norms.ones_like()) < 1e-5);
    }

    #[test]
    fn only_one_two_four_and_eight_views_exist() {
        assert_eq!(transforms(1).map(|t| t.len()), Some(1));
        assert_eq!(transforms(8).map(|t| t.len()), Some(8));
        for bad in [0, 3, 5, 16] {
            assert!(transforms(bad).is_none(), "{bad}");
        }
    }
}
