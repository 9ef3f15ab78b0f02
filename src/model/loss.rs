//! Training loss (Eq. 15, signs fixed): hinge triplet loss with margin δ on in-batch
//! negatives in both directions, plus the same hinge on the global similarity (L_g).
//! `negatives: "softmax"` swaps the hinge for InfoNCE over the batch (a measured
//! departure from the paper; see the model card).

use tch::{Kind, Tensor};

use crate::model::config::{LossConfig, Negatives};

/// Hinge triplet loss over a (B, B) score matrix whose rows are images and columns
/// captions, pair (b, b) being positive:
/// `Σ_b [δ − S(I,T) + S(I,T̂)]_+ + [δ − S(I,T) + S(Î,T)]_+`, with the hardest negative
/// (VSE++) or the sum over negatives. `not_negative` (B, B, bool; see [`excluded_pairs`])
/// marks the pairs that are never negatives. A row without negatives adds 0.
pub fn triplet_loss(scores: &Tensor, not_negative: &Tensor, cfg: &LossConfig) -> Tensor {
    let positive = scores.diagonal(0, 0, 1);
    let same = not_negative.to_device(scores.device());
    // Image b against captions T̂ (along a row) and caption b against images Î (along a column).
    let hinge = |positive: Tensor| (scores - positive + cfg.margin).clamp_min(0.0).masked_fill(&same, 0.0);
    let cost_captions = hinge(positive.unsqueeze(1));
    let cost_images = hinge(positive.unsqueeze(0));
    match cfg.negatives {
        // max of the hinge = hinge of the hardest negative, and 0 when there is none.
        Negatives::Hardest => {
            cost_captions.amax(1, false).sum(None::<Kind>) + cost_images.amax(0, false).sum(None::<Kind>)
        }
        Negatives::Sum => cost_captions.sum(None::<Kind>) + cost_images.sum(None::<Kind>),
        Negatives::Softmax => info_nce(scores, &same, cfg.temperature),
    }
}

/// InfoNCE over a (B, B) score matrix, pair (b, b) positive, both directions:
/// `Σ_b −log softmax_j(S_bj/τ)_b − log softmax_i(S_ib/τ)_b`, with the pairs marked in
/// `not_negative` (other than the positive itself) left out of the softmax. Summed over
/// rows like the hinge, so the two losses are on a comparable per-batch scale.
pub fn info_nce(scores: &Tensor, not_negative: &Tensor, temperature: f64) -> Tensor {
    let b = scores.size()[0];
    let eye = Tensor::eye(b, (Kind::Bool, scores.device()));
    let excluded = not_negative.to_device(scores.device()).logical_and(&eye.logical_not());
    let logits = (scores / temperature).masked_fill(&excluded, f64::NEG_INFINITY);
    let positive = logits.diagonal(0, 0, 1);
    let captions = logits.logsumexp([1i64].as_slice(), false) - &positive;
    let images = logits.logsumexp([0i64].as_slice(), false) - &positive;
    captions.sum(None::<Kind>) + images.sum(None::<Kind>)
}

/// The pairs of a batch that are never negatives, (B, B) bool: the same source image
/// (`image_ids`, B int64; the positive itself included) and, when `caption_groups` is
/// given (B int64, equal for captions with identical token ids), the same caption text.
/// UCM-Captions repeats captions word for word across the images of a class (1,635
/// distinct among 8,400 training captions); another image's identical caption scores
/// exactly like the positive, so as a negative it only adds a hinge of δ that no weight
/// can lower (for hardest negatives it hides the row's real negatives) and pushes apart
/// images that the data describes the same way. Evaluation counts such captions as ties.
/// `class_groups` (B int64, equal for images of the same scene class) also excludes the
/// pairs of one class (`loss.mask_same_class`).
pub fn excluded_pairs(
    image_ids: &Tensor,
    caption_groups: Option<&Tensor>,
    class_groups: Option<&Tensor>,
) -> Tensor {
    let mut excluded = equal_key_pairs(image_ids);
    for groups in [caption_groups, class_groups].into_iter().flatten() {
        excluded = excluded.logical_or(&equal_key_pairs(&groups.to_device(image_ids.device())));
    }
    excluded
}

