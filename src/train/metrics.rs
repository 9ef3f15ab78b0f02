//! Recall@K and mR as the paper reports them (Sec. 4.1, Table 4).
//!
//! Ties are broken at random, in expectation: when wrong items score exactly as high as the
//! best true item, R@K counts the probability that a random order of the tied items puts a
//! true one within the top K. This matters on UCM-Captions and RSICD, where many images share
//! word-for-word identical captions (equal texts get equal scores), and it gives a constant
//! score matrix chance-level recall rather than a perfect or a zero one.

use serde::Serialize;

/// R@1/5/10 in both directions and their mean, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Recall {
    /// Sentence retrieval (image → text): R@1, R@5, R@10.
    pub i2t: [f64; 3],
    /// Image retrieval (text → image): R@1, R@5, R@10.
    pub t2i: [f64; 3],
    /// Mean of the six.
    pub mr: f64,
}

/// The K of R@K.
pub const RECALL_KS: [usize; 3] = [1, 5, 10];

/// Computes recall from a row-major score matrix of `images` rows × `captions.len()`
/// columns, where `caption_image[c]` is the image that caption `c` describes.
pub fn recall(scores: &[f32], images: usize, caption_image: &[usize]) -> Recall {
    let n_cap = caption_image.len();
    assert_eq!(scores.len(), images * n_cap, "score matrix size");
    let mut i2t_ranks = Vec::with_capacity(images);
    for i in 0..images {
        let row = &scores[i * n_cap..(i + 1) * n_cap];
        let best_true =
            (0..n_cap).filter(|&c| caption_image[c] == i).map(|c| row[c]).fold(f32::NEG_INFINITY, f32::max);
        if best_true == f32::NEG_INFINITY {
            continue; // an image without captions takes no part in sentence retrieval
        }
        let wrong = (0..n_cap).filter(|&c| caption_image[c] != i);
        let above = wrong.clone().filter(|&c| row[c] > best_true).count();
        let tied_wrong = wrong.filter(|&c| row[c] == best_true).count();
        let tied_true = (0..n_cap).filter(|&c| caption_image[c] == i && row[c] == best_true).count();
        i2t_ranks.push(TiedRank { above, tied_wrong, tied_true });
    }
    let t2i_ranks: Vec<TiedRank> = (0..n_cap)
        .map(|c| {
            let g = caption_image[c];
            let truth = scores[g * n_cap + c];
            let wrong = (0..images).filter(|&i| i != g).map(|i| scores[i * n_cap + c]);
            let above = wrong.clone().filter(|&s| s > truth).count();
            let tied_wrong = wrong.filter(|&s| s == truth).count();
            TiedRank { above, tied_wrong, tied_true: 1 }
        })
        .collect();
    let at = |ranks: &[TiedRank], k: usize| {
        if ranks.is_empty() {
            0.0
        } else {
            100.0 * ranks.iter().map(|r| r.within(k)).sum::<f64>() / ranks.len() as f64
        }
    };
    let i2t = RECALL_KS.map(|k| at(&i2t_ranks, k));
    let t2i = RECALL_KS.map(|k| at(&t2i_ranks, k));
    let mr = (i2t.iter().sum::<f64>() + t2i.iter().sum::<f64>()) / 6.0;
    Recall { i2t, t2i, mr }
}

/// Where the best true item stands: `above` wrong items score higher, and it is tied
/// with `tied_wrong` wrong and `tied_true` true items (itself included).
#[derive(Debug, Clone, Copy)]
struct TiedRank {
    above: usize,
    tied_wrong: usize,
    tied_true: usize,
}

impl TiedRank {
    /// Probability that a true item lands in the top `k` when the tied group is shuffled:
    /// 1 − P(at least k − above wrong items precede every true one in the group).
    fn within(self, k: usize) -> f64 {
        if self.above >= k {
            return 0.0;
        }
        let need = k - self.above; // wrong items that must come first for a miss
        if need > self.tied_wrong {
            return 1.0;
        }
        let (t, u) = (self.tied_wrong as f64, self.tied_true as f64);
        let miss: f64 = (0..need).map(|i| (t - i as f64) / (t + u - i as f64)).product();
        1.0 - miss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_recall_with_ties_and_five_captions() {
        // 3 images; image 0 has 5 captions (0..5), image 1 has caption 5, image 2 has caption 6.
        let caption_image = [0, 0, 0, 0, 0, 1, 2];
        #[rustfmt::skip]
        let scores = [
            // c0   c1   c2   c3   c4   c5   c6
            0.1, 0.9, 0.2, 0.2, 0.2, 0.5, 0.3, // image 0: best true 0.9 → rank 1
            0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, // image 1: its caption tied with 6 wrong ones
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, // image 2: rank 1
        ];
        let r = recall(&scores, 3, &caption_image);
        // Images 0 and 2 rank their caption first. Image 1: a random order of 7 tied items puts
        // its caption first with p = 1/7 and in the top 5 with p = 1 − (6·5·4·3·2)/(7·6·5·4·3) = 5/7.
        assert!((r.i2t[0] - 100.0 * (2.0 + 1.0 / 7.0) / 3.0).abs() < 1e-9, "{:?}", r.i2t);
        assert!((r.i2t[1] - 100.0 * (2.0 + 5.0 / 7.0) / 3.0).abs() < 1e-9, "{:?}", r.i2t);
        assert!((r.i2t[2] - 100.0).abs() < 1e-9);
        // t2i: c0: truth 0.1 vs 0.4 (img1) and 0.0 → rank 2; c1: 0.9 → 1; c2..c4: 0.2 vs 0.4 → 2;
        // c5: truth 0.4 vs 0.5 (img0) → 2; c6: truth 0.1 vs 0.3, 0.4 → 3.
        // ranks [2,1,2,2,2,2,3]: R@1 = 1/7, R@5 = R@10 = 7/7.
        assert!((r.t2i[0] - 100.0 / 7.0).abs() < 1e-9);
        assert!((r.t2i[1] - 100.0).abs() < 1e-9 && (r.t2i[2] - 100.0).abs() < 1e-9);
        let mean = (r.i2t.iter().sum::<f64>() + r.t2i.iter().sum::<f64>()) / 6.0;
        assert!((r.mr - mean).abs() < 1e-12);
    }

    #[test]
    fn constant_scores_get_chance_level() {
        // 10 images with 2 captions each: a random caption is true with p = 2/20, a random
        // image with p = 1/10.
        let caption_image: Vec<usize> = (0..20).map(|c| c / 2).collect();
        let r = recall(&[0.5; 10 * 20], 10, &caption_image);
        assert!((r.i2t[0] - 10.0).abs() < 1e-9, "{:?}", r.i2t);
        assert!((r.t2i[0] - 10.0).abs() < 1e-9, "{:?}", r.t2i);
        assert!((r.t2i[2] - 100.0).abs() < 1e-9);
    }

    #[test]
    fn identical_wrong_captions_share_the_rank() {
        // Image 0's only caption scores 0.8, as does one wrong caption with the same text.
        let caption_image = [0, 1, 1];
        let scores = [0.8, 0.8, 0.1, 0.0, 0.5, 0.6];
        let r = recall(&scores, 2, &caption_image);
        // image 0: R@1 = 1/2; image 1: rank 1. → i2t R@1 = 75 %.
        assert!((r.i2t[0] - 75.0).abs() < 1e-9, "{:?}", r.i2t);
    }

    #[test]
    fn perfect_scores_give_full_recall() {
        let caption_image = [0, 1, 2];
        let scores = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let r = recall(&scores, 3, &caption_image);
        assert_eq!(r.mr, 100.0);
    }
}
