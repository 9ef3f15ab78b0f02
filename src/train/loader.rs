//! Training data: images decoded once into memory, then per batch a random crop,
//! a multiple-of-90° rotation and a flip (overhead imagery has no "up"), resized to
//! the model's input, in parallel with rayon on a background thread so the model does
//! not wait. Every random choice derives from (seed, epoch, position), so a resumed
//! run sees exactly the batches an uninterrupted one would.

use std::path::PathBuf;

use image::RgbImage;
use image::imageops::{self, FilterType};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::dataset::Dataset;
use crate::data::image_file::hwc_to_chw;
use crate::error::{AcfError, Result};
use crate::model::Vocab;

/// One training image: its pixels and its tokenised captions.
pub struct TrainImage {
    pub path: PathBuf,
    pub pixels: RgbImage,
    pub captions: Vec<Vec<i64>>,
}

/// What loading a split skipped with `--skip-bad`.
#[derive(Debug, Default, Clone)]
pub struct SkipReport {
    pub skipped: Vec<String>,
}

/// Decodes every image of `split` in the datasets (rayon). A bad image or one without
/// captions is an error naming it, or with `skip_bad` a counted skip.
pub fn load_split(
    datasets: &[Dataset],
    split: &str,
    vocab: &Vocab,
    max_tokens: usize,
    skip_bad: bool,
) -> Result<(Vec<TrainImage>, SkipReport)> {
    let samples: Vec<_> = datasets.iter().flat_map(|d| d.split(split)).collect();
    let decoded: Vec<Result<TrainImage>> = samples
        .par_iter()
        .map(|s| {
            if s.captions.is_empty() {
                return Err(AcfError::Dataset {
                    path: s.path.clone(),
                    reason: "image has no captions".into(),
                });
            }
            let img = image::open(&s.path).map_err(|e| AcfError::Dataset {
                path: s.path.clone(),
                reason: format!("cannot read image: {e}"),
            })?;
            let captions =
                s.captions.iter().map(|c| vocab.encode(c, max_tokens).ids).filter(|ids| !ids.is_empty());
            let captions: Vec<Vec<i64>> = captions.collect();
            if captions.is_empty() {
                return Err(AcfError::Dataset {
                    path: s.path.clone(),
                    reason: "every caption is empty".into(),
                });
            }
            Ok(TrainImage { path: s.path.clone(), pixels: img.to_rgb8(), captions })
        })
        .collect();
    let mut images = Vec::with_capacity(decoded.len());
    let mut report = SkipReport::default();
    for item in decoded {
        match item {
            Ok(img) => images.push(img),
            Err(e) if skip_bad => report.skipped.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    if images.is_empty() {
        let names: Vec<String> = datasets.iter().map(|d| d.source.display().to_string()).collect();
        return Err(AcfError::Dataset {
            path: PathBuf::from(names.join(", ")),
            reason: format!("the '{split}' split is empty"),
        });
    }
    Ok((images, report))
}

/// One training batch: uint8 chips (B·3·S·S, CHW), token ids and the source image index.
pub struct Batch {
    pub pixels: Vec<u8>,
    pub captions: Vec<Vec<i64>>,
    pub image_ids: Vec<i64>,
}

/// The order of images in `epoch` and the caption drawn for each.
pub fn epoch_plan(images: &[TrainImage], seed: u64, epoch: i64) -> Vec<(usize, usize)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut order: Vec<usize> = (0..images.len()).collect();
    order.shuffle(&mut rng);
    order.into_iter().map(|i| (i, rng.random_range(0..images[i].captions.len()))).collect()
}

/// Builds batch `b` of an epoch plan with augmentation.
pub fn make_batch(
    images: &[TrainImage],
    plan: &[(usize, usize)],
    batch_size: usize,
    b: usize,
    size: u32,
    seed: u64,
    epoch: i64,
) -> Batch {
    let items = &plan[b * batch_size..((b + 1) * batch_size).min(plan.len())];
    let chips: Vec<Vec<u8>> = items
        .par_iter()
        .enumerate()
        .map(|(j, &(i, _))| {
            let pos = (b * batch_size + j) as u64;
            let mut rng = ChaCha8Rng::seed_from_u64(
                seed.wrapping_add(0xA076_1D64_78BD_642F).wrapping_mul(epoch as u64 + 1)
                    ^ pos.wrapping_mul(0xE703_7ED1_A0B4_28DB),
            );
            augment(&images[i].pixels, size, &mut rng)
        })
        .collect();
    Batch {
        pixels: chips.concat(),
        captions: items.iter().map(|&(i, c)| images[i].captions[c].clone()).collect(),
        image_ids: items.iter().map(|&(i, _)| i as i64).collect(),
    }
}

/// Random crop (80–100 % of the shorter side), resize, rotation by k·90°, optional flip.
pub fn augment(img: &RgbImage, size: u32, rng: &mut impl Rng) -> Vec<u8> {
    let short = img.width().min(img.height());
    let side = ((short as f64) * rng.random_range(0.8..=1.0)).round().max(1.0) as u32;
    let x = rng.random_range(0..=img.width() - side);
    let y = rng.random_range(0..=img.height() - side);
    let crop = imageops::crop_imm(img, x, y, side, side).to_image();
    let mut out = imageops::resize(&crop, size, size, FilterType::Triangle);
    out = match rng.random_range(0..4) {
        1 => imageops::rotate90(&out),
        2 => imageops::rotate180(&out),
        3 => imageops::rotate270(&out),
        _ => out,
    };
    if rng.random_bool(0.5) {
        imageops::flip_horizontal_in_place(&mut out);
    }
    hwc_to_chw(out.as_raw(), size as usize)
}

/// The whole image resized to `size` (evaluation; no augmentation).
pub fn plain(img: &RgbImage, size: u32) -> Vec<u8> {
    let out = if img.width() == size && img.height() == size {
        img.clone()
    } else {
        imageops::resize(img, size, size, FilterType::Triangle)
    };
    hwc_to_chw(out.as_raw(), size as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(n: usize) -> Vec<TrainImage> {
        (0..n)
            .map(|i| TrainImage {
                path: PathBuf::from(format!("{i}.png")),
                pixels: RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8, y as u8, i as u8])),
                captions: vec![vec![2, 3], vec![4]],
            })
            .collect()
    }

    #[test]
    fn plans_and_batches_are_reproducible_and_cover_every_image() {
        let imgs = images(10);
        let plan = epoch_plan(&imgs, 7, 3);
        assert_eq!(plan, epoch_plan(&imgs, 7, 3));
        assert_ne!(plan, epoch_plan(&imgs, 7, 4));
        let mut seen: Vec<usize> = plan.iter().map(|p| p.0).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        let a = make_batch(&imgs, &plan, 4, 1, 32, 7, 3);
        let b = make_batch(&imgs, &plan, 4, 1, 32, 7, 3);
        assert_eq!(a.pixels, b.pixels);
        assert_eq!(a.pixels.len(), 4 * 3 * 32 * 32);
        assert_eq!(make_batch(&imgs, &plan, 4, 2, 32, 7, 3).image_ids.len(), 2);
    }

    #[test]
    fn augmentation_keeps_the_image_content_channel() {
        let img = RgbImage::from_pixel(50, 60, image::Rgb([10, 20, 30]));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let chw = augment(&img, 16, &mut rng);
        assert_eq!(chw.len(), 3 * 16 * 16);
        assert!(chw[..256].iter().all(|&v| v == 10) && chw[512..].iter().all(|&v| v == 30));
    }
}
