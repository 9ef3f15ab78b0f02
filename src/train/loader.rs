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
use crate::model::config::{AugmentConfig, CaptionsPerEpoch};
use crate::model::vocab::UNK_ID;

/// One training image: its pixels, its tokenised captions and which of the loaded
/// datasets (by position) it came from.
pub struct TrainImage {
    pub path: PathBuf,
    pub pixels: RgbImage,
    pub captions: Vec<Vec<i64>>,
    pub dataset: usize,
    /// Its scene class in the dataset JSON, if named (see `loss.mask_same_class`).
    pub class: Option<String>,
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
    load_split_subset(datasets, split, vocab, max_tokens, skip_bad, |n| (0..n).collect())
}

/// [`load_split`] for the images at the positions `pick(n)` returns (in order) among the
/// split's `n` images; only those are decoded.
pub fn load_split_subset(
    datasets: &[Dataset],
    split: &str,
    vocab: &Vocab,
    max_tokens: usize,
    skip_bad: bool,
    pick: impl FnOnce(usize) -> Vec<usize>,
) -> Result<(Vec<TrainImage>, SkipReport)> {
    let all: Vec<_> =
        datasets.iter().enumerate().flat_map(|(k, d)| d.split(split).map(move |s| (k, s))).collect();
    let samples: Vec<_> = pick(all.len()).into_iter().filter_map(|i| all.get(i).copied()).collect();
    let decoded: Vec<Result<TrainImage>> = samples
        .par_iter()
        .map(|&(dataset, s)| {
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
            Ok(TrainImage {
                path: s.path.clone(),
                pixels: img.to_rgb8(),
                captions,
                dataset,
                class: s.class.clone(),
            })
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
    /// Per item, the batch position of the first item whose caption has the same token
    /// ids before word dropout: equal values mean the same caption text.
    pub caption_groups: Vec<i64>,
    /// Per item, the batch position of the first item of the same dataset and scene
    /// class: equal values mean the same class; an image without a class is its own.
    pub class_groups: Vec<i64>,
}

/// For each key, the position of the first equal key: equal values mean equal keys.
fn first_equal<K: std::hash::Hash + Eq>(keys: impl IntoIterator<Item = K>) -> Vec<i64> {
    let mut first = std::collections::HashMap::new();
    keys.into_iter().enumerate().map(|(j, k)| *first.entry(k).or_insert(j as i64)).collect()
}

/// For each caption, the index of the first caption with the same token ids.
pub fn caption_groups<'a>(captions: impl IntoIterator<Item = &'a [i64]>) -> Vec<i64> {
    first_equal(captions)
}

/// For each image, the index of the first image of the same dataset and named class;
/// an image without a class gets its own index.
pub fn class_groups<'a>(images: impl IntoIterator<Item = &'a TrainImage>) -> Vec<i64> {
    // An image without a class is keyed by its own position, which no other key equals.
    first_equal(
        images
            .into_iter()
            .enumerate()
            .map(|(j, img)| img.class.as_deref().map(|c| (img.dataset, c)).ok_or(j)),
    )
}