/// The ACF training loss (Eq. 15): [`triplet_loss`] on the full scores S plus, when
/// `global_loss` is on, the same hinge on the global similarities `sim_g` (L_g). With
/// `loss.class_pull` w > 0 and `same_class` given (see [`equal_key_pairs`]), each of the
/// two also gets w · [`class_pull`].
pub fn acf_loss(
    scores: &Tensor,
    global_sim: &Tensor,
    not_negative: &Tensor,
    same_class: Option<&Tensor>,
    cfg: &LossConfig,
) -> Tensor {
    let one = |s: &Tensor| {
        let loss = triplet_loss(s, not_negative, cfg);
        match same_class {
            Some(same) if cfg.class_pull > 0.0 => {
                loss + class_pull(s, not_negative, same, cfg.temperature) * cfg.class_pull
            }
            _ => loss,
        }
    };
    let local = one(scores);
    if cfg.global_loss { local + one(global_sim) } else { local }
}

/// (B, B) bool: the pairs of a batch with equal keys (`groups`, B int64): image ids, caption
/// groups or, with the class groups of [`excluded_pairs`], the pairs whose images share a
/// scene class (what `same_class` of [`acf_loss`] takes). The diagonal is always true.
pub fn equal_key_pairs(groups: &Tensor) -> Tensor {
    groups.unsqueeze(1).eq_tensor(&groups.unsqueeze(0))
}

