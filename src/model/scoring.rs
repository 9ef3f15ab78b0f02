//! Scoring S(I, T) of an (image, caption) pair (Sec. 3.2, Eq. 5–14), batched over every
//! image × caption pair of two feature batches as tensor ops.
//!
//! Only (N, T, k, m) tensors are ever built: the attended vectors a_i (Eq. 12) and b_j
//! (Eq. 13) are never materialised. Because v_i and w_j are unit vectors,
//! `v_i · a_i = Σ_j α''_ij s_ij` and `|a_i|² = α''_i G α''_iᵀ` with the word Gram matrix
//! `G = W Wᵀ` (and the region Gram matrix `V Vᵀ` for `|b_j|`), which avoids the
//! (N, T, k, D) tensor a naive version needs (2.2 GB for a 150 × 150 training batch).

use tch::{Kind, Tensor};

use crate::model::config::{Correction, ScoringConfig};
use crate::model::features::{ImageFeatures, TextFeatures};

/// Smallest norm divided by; keeps cosines and their gradients finite for degenerate vectors.
const NORM_FLOOR: f64 = 1e-12;

/// `sim_g = cos(v_g, t_g)` for every image × caption pair, (N, T) (used by Eq. 7 and S).
/// The global vectors are unit-norm, so this is a plain matrix product.
pub fn global_similarity(images: &ImageFeatures, texts: &TextFeatures) -> Tensor {
    images.global.matmul(&texts.global.transpose(0, 1))
}

/// Full retrieval score S(I, T) (Eq. 14 plus `sim_g` when the global component M5 is on),
/// (N, T), for every image × caption pair. Serves one caption against many images and
/// B × B training batches alike; differentiable.
pub fn score_matrix(images: &ImageFeatures, texts: &TextFeatures, cfg: &ScoringConfig) -> Tensor {
    let sim_g = global_similarity(images, texts);
    let (r_i2t, r_t2i) = local_scores_with(images, texts, &sim_g, cfg);
    let local = r_i2t + r_t2i;
    if cfg.global_component { local + sim_g * cfg.global_weight } else { local }
}

/// [`score_matrix`] over the image axis in slices of `chunk` images, concatenated, so that
/// scoring against many stored images keeps memory bounded. `chunk <= 0` means one slice.
pub fn score_matrix_chunked(
    images: &ImageFeatures,
    texts: &TextFeatures,
    cfg: &ScoringConfig,
    chunk: i64,
) -> Tensor {
    let n = images.len();
    if chunk <= 0 || n <= chunk {
        return score_matrix(images, texts, cfg);
    }
    let parts: Vec<Tensor> = (0..n)
        .step_by(chunk as usize)
        .map(|start| score_matrix(&images.narrow(start, chunk.min(n - start)), texts, cfg))
        .collect();
    Tensor::cat(&parts, 0)
}

/// The two local scores (R_i2t, R_t2i), each (N, T); `R(I, T) = R_i2t + R_t2i` (Eq. 14).
pub fn local_scores(images: &ImageFeatures, texts: &TextFeatures, cfg: &ScoringConfig) -> (Tensor, Tensor) {
    local_scores_with(images, texts, &global_similarity(images, texts), cfg)
}