/// The (image, caption) pairs of `epoch` in order: one random caption per image, or
/// with [`CaptionsPerEpoch::All`] every caption of every image, shuffled.
///
/// `dataset_exponent` (config `training.dataset_sampling_exponent`) shares the epoch's
/// draws between the images' datasets in proportion to n_d^exponent; at 1 every image
/// (or pair) is drawn once, below 1 a small dataset's items are drawn again (each as
/// often as the others of its dataset, ±1) and a big one's are a random subset. The
/// epoch keeps its length.
pub fn epoch_plan(
    images: &[TrainImage],
    seed: u64,
    epoch: i64,
    captions: CaptionsPerEpoch,
    dataset_exponent: f64,
) -> Vec<(usize, usize)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    if (dataset_exponent - 1.0).abs() < f64::EPSILON {
        // As loaded: the plan earlier rounds trained with, draw for draw.
        return match captions {
            CaptionsPerEpoch::One => {
                let mut order: Vec<usize> = (0..images.len()).collect();
                order.shuffle(&mut rng);
                order.into_iter().map(|i| (i, rng.random_range(0..images[i].captions.len()))).collect()
            }
            CaptionsPerEpoch::All => {
                let mut pairs: Vec<(usize, usize)> = images
                    .iter()
                    .enumerate()
                    .flat_map(|(i, img)| (0..img.captions.len()).map(move |c| (i, c)))
                    .collect();
                pairs.shuffle(&mut rng);
                pairs
            }
        };
    }
    // The epoch's units per dataset: an image (its caption drawn below) or a pair.
    const DRAW_CAPTION: usize = usize::MAX;
    let n_datasets = images.iter().map(|img| img.dataset + 1).max().unwrap_or(0);
    let mut units: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n_datasets];
    for (i, img) in images.iter().enumerate() {
        match captions {
            CaptionsPerEpoch::One => units[img.dataset].push((i, DRAW_CAPTION)),
            CaptionsPerEpoch::All => units[img.dataset].extend((0..img.captions.len()).map(|c| (i, c))),
        }
    }
    let sizes: Vec<usize> = units.iter().map(Vec::len).collect();
    let shares = dataset_shares(&sizes, dataset_exponent, sizes.iter().sum());
    let mut plan = Vec::new();
    for (mut pool, share) in units.into_iter().zip(shares) {
        // Whole shuffled passes over the dataset, then a random part of one more.
        let mut left = share;
        while left > 0 {
            pool.shuffle(&mut rng);
            let take = left.min(pool.len());
            plan.extend_from_slice(&pool[..take]);
            left -= take;
        }
    }
    plan.shuffle(&mut rng);
    for unit in &mut plan {
        if unit.1 == DRAW_CAPTION {
            unit.1 = rng.random_range(0..images[unit.0].captions.len());
        }
    }
    plan
}

/// How many of an epoch's `total` draws each dataset of `sizes` gets: proportional to
/// size^exponent, rounded by largest remainder so they sum to `total`. An empty dataset
/// gets none.
pub fn dataset_shares(sizes: &[usize], exponent: f64, total: usize) -> Vec<usize> {
    let weights: Vec<f64> =
        sizes.iter().map(|&n| if n == 0 { 0.0 } else { (n as f64).powf(exponent) }).collect();
    let sum: f64 = weights.iter().sum();
    if sum <= 0.0 {
        return vec![0; sizes.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| w / sum * total as f64).collect();
    let mut shares: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    // Largest remainders first; fewer than one draw per dataset is left over.
    let mut order: Vec<usize> = (0..sizes.len()).filter(|&k| sizes[k] > 0).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let left = total.saturating_sub(shares.iter().sum::<usize>());
    for &k in order.iter().take(left) {
        shares[k] += 1;
    }
    shares
}

/// Augmentation settings of [`make_batch`] beyond the pixels' own.
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    pub batch_size: usize,
    pub size: u32,
    pub seed: u64,
    pub epoch: i64,
    /// Probability that a caption word becomes `<unk>`.
    pub word_dropout: f64,
    /// Crop range and colour jitter.
    pub augment: AugmentConfig,
}

