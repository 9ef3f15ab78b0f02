//! Recall@K and mR as the paper reports them (Sec. 4.1, Table 4).
//!
//! Ties count against the model: a true item's rank is 1 + the number of wrong items
//! scoring at least as high, so a constant score matrix gets chance-level recall,
//! never a perfect one.

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
        let above = (0..n_cap).filter(|&c| caption_image[c] != i && row[c] >= best_true).count();
        i2t_ranks.push(above + 1);
    }
    let t2i_ranks: Vec<usize> = (0..n_cap)
        .map(|c| {
            let g = caption_image[c];
            let truth = scores[g * n_cap + c];
            1 + (0..images).filter(|&i| i != g && scores[i * n_cap + c] >= truth).count()
        })
        .collect();
    let at = |ranks: &[usize], k: usize| {
        if ranks.is_empty() {
            0.0
        } else {
            100.0 * ranks.iter().filter(|&&r| r <= k).count() as f64 / ranks.len() as f64
        }
    };
    let i2t = RECALL_KS.map(|k| at(&i2t_ranks, k));
    let t2i = RECALL_KS.map(|k| at(&t2i_ranks, k));
    let mr = (i2t.iter().sum::<f64>() + t2i.iter().sum::<f64>()) / 6.0;
    Recall { i2t, t2i, mr }
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
            0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, // image 1: all tied → rank 1 + 6 = 7
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, // image 2: rank 1
        ];
        let r = recall(&scores, 3, &caption_image);
        // i2t ranks [1, 7, 1]: R@1 = 2/3, R@5 = 2/3, R@10 = 3/3.
        assert!((r.i2t[0] - 200.0 / 3.0).abs() < 1e-9);
        assert!((r.i2t[1] - 200.0 / 3.0).abs() < 1e-9);
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
    fn constant_scores_are_not_rewarded() {
        let caption_image: Vec<usize> = (0..20).map(|c| c / 2).collect();
        let r = recall(&[0.5; 10 * 20], 10, &caption_image);
        assert_eq!(r.i2t[0], 0.0);
        assert_eq!(r.t2i[0], 0.0);
    }

    #[test]
    fn perfect_scores_give_full_recall() {
        let caption_image = [0, 1, 2];
        let scores = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let r = recall(&scores, 3, &caption_image);
        assert_eq!(r.mr, 100.0);
    }
}