fn local_scores_with(
    images: &ImageFeatures,
    texts: &TextFeatures,
    sim_g: &Tensor,
    cfg: &ScoringConfig,
) -> (Tensor, Tensor) {
    let v = &images.regions;
    let (n, k, d) = (v.size()[0], v.size()[1], v.size()[2]);
    let (t, m) = (texts.words.size()[0], texts.words.size()[1]);
    let mask = texts.mask.to_kind(v.kind());
    // Padded word slots are zeroed so that nothing stored there can leak in.
    let w = &texts.words * mask.unsqueeze(-1);

    // Eq. 5: s_ij = cos(v_i, w_j) = v_i · w_j for unit rows, as one (N·k, T·m) product.
    let s = v
        .reshape([n * k, d])
        .matmul(&w.reshape([t * m, d]).transpose(0, 1))
        .view([n, k, t, m])
        .permute([0, 2, 1, 3])
        .contiguous();
    let relu = s.relu();
    // Eq. 6–9: logits λ·s̄ (correction off, the printed form) or λ·c·s̄ with c = sim_g − p.
    let scale = match cfg.correction {
        Correction::Logits => Some((sim_g - cfg.p).view([n, t, 1, 1]) * cfg.lambda),
        Correction::Scaled => Some((sim_g - cfg.p + 1.0).view([n, t, 1, 1]) * cfg.lambda),
        Correction::Off => None,
    };
    let logits = |s_bar: Tensor| match &scale {
        Some(c) => s_bar * c,
        None => s_bar * cfg.lambda,
    };
    let attend = |alpha: Tensor, dim: i64| {
        if cfg.filtering { filter_attention(&alpha, cfg.q, dim) } else { alpha }
    };
    // ε-guarded L2 normalisation of [s]_+ along `dim` (Eq. 6).
    let normalised = |dim: i64| {
        let sq = relu.square().sum_dim_intlist(dim, true, None::<Kind>) + cfg.epsilon;
        &relu / sq.clamp_min(NORM_FLOOR * NORM_FLOOR).sqrt()
    };

    // Image → text: s̄ over regions i, softmax over real words j (Eq. 6–11).
    let padded = mask.view([1, t, 1, m]).eq(0.0);
    let alpha = logits(normalised(2)).masked_fill(&padded, f64::NEG_INFINITY).softmax(3, None::<Kind>);
    let alpha = attend(alpha, 3);
    // Eq. 12 and R_i2t: cos(v_i, a_i) = Σ_j α''_ij s_ij / sqrt(α''_i G α''_iᵀ), G = W Wᵀ.
    let dot = (&alpha * &s).sum_dim_intlist(3, false, None::<Kind>);
    let gram_w = w.matmul(&w.transpose(1, 2));
    let g_alpha = Tensor::einsum("ntkm,tml->ntkl", &[&alpha, &gram_w], None::<i64>);
    let sq_norm = (g_alpha * &alpha).sum_dim_intlist(3, false, None::<Kind>);
    let r_i2t = (dot / safe_norm(&sq_norm)).mean_dim(2, false, None::<Kind>);

    // Text → image: s̄ over words j (padding is zero), softmax over regions i.
    let beta = attend(logits(normalised(3)).softmax(2, None::<Kind>), 2);
    // Eq. 13 and R_t2i: cos(b_j, w_j) = Σ_i β''_ij s_ij / sqrt(β''_jᵀ (V Vᵀ) β''_j).
    let dot = (&beta * &s).sum_dim_intlist(2, false, None::<Kind>);
    // |Σ_i β_ij v_i|²: through the k×k Gram matrix of each image when many words share it
    // (training, evaluation), or from the attended vectors themselves when the words are
    // fewer than the regions (a query: n·t·m·k·d instead of n·k²·d multiply-adds, 8× less
    // for a six-word query). The same value either way.
    let sq_norm = if t * m < k {
        beta.transpose(2, 3).matmul(&v.unsqueeze(1)).square().sum_dim_intlist(3, false, None::<Kind>)
    } else {
        let gram_v = v.matmul(&v.transpose(1, 2));
        let g_beta = Tensor::einsum("nil,ntlj->ntij", &[&gram_v, &beta], None::<i64>);
        (g_beta * &beta).sum_dim_intlist(2, false, None::<Kind>)
    };
    let real = mask.unsqueeze(0);
    let cos = dot / safe_norm(&sq_norm) * &real;
    let words = real.sum_dim_intlist(2, false, None::<Kind>).clamp_min(1.0);
    let r_t2i = cos.sum_dim_intlist(2, false, None::<Kind>) / words;
    (r_i2t, r_t2i)
}

/// `max(sqrt(x), NORM_FLOOR)`, clamped before the root so the gradient stays finite at 0.
fn safe_norm(sq_norm: &Tensor) -> Tensor {
    sq_norm.clamp_min(NORM_FLOOR * NORM_FLOOR).sqrt()
}