/// Builds batch `b` of an epoch plan with augmentation (pixels, and word dropout on
/// the captions); every choice derives from (seed, epoch, position).
pub fn make_batch(images: &[TrainImage], plan: &[(usize, usize)], b: usize, opts: BatchOptions) -> Batch {
    let BatchOptions { batch_size, size, seed, epoch, word_dropout, augment: aug } = opts;
    let items = &plan[b * batch_size..((b + 1) * batch_size).min(plan.len())];
    let samples: Vec<(Vec<u8>, Vec<i64>)> = items
        .par_iter()
        .enumerate()
        .map(|(j, &(i, c))| {
            let pos = (b * batch_size + j) as u64;
            let mut rng = ChaCha8Rng::seed_from_u64(
                seed.wrapping_add(0xA076_1D64_78BD_642F).wrapping_mul(epoch as u64 + 1)
                    ^ pos.wrapping_mul(0xE703_7ED1_A0B4_28DB),
            );
            let chip = augment(&images[i].pixels, size, &aug, &mut rng);
            let mut caption = images[i].captions[c].clone();
            if word_dropout > 0.0 {
                for id in caption.iter_mut() {
                    if rng.random_bool(word_dropout) {
                        *id = UNK_ID;
                    }
                }
            }
            (chip, caption)
        })
        .collect();
    let (chips, captions): (Vec<Vec<u8>>, Vec<Vec<i64>>) = samples.into_iter().unzip();
    Batch {
        pixels: chips.concat(),
        captions,
        image_ids: items.iter().map(|&(i, _)| i as i64).collect(),
        caption_groups: caption_groups(items.iter().map(|&(i, c)| images[i].captions[c].as_slice())),
        class_groups: class_groups(items.iter().map(|&(i, _)| &images[i])),
    }
}

/// Random crop (`crop_min`–100 % of the shorter side), resize, rotation by k·90°,
/// optional flip, then colour jitter when `color_jitter` > 0.
pub fn augment(img: &RgbImage, size: u32, aug: &AugmentConfig, rng: &mut impl Rng) -> Vec<u8> {
    let short = img.width().min(img.height());
    let low = aug.crop_min.clamp(f64::MIN_POSITIVE, 1.0);
    let side = ((short as f64) * rng.random_range(low..=1.0)).round().clamp(1.0, short as f64) as u32;
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
    if aug.color_jitter > 0.0 {
        color_jitter(&mut out, aug.color_jitter, rng);
    }
    hwc_to_chw(out.as_raw(), size as usize)
}