/// Class placement over a (B, B) score matrix (images × captions): for each image whose
/// class has another member in the batch, `−log Σ_{j ∈ class} softmax_j(S_bj/τ)`, the
/// probability InfoNCE's softmax puts on its own class's captions taken as one group, and
/// the same for each caption over the images. Where `loss.mask_same_class` stops pushing
/// a class's images apart, this pulls the class together against the other classes: what
/// retrieval on a split of near-identical captions per class rewards (docs/round22).
/// Pairs in `not_negative` outside the class stay out of the softmax; rows and columns
/// without a classmate add 0. Summed like [`info_nce`].
pub fn class_pull(scores: &Tensor, not_negative: &Tensor, same_class: &Tensor, temperature: f64) -> Tensor {
    let device = scores.device();
    let same = same_class.to_device(device);
    let other = same.logical_not();
    let excluded = not_negative.to_device(device).logical_and(&other);
    let logits = (scores / temperature).masked_fill(&excluded, f64::NEG_INFINITY);
    let in_class = logits.masked_fill(&other, f64::NEG_INFINITY);
    let alone = same.sum_dim_intlist([1i64].as_slice(), false, Kind::Int64).le(1);
    let cost = |dim: i64| {
        (logits.logsumexp([dim].as_slice(), false) - in_class.logsumexp([dim].as_slice(), false))
            .masked_fill(&alone, 0.0)
            .sum(None::<Kind>)
    };
    cost(1) + cost(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(negatives: Negatives, global_loss: bool) -> LossConfig {
        LossConfig {
            margin: 0.2,
            negatives,
            global_loss,
            mask_duplicate_captions: false,
            mask_same_class: crate::model::config::SameClassMask::All(false),
            class_pull: 0.0,
            temperature: 0.1,
        }
    }

    fn matrix(rows: [[f64; 3]; 3]) -> Tensor {
        Tensor::from_slice(rows.as_flattened()).view([3, 3])
    }

    fn distinct(n: i64) -> Tensor {
        excluded_pairs(&Tensor::arange(n, (Kind::Int64, tch::Device::Cpu)), None, None)
    }

    fn value(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    #[test]
    fn hand_computed_example() {
        let scores = matrix([[0.9, 0.45, 0.8], [0.3, 0.7, 0.6], [0.5, 0.75, 0.6]]);
        let ids = distinct(3);
        // Rows (captions as negatives): 0.1, 0.1, max(0.1, 0.35) | sum 0.45.
        // Columns (images as negatives): 0, 0.25, max(0.4, 0.2) | sum 0.6.
        let hardest = triplet_loss(&scores, &ids, &config(Negatives::Hardest, false));
        assert!((value(&hardest) - 1.2).abs() < 1e-12, "{hardest}");
        let sum = triplet_loss(&scores, &ids, &config(Negatives::Sum, false));
        assert!((value(&sum) - 1.5).abs() < 1e-12, "{sum}");
        // Transposing swaps the directions: captions 0 + 0.25 + 0.4, images 0.1 + 0.1 + 0.35.
        let transposed = triplet_loss(&scores.transpose(0, 1), &ids, &config(Negatives::Hardest, false));
        assert!((value(&transposed) - 1.2).abs() < 1e-12);
        // L_g adds the same hinge on the global similarities, only when switched on.
        let global = matrix([[0.5, 0.6, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5]]);
        let with_g = acf_loss(&scores, &global, &ids, None, &config(Negatives::Hardest, true));
        // Global: row 0 hinge 0.3, column 1 hinge 0.3.
        assert!((value(&with_g) - 1.8).abs() < 1e-12, "{with_g}");
        let without = acf_loss(&scores, &global, &ids, None, &config(Negatives::Hardest, false));
        assert!((value(&without) - 1.2).abs() < 1e-12);
    }

    #[test]
    fn same_image_captions_are_never_negatives() {
        let scores = matrix([[0.9, 5.0, 0.1], [5.0, 0.8, 0.1], [0.1, 0.1, 0.7]]);
        for negatives in [Negatives::Hardest, Negatives::Sum] {
            let cfg = config(negatives, false);
            let shared =
                triplet_loss(&scores, &excluded_pairs(&Tensor::from_slice(&[0i64, 0, 1]), None, None), &cfg);
            assert!(value(&shared).abs() < 1e-12, "{shared}");
            let apart = triplet_loss(&scores, &distinct(3), &cfg);
            assert!(value(&apart) > 1.0, "{apart}");
        }
    }

    #[test]
    fn identical_captions_of_other_images_are_not_negatives_when_masked() {
        // Images 0 and 1 carry the same caption text (group 0); image 2 another (group 2).
        // Caption 1 scores with image 0 exactly as caption 0 does: a tie, not a negative.
        let scores = matrix([[0.9, 0.9, 0.1], [0.8, 0.8, 0.1], [0.1, 0.1, 0.7]]);
        let ids = Tensor::from_slice(&[0i64, 1, 2]);
        let groups = Tensor::from_slice(&[0i64, 0, 2]);
        let mask = excluded_pairs(&ids, Some(&groups), None);
        let expected = [[true, true, false], [true, true, false], [false, false, true]];
        for (i, row) in expected.iter().enumerate() {
            for (j, &want) in row.iter().enumerate() {
                assert_eq!(mask.int64_value(&[i as i64, j as i64]) != 0, want, "pair ({i}, {j})");
            }
        }
        for negatives in [Negatives::Hardest, Negatives::Sum] {
            let cfg = config(negatives, false);
            // Unmasked, the tie costs δ in rows 0 and 1, and images 1 and 0 cost 0.1 and
            // 0.3 as negatives of captions 0 and 1 (columns): 0.8 …
            let unmasked = value(&triplet_loss(&scores, &distinct(3), &cfg));
            assert!((unmasked - 0.8).abs() < 1e-12, "{negatives:?}: {unmasked}");
            // … masked, every remaining negative is beaten by more than δ.
            let masked = value(&triplet_loss(&scores, &mask, &cfg));
            assert!(masked.abs() < 1e-12, "{negatives:?}: {masked}");
        }
    }

    #[test]
    fn same_class_pairs_are_not_negatives_when_masked() {
        // Images 0 and 1 share a scene class with different captions; 2 is another class.
        let ids = Tensor::from_slice(&[0i64, 1, 2]);
        let groups = Tensor::from_slice(&[0i64, 1, 2]);
        let classes = Tensor::from_slice(&[0i64, 0, 2]);
        let mask = excluded_pairs(&ids, Some(&groups), Some(&classes));
        let expected = [[true, true, false], [true, true, false], [false, false, true]];
        for (i, row) in expected.iter().enumerate() {
            for (j, &want) in row.iter().enumerate() {
                assert_eq!(mask.int64_value(&[i as i64, j as i64]) != 0, want, "pair ({i}, {j})");
            }
        }
        // Without the class groups only the image itself is excluded.
        assert_eq!(excluded_pairs(&ids, Some(&groups), None).sum(Kind::Int64).int64_value(&[]), 3);
        // The class twin outscoring the positive costs nothing once masked.
        let scores = matrix([[0.5, 0.9, 0.1], [0.9, 0.5, 0.1], [0.1, 0.1, 0.9]]);
        let cfg = LossConfig { negatives: Negatives::Softmax, ..config(Negatives::Sum, false) };
        let masked = value(&triplet_loss(&scores, &mask, &cfg));
        let unmasked = value(&triplet_loss(&scores, &excluded_pairs(&ids, None, None), &cfg));
        assert!(masked < unmasked - 1.0, "masked {masked}, unmasked {unmasked}");
    }

    #[test]
    fn zero_when_positives_beat_negatives_by_the_margin() {
        let scores = matrix([[1.0, 0.5, 0.79], [0.5, 1.0, 0.5], [0.79, 0.5, 1.0]]);
        let ids = distinct(3);
        for negatives in [Negatives::Hardest, Negatives::Sum] {
            let loss = acf_loss(&scores, &scores, &ids, None, &config(negatives, true));
            assert_eq!(value(&loss), 0.0);
        }
        // Closing the gap to less than δ makes it positive.
        let close = matrix([[1.0, 0.5, 0.81], [0.5, 1.0, 0.5], [0.79, 0.5, 1.0]]);
        let loss = triplet_loss(&close, &ids, &config(Negatives::Sum, false));
        assert!((value(&loss) - 0.02).abs() < 1e-9, "{loss}");
    }

    #[test]
    fn info_nce_matches_a_hand_computation_and_skips_masked_pairs() {
        let scores = matrix([[0.9, 0.45, 0.8], [0.3, 0.7, 0.6], [0.5, 0.75, 0.6]]);
        let tau = 0.1;
        let lse = |xs: &[f64]| xs.iter().map(|x| (x / tau).exp()).sum::<f64>().ln();
        let rows = [[0.9, 0.45, 0.8], [0.3, 0.7, 0.6], [0.5, 0.75, 0.6]];
        let mut expected = 0.0;
        for (i, row) in rows.iter().enumerate() {
            let col: Vec<f64> = rows.iter().map(|r| r[i]).collect();
            expected += lse(row) - row[i] / tau + lse(&col) - row[i] / tau;
        }
        let cfg = LossConfig { negatives: Negatives::Softmax, ..config(Negatives::Sum, false) };
        let got = value(&triplet_loss(&scores, &distinct(3), &cfg));
        assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
        // Masking pair (0, 2) and (2, 0) removes them from both softmaxes of rows/columns 0 and 2.
        let mask = excluded_pairs(&Tensor::from_slice(&[0i64, 1, 0]), None, None);
        let masked = value(&triplet_loss(&scores, &mask, &cfg));
        let mut expected_masked = 0.0;
        let keep = |i: usize, j: usize| !((i == 0 && j == 2) || (i == 2 && j == 0));
        for (i, full_row) in rows.iter().enumerate() {
            let row: Vec<f64> = (0..3).filter(|&j| keep(i, j)).map(|j| full_row[j]).collect();
            let col: Vec<f64> = (0..3).filter(|&r| keep(r, i)).map(|r| rows[r][i]).collect();
            expected_masked += lse(&row) - full_row[i] / tau + lse(&col) - full_row[i] / tau;
        }
        assert!((masked - expected_masked).abs() < 1e-9, "{masked} vs {expected_masked}");
        // A perfect, well-separated batch costs almost nothing.
        let easy = matrix([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]]);
        assert!(value(&triplet_loss(&easy, &distinct(3), &cfg)) < 1e-6);
    }

    #[test]
    fn class_pull_rewards_a_class_ranked_above_the_others() {
        // Images 0 and 1 share a class (their captions masked as negatives); 2 is alone.
        let rows = [[0.9, 0.6, 0.8], [0.5, 0.7, 0.6], [0.2, 0.75, 0.6]];
        let scores = matrix(rows);
        let classes = Tensor::from_slice(&[4i64, 4, 2]);
        let same = equal_key_pairs(&classes);
        let not_negative = excluded_pairs(&Tensor::from_slice(&[0i64, 1, 2]), None, Some(&classes));
        let tau = 0.1;
        let lse = |xs: &[f64]| xs.iter().map(|x| (x / tau).exp()).sum::<f64>().ln();
        // Rows and columns 0 and 1: every pair is in the softmax, the class {0, 1} is the
        // target; row and column 2 have no classmate and add nothing.
        let mut expected = 0.0;
        for i in 0..2 {
            let col: Vec<f64> = rows.iter().map(|r| r[i]).collect();
            expected += lse(&rows[i]) - lse(&rows[i][..2]) + lse(&col) - lse(&col[..2]);
        }
        let got = value(&class_pull(&scores, &not_negative, &same, tau));
        assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
        // Raising a classmate's score lowers it; raising another class's raises it.
        let closer =
            value(&class_pull(&matrix([[0.9, 0.8, 0.8], rows[1], rows[2]]), &not_negative, &same, tau));
        let intruder =
            value(&class_pull(&matrix([[0.9, 0.6, 0.95], rows[1], rows[2]]), &not_negative, &same, tau));
        assert!(closer < got && intruder > got, "{closer} < {got} < {intruder}");
        // In the loss: w · class_pull on top of InfoNCE, on S and on sim_g; w = 0 is InfoNCE alone.
        let off = LossConfig { negatives: Negatives::Softmax, ..config(Negatives::Sum, true) };
        let on = LossConfig { class_pull: 0.5, ..off.clone() };
        let infonce = value(&acf_loss(&scores, &scores, &not_negative, Some(&same), &off));
        let pulled = value(&acf_loss(&scores, &scores, &not_negative, Some(&same), &on));
        assert!((pulled - infonce - 2.0 * 0.5 * expected).abs() < 1e-9, "{pulled} vs {infonce} + {expected}");
    }
}