/// Attention filtering (Eq. 10–11) along `dim`: keep weights within `q` of the maximum
/// (the maximum itself always), square the kept weights and renormalise them to sum 1.
pub(crate) fn filter_attention(alpha: &Tensor, q: f64, dim: i64) -> Tensor {
    let a = alpha.detach();
    let max = a.amax(dim, true);
    // Eq. 10: H(α') = 1 where |α' − max α'| < q; the maximum is kept even for q <= 0.
    let keep = (&max - &a).lt(q).logical_or(&a.eq_tensor(&max));
    // Eq. 11 as printed: α'' = α'·α'·H / Σ α'·α'·H.
    let kept = alpha.square() * keep.to_kind(alpha.kind());
    &kept / kept.sum_dim_intlist(dim, true, None::<Kind>)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn unit(x: Tensor) -> Tensor {
        let norm = x.square().sum_dim_intlist(-1, true, None::<Kind>).sqrt();
        x / norm
    }

    fn config(correction: Correction, filtering: bool, global: bool, q: f64) -> ScoringConfig {
        ScoringConfig {
            lambda: 9.0,
            p: 0.3,
            q,
            epsilon: 1e-8,
            correction,
            filtering,
            global_component: global,
            global_weight: 1.0,
            hubness_prior: 0.0,
            hubness_sharpness: 0.0,
        }
    }

    /// Random unit features: `n` images, captions with `lens` real words padded to `m`
    /// (padding rows are zero, or random unit garbage when `garbage`).
    fn features(n: i64, lens: &[i64], m: i64, garbage: bool) -> (ImageFeatures, TextFeatures) {
        let (k, d, t, opts) = (49, 16, lens.len() as i64, (Kind::Double, Device::Cpu));
        let mask: Vec<f64> = lens.iter().flat_map(|&l| (0..m).map(move |j| f64::from(j < l))).collect();
        let mask = Tensor::from_slice(&mask).view([t, m]);
        let words = unit(Tensor::randn([t, m, d], opts));
        let words = if garbage { words } else { words * mask.unsqueeze(-1) };
        let images = ImageFeatures {
            regions: unit(Tensor::randn([n, k, d], opts)),
            global: unit(Tensor::randn([n, d], opts)),
        };
        (images, TextFeatures { words, mask, global: unit(Tensor::randn([t, d], opts)) })
    }

    fn float(images: &ImageFeatures, texts: &TextFeatures) -> (ImageFeatures, TextFeatures) {
        let f = |x: &Tensor| x.to_kind(Kind::Float);
        let im = ImageFeatures { regions: f(&images.regions), global: f(&images.global) };
        (im, TextFeatures { words: f(&texts.words), mask: f(&texts.mask), global: f(&texts.global) })
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn cos(a: &[f64], b: &[f64]) -> f64 {
        dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
    }

    /// Softmax (Eq. 6/9) then, when on, filtering (Eq. 10–11), in plain scalar math.
    fn attend(logits: &[f64], cfg: &ScoringConfig) -> Vec<f64> {
        let top = logits.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = logits.iter().map(|x| (x - top).exp()).collect();
        let a: Vec<f64> = e.iter().map(|x| x / e.iter().sum::<f64>()).collect();
        if !cfg.filtering {
            return a;
        }
        let max = a.iter().cloned().fold(f64::MIN, f64::max);
        let kept: Vec<f64> = a.iter().map(|&x| if (x - max).abs() < cfg.q { x * x } else { 0.0 }).collect();
        kept.iter().map(|x| x / kept.iter().sum::<f64>()).collect()
    }

    /// Per-pair reference of Eq. 5–14 with a_i and b_j built explicitly; `c` overrides the
    /// correction factor (None: sim_g − p for Logits, 1 for Off).
    fn reference(
        images: &ImageFeatures,
        texts: &TextFeatures,
        cfg: &ScoringConfig,
        c: Option<f64>,
    ) -> Tensor {
        let regions = Vec::<Vec<Vec<f64>>>::try_from(&images.regions).unwrap();
        let words = Vec::<Vec<Vec<f64>>>::try_from(&texts.words).unwrap();
        let mask = Vec::<Vec<f64>>::try_from(&texts.mask).unwrap();
        let vg = Vec::<Vec<f64>>::try_from(&images.global).unwrap();
        let tg = Vec::<Vec<f64>>::try_from(&texts.global).unwrap();
        let mut out = vec![];
        for (v, vg) in regions.iter().zip(&vg) {
            for ((w, mask), tg) in words.iter().zip(&mask).zip(&tg) {
                let w: Vec<&Vec<f64>> =
                    w.iter().zip(mask).filter(|&(_, &on)| on > 0.5).map(|(w, _)| w).collect();
                let (k, m, d) = (v.len(), w.len(), v[0].len());
                let sim_g = cos(vg, tg);
                let c = c.unwrap_or(match cfg.correction {
                    Correction::Logits => sim_g - cfg.p,
                    Correction::Scaled => 1.0 + sim_g - cfg.p,
                    Correction::Off => 1.0,
                });
                let s: Vec<Vec<f64>> =
                    v.iter().map(|vi| w.iter().map(|wj| cos(vi, wj).max(0.0)).collect()).collect();
                let col = |j: usize| ((0..k).map(|i| s[i][j] * s[i][j]).sum::<f64>() + cfg.epsilon).sqrt();
                let row = |i: usize| ((0..m).map(|j| s[i][j] * s[i][j]).sum::<f64>() + cfg.epsilon).sqrt();
                let mut r = if cfg.global_component { cfg.global_weight * sim_g } else { 0.0 };
                for i in 0..k {
                    let alpha =
                        attend(&(0..m).map(|j| cfg.lambda * c * s[i][j] / col(j)).collect::<Vec<_>>(), cfg);
                    let a: Vec<f64> = (0..d).map(|x| (0..m).map(|j| alpha[j] * w[j][x]).sum()).collect();
                    r += cos(&v[i], &a) / k as f64;
                }
                for j in 0..m {
                    let beta =
                        attend(&(0..k).map(|i| cfg.lambda * c * s[i][j] / row(i)).collect::<Vec<_>>(), cfg);
                    let b: Vec<f64> = (0..d).map(|x| (0..k).map(|i| beta[i] * v[i][x]).sum()).collect();
                    r += cos(&b, w[j]) / m as f64;
                }
                out.push(r);
            }
        }
        Tensor::from_slice(&out).view([images.len(), texts.len()])
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
    }

    #[test]
    fn score_matrix_matches_per_pair_reference() {
        tch::manual_seed(1);
        // One caption (padded) against many images, a B × B batch of mixed lengths, and
        // enough words (t·m ≥ k) that the Gram form of the image-side norm is taken.
        for (n, lens, m) in
            [(7, vec![4], 6), (5, vec![5, 2, 4, 1, 3], 5), (3, vec![5, 2, 4, 1, 3, 6, 7, 2, 5, 3], 7)]
        {
            let (images, texts) = features(n, &lens, m, false);
            let (im32, tx32) = float(&images, &texts);
            for correction in [Correction::Logits, Correction::Scaled, Correction::Off] {
                for (filtering, q) in [(false, 0.1), (true, 0.1), (true, 0.01)] {
                    for global in [true, false] {
                        let cfg = config(correction, filtering, global, q);
                        let want = reference(&images, &texts, &cfg, None);
                        let got = score_matrix(&images, &texts, &cfg);
                        assert_eq!(got.size(), [n, lens.len() as i64]);
                        assert!(max_diff(&got, &want) < 1e-5, "{cfg:?}: {got} vs {want}");
                        let got32 = score_matrix(&im32, &tx32, &cfg);
                        assert_eq!(got32.kind(), Kind::Float);
                        assert!(max_diff(&got32, &want) < 1e-4, "{cfg:?} float32");
                        let (r1, r2) = local_scores(&images, &texts, &cfg);
                        let sum = r1 + r2 + global_similarity(&images, &texts) * f64::from(global);
                        assert!(max_diff(&sum, &got) < 1e-12);
                        let chunked = score_matrix_chunked(&images, &texts, &cfg, 2);
                        assert!(max_diff(&chunked, &got) < 1e-12);
                        if q < 0.1 {
                            // This q drops weights: differs from squaring alone (q ≥ 1).
                            let square_only = ScoringConfig { q: 1.0, ..cfg.clone() };
                            assert!(max_diff(&score_matrix(&images, &texts, &square_only), &got) > 1e-6);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn global_weight_scales_only_the_global_term() {
        tch::manual_seed(4);
        let (images, texts) = features(5, &[3, 4], 4, false);
        let base = config(Correction::Logits, true, true, 0.1);
        let weighted = ScoringConfig { global_weight: 2.5, ..base.clone() };
        let sim_g = global_similarity(&images, &texts);
        let want = score_matrix(&images, &texts, &base) + &sim_g * 1.5;
        assert!(max_diff(&score_matrix(&images, &texts, &weighted), &want) < 1e-12);
        assert!(max_diff(&reference(&images, &texts, &weighted, None), &want) < 1e-10);
    }

    #[test]
    fn correction_off_is_uncorrected_softmax() {
        tch::manual_seed(2);
        let (images, texts) = features(4, &[3, 5, 2], 5, false);
        let off = config(Correction::Off, true, true, 0.1);
        let want = reference(&images, &texts, &off, Some(1.0));
        assert!(max_diff(&score_matrix(&images, &texts, &off), &want) < 1e-10);
        let logits = config(Correction::Logits, true, true, 0.1);
        assert!(max_diff(&score_matrix(&images, &texts, &logits), &want) > 1e-3);
        // With p = sim_g − 1 the factor c is 1, so Logits reproduces Off for that pair.
        let (one_im, one_tx) = (
            images.narrow(0, 1),
            TextFeatures {
                words: texts.words.narrow(0, 1, 1),
                mask: texts.mask.narrow(0, 1, 1),
                global: texts.global.narrow(0, 1, 1),
            },
        );
        let sim_g = global_similarity(&one_im, &one_tx).double_value(&[0, 0]);
        let unit_c = ScoringConfig { p: sim_g - 1.0, ..logits };
        let diff = max_diff(&score_matrix(&one_im, &one_tx, &unit_c), &score_matrix(&one_im, &one_tx, &off));
        assert!(diff < 1e-12, "{diff}");
    }

    #[test]
    fn filtering_keeps_row_maximum() {
        tch::manual_seed(3);
        let alpha = (Tensor::randn([6, 8], (Kind::Double, Device::Cpu)) * 3.0).softmax(1, None::<Kind>);
        for (q, dim) in [(0.1, 1), (0.02, 1), (1e-9, 1), (0.05, 0), (0.0, 1)] {
            let a = if dim == 0 { alpha.transpose(0, 1) } else { alpha.shallow_clone() };
            let f = filter_attention(&a, q, dim);
            let top = a.argmax(dim, true);
            assert!(f.gather(dim, &top, false).min().double_value(&[]) > 0.0, "q={q}");
            let sums = f.sum_dim_intlist(dim, false, None::<Kind>);
            assert!(max_diff(&sums, &sums.ones_like()) < 1e-12, "q={q}");
        }
        // A tiny q keeps exactly the maximum: a one-hot row.
        let f = filter_attention(&alpha, 1e-9, 1);
        let one_hot = alpha.zeros_like().scatter_value(1, &alpha.argmax(1, true), 1.0);
        assert!(max_diff(&f, &one_hot) < 1e-12);
        // q = 0.5 keeps 0.7 and 0.25 (squared, renormalised) and drops 0.05.
        let peaked = Tensor::from_slice(&[0.7, 0.25, 0.05]).view([1, 3]);
        let want = Tensor::from_slice(&[0.49 / 0.5525, 0.0625 / 0.5525, 0.0]).view([1, 3]);
        assert!(max_diff(&filter_attention(&peaked, 0.5, 1), &want) < 1e-12);
    }

    #[test]
    fn filtering_with_large_q_only_squares() {
        tch::manual_seed(4);
        let alpha = Tensor::randn([5, 7], (Kind::Float, Device::Cpu)).softmax(1, None::<Kind>);
        let squared = alpha.square() / alpha.square().sum_dim_intlist(1, true, None::<Kind>);
        for q in [1.0, 5.0] {
            let f = filter_attention(&alpha, q, 1);
            assert!(max_diff(&f, &squared) < 1e-6);
            assert!(max_diff(&f, &alpha) > 1e-3);
        }
    }

    #[test]
    fn padding_does_not_change_scores() {
        tch::manual_seed(5);
        for garbage in [false, true] {
            let (images, texts) = features(6, &[2, 6, 3], 8, garbage);
            let (images, texts) = float(&images, &texts);
            let cfg = config(Correction::Logits, true, true, 0.1);
            let batch = score_matrix(&images, &texts, &cfg);
            for (c, len) in [(0, 2), (1, 6), (2, 3)] {
                let alone = TextFeatures {
                    words: texts.words.narrow(0, c, 1).narrow(1, 0, len),
                    mask: texts.mask.narrow(0, c, 1).narrow(1, 0, len),
                    global: texts.global.narrow(0, c, 1),
                };
                let single = score_matrix(&images, &alone, &cfg);
                assert!(max_diff(&single, &batch.narrow(1, c, 1)) < 1e-6, "caption {c}");
            }
        }
    }

    #[test]
    fn gradients_are_finite_and_nonzero() {
        tch::manual_seed(6);
        let (images, texts) = features(4, &[3, 1, 4, 2], 4, false);
        let (images, texts) = float(&images, &texts);
        let leaf = |x: &Tensor| x.detach().set_requires_grad(true);
        let images = ImageFeatures { regions: leaf(&images.regions), global: leaf(&images.global) };
        let texts = TextFeatures {
            words: leaf(&texts.words),
            mask: texts.mask.shallow_clone(),
            global: leaf(&texts.global),
        };
        score_matrix(&images, &texts, &config(Correction::Logits, true, true, 0.1))
            .sum(None::<Kind>)
            .backward();
        for x in [&images.regions, &images.global, &texts.words, &texts.global] {
            let g = x.grad();
            assert!(g.defined());
            assert_eq!(g.isfinite().all().int64_value(&[]), 1);
            assert!(g.abs().sum(None::<Kind>).double_value(&[]) > 0.0);
        }
    }
}