/// Scales brightness, contrast (about the image's mean grey) and saturation (about each
/// pixel's grey) by independent random factors in [1 − j, 1 + j], clamped to 0–255.
fn color_jitter(img: &mut RgbImage, j: f64, rng: &mut impl Rng) {
    let mut factor = || rng.random_range((1.0 - j).max(0.0)..=1.0 + j) as f32;
    let (brightness, contrast, saturation) = (factor(), factor(), factor());
    let grey = |p: &image::Rgb<u8>| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
    let n = (img.width() * img.height()).max(1) as f32;
    let mean = img.pixels().map(grey).sum::<f32>() / n * brightness;
    for p in img.pixels_mut() {
        let g = grey(p) * brightness;
        for c in 0..3 {
            let v = p[c] as f32 * brightness;
            let v = g + (v - g) * saturation;
            let v = mean + (v - mean) * contrast;
            p[c] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
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
                dataset: 0,
                class: None,
            })
            .collect()
    }

    #[test]
    fn plans_and_batches_are_reproducible_and_cover_every_image() {
        let imgs = images(10);
        let plan = epoch_plan(&imgs, 7, 3, CaptionsPerEpoch::One, 1.0);
        assert_eq!(plan, epoch_plan(&imgs, 7, 3, CaptionsPerEpoch::One, 1.0));
        assert_ne!(plan, epoch_plan(&imgs, 7, 4, CaptionsPerEpoch::One, 1.0));
        let mut seen: Vec<usize> = plan.iter().map(|p| p.0).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        let opts = BatchOptions {
            batch_size: 4,
            size: 32,
            seed: 7,
            epoch: 3,
            word_dropout: 0.0,
            augment: AugmentConfig::default(),
        };
        let a = make_batch(&imgs, &plan, 1, opts);
        let b = make_batch(&imgs, &plan, 1, opts);
        assert_eq!(a.pixels, b.pixels);
        assert_eq!(a.pixels.len(), 4 * 3 * 32 * 32);
        assert_eq!(make_batch(&imgs, &plan, 2, opts).image_ids.len(), 2);
    }

    #[test]
    fn an_all_captions_epoch_visits_every_pair_once() {
        let imgs = images(6);
        let mut plan = epoch_plan(&imgs, 1, 0, CaptionsPerEpoch::All, 1.0);
        assert_eq!(plan.len(), 12);
        plan.sort();
        let expected: Vec<(usize, usize)> = (0..6).flat_map(|i| [(i, 0), (i, 1)]).collect();
        assert_eq!(plan, expected);
    }

    /// 3 images of dataset 0 and 12 of dataset 1.
    fn two_datasets() -> Vec<TrainImage> {
        let mut imgs = images(15);
        for img in &mut imgs[3..] {
            img.dataset = 1;
        }
        imgs
    }

    #[test]
    fn dataset_shares_follow_size_to_the_exponent_and_sum_to_the_total() {
        assert_eq!(dataset_shares(&[3, 12], 1.0, 15), vec![3, 12]);
        assert_eq!(dataset_shares(&[3, 12], 0.0, 15), vec![8, 7]); // 7.5 each: tie to the first
        // sqrt: 1.732 : 3.464, of 15 = 5 : 10.
        assert_eq!(dataset_shares(&[3, 12], 0.5, 15), vec![5, 10]);
        assert_eq!(dataset_shares(&[1680, 0, 8100], 0.5, 9780), vec![3060, 0, 6720]);
        assert_eq!(dataset_shares(&[], 0.5, 0), Vec::<usize>::new());
    }

    #[test]
    fn balanced_epochs_repeat_the_small_dataset_evenly_and_keep_their_length() {
        let imgs = two_datasets();
        let plan = epoch_plan(&imgs, 5, 2, CaptionsPerEpoch::One, 0.0);
        assert_eq!(plan, epoch_plan(&imgs, 5, 2, CaptionsPerEpoch::One, 0.0));
        assert_eq!(plan.len(), 15);
        let mut counts = [0usize; 15];
        for &(i, c) in &plan {
            counts[i] += 1;
            assert!(c < imgs[i].captions.len());
        }
        // Dataset 0's 8 draws: each of its 3 images 2 or 3 times; dataset 1's 7 draws: 7 distinct images.
        assert_eq!(counts[..3].iter().sum::<usize>(), 8);
        assert!(counts[..3].iter().all(|&n| n == 2 || n == 3), "{counts:?}");
        assert!(counts[3..].iter().all(|&n| n <= 1), "{counts:?}");
        // The same images in the same order as before balancing existed, at exponent 1.
        let as_loaded = epoch_plan(&imgs, 5, 2, CaptionsPerEpoch::One, 1.0);
        let mut seen: Vec<usize> = as_loaded.iter().map(|p| p.0).collect();
        seen.sort();
        assert_eq!(seen, (0..15).collect::<Vec<_>>());
        // Every pair: dataset 0's 6 pairs fill half of the 30 draws.
        let pairs = epoch_plan(&imgs, 5, 2, CaptionsPerEpoch::All, 0.0);
        assert_eq!(pairs.len(), 30);
        assert_eq!(pairs.iter().filter(|p| p.0 < 3).count(), 15);
    }

    #[test]
    fn word_dropout_turns_words_into_unk_reproducibly() {
        let imgs: Vec<TrainImage> = (0..64)
            .map(|i| TrainImage {
                path: PathBuf::from(format!("{i}.png")),
                pixels: RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3])),
                captions: vec![vec![5; 10]],
                dataset: 0,
                class: None,
            })
            .collect();
        let plan = epoch_plan(&imgs, 3, 0, CaptionsPerEpoch::One, 1.0);
        let opts = BatchOptions {
            batch_size: 64,
            size: 8,
            seed: 3,
            epoch: 0,
            word_dropout: 0.25,
            augment: AugmentConfig::default(),
        };
        let a = make_batch(&imgs, &plan, 0, opts);
        assert_eq!(a.captions, make_batch(&imgs, &plan, 0, opts).captions);
        let unk = a.captions.iter().flatten().filter(|&&id| id == UNK_ID).count();
        // 640 words at p = 0.25: 160 expected; far outside [100, 220] means no dropout or too much.
        assert!((100..=220).contains(&unk), "{unk} of 640 words dropped");
        let none = make_batch(&imgs, &plan, 0, BatchOptions { word_dropout: 0.0, ..opts });
        assert!(none.captions.iter().flatten().all(|&id| id == 5));
        // Duplicate captions are found from the token ids before dropout.
        assert!(a.caption_groups.iter().all(|&g| g == 0), "{:?}", a.caption_groups);
    }

    #[test]
    fn caption_groups_name_the_first_identical_caption() {
        let caps: [&[i64]; 5] = [&[4, 5], &[4], &[4, 5], &[4, 5, 0], &[4]];
        assert_eq!(caption_groups(caps), vec![0, 1, 0, 3, 1]);
    }

    #[test]
    fn class_groups_join_one_datasets_named_class_only() {
        let img = |dataset: usize, class: Option<&str>| TrainImage {
            path: PathBuf::from("x.png"),
            pixels: RgbImage::new(1, 1),
            captions: vec![vec![4]],
            dataset,
            class: class.map(str::to_string),
        };
        let imgs =
            [img(0, Some("beach")), img(0, None), img(1, Some("beach")), img(0, Some("beach")), img(0, None)];
        // Same dataset and class: one group; the other dataset's "beach" and unnamed images apart.
        assert_eq!(class_groups(&imgs), vec![0, 1, 2, 0, 4]);
    }

    #[test]
    fn augmentation_keeps_the_image_content_channel() {
        let img = RgbImage::from_pixel(50, 60, image::Rgb([10, 20, 30]));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let chw = augment(&img, 16, &AugmentConfig::default(), &mut rng);
        assert_eq!(chw.len(), 3 * 16 * 16);
        assert!(chw[..256].iter().all(|&v| v == 10) && chw[512..].iter().all(|&v| v == 30));
    }

    #[test]
    fn no_crop_keeps_the_whole_image_up_to_rotation_and_mirror() {
        // A 2×2 image with four distinct corners: any view of the whole image keeps all
        // four colours; a crop would lose some.
        let mut img = RgbImage::new(2, 2);
        for (i, p) in img.pixels_mut().enumerate() {
            *p = image::Rgb([40 * i as u8 + 10, 0, 0]);
        }
        let aug = AugmentConfig { crop_min: 1.0, color_jitter: 0.0 };
        for seed in 0..20 {
            let chw = augment(&img, 2, &aug, &mut ChaCha8Rng::seed_from_u64(seed));
            let mut reds = chw[..4].to_vec();
            reds.sort();
            assert_eq!(reds, vec![10, 50, 90, 130], "seed {seed}");
        }
    }

    #[test]
    fn colour_jitter_changes_colours_within_range_and_only_when_asked() {
        let mut img = RgbImage::new(8, 8);
        for (i, p) in img.pixels_mut().enumerate() {
            *p = image::Rgb([(i * 4) as u8, 128, 250 - i as u8]);
        }
        let plain = AugmentConfig { crop_min: 1.0, color_jitter: 0.0 };
        let jitter = AugmentConfig { color_jitter: 0.4, ..plain };
        let mut changed = 0;
        for seed in 0..10 {
            let a = augment(&img, 8, &plain, &mut ChaCha8Rng::seed_from_u64(seed));
            let b = augment(&img, 8, &jitter, &mut ChaCha8Rng::seed_from_u64(seed));
            // Same geometry (the jitter draws come after it): the green plane is flat in
            // the original, so it stays flat after any rotation or mirror.
            assert!(a[64..128].iter().all(|&v| v == 128));
            let green = &b[64..128];
            assert!(green.iter().max().unwrap() - green.iter().min().unwrap() <= 80, "{green:?}");
            changed += usize::from(a != b);
        }
        assert!(changed >= 9, "jitter changed only {changed} of 10 images");
    }
}
