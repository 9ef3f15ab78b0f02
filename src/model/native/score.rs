//! The full score S(I, T) (Sec. 3.2, Eq. 5–14, plus `w · sim_g` when the global component is on)
//! of one encoded query against one stored chip, in plain Rust: the same computation as
//! `model::scoring::score_matrix` for a single caption, checked against it in `native::tests`.
//!
//! Per chip it costs two k×m×D products (the similarities s_ij and the attended region
//! vectors b_j), run in a scratch buffer that stays in cache.

use super::linalg::{dot, row_dots, softmax, weighted_row_sums};
use super::text::EncodedText;
use crate::model::config::{Correction, ScoringConfig};

/// Smallest norm divided by, as in `model::scoring`.
const NORM_FLOOR: f32 = 1e-12;

/// A query ready for scoring: its words, global vector and word Gram matrix G = W Wᵀ.
#[derive(Debug, Clone)]
pub struct ScoringQuery {
    pub text: EncodedText,
    gram: Vec<f32>,
    dim: usize,
}

impl ScoringQuery {
    pub fn new(text: EncodedText) -> ScoringQuery {
        let (m, d) = (text.m, text.global.len());
        let mut gram = vec![0f32; m * m];
        row_dots(&text.words, &text.words, &mut gram, d);
        ScoringQuery { text, gram, dim: d }
    }

    /// Feature width D.
    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// Per-thread buffers for [`score`], reused from chip to chip.
#[derive(Debug, Default)]
pub struct Scratch {
    s: Vec<f32>,
    bar: Vec<f32>,
    att: Vec<f32>,
    attended: Vec<f32>,
    col: Vec<f32>,
}

fn safe_norm(sq: f32) -> f32 {
    sq.max(NORM_FLOOR * NORM_FLOOR).sqrt()
}

/// Attention filtering (Eq. 10–11) of one attention distribution: keep weights within `q`
/// of the maximum (the maximum itself always), square and renormalise.
fn filter(alpha: &mut [f32], q: f32) {
    let max = alpha.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for a in alpha.iter_mut() {
        *a = if max - *a < q || *a == max { *a * *a } else { 0.0 };
        sum += *a;
    }
    alpha.iter_mut().for_each(|a| *a /= sum);
}

/// S(I, T) for one chip: `regions` (k × D, unit rows), `sim_g` = cos(v_g, t_g).
pub fn score(
    cfg: &ScoringConfig,
    query: &ScoringQuery,
    regions: &[f32],
    sim_g: f32,
    scratch: &mut Scratch,
) -> f32 {
    let (m, d) = (query.text.m, query.dim);
    let k = regions.len() / d;
    let w = &query.text.words;
    let Scratch { s, bar, att, attended, col } = scratch;
    s.resize(k * m, 0.0);
    bar.resize(k * m, 0.0);
    att.resize(k * m, 0.0);
    attended.resize(m * d, 0.0);
    col.resize(k.max(m), 0.0);
    // Eq. 5: s_ij = v_i · w_j, (k × m).
    row_dots(regions, w, s, d);
    let eps = cfg.epsilon as f32;
    // Eq. 6–9: logits λ·c·s̄ with c = sim_g − p (correction on), or λ·s̄.
    let scale = match cfg.correction {
        Correction::Logits => cfg.lambda as f32 * (sim_g - cfg.p as f32),
        Correction::Scaled => cfg.lambda as f32 * (1.0 + sim_g - cfg.p as f32),
        Correction::Off => cfg.lambda as f32,
    };
    let q = cfg.q as f32;

    // Image → text: s̄ normalised over regions i (per word), softmax over words j per region.
    for j in 0..m {
        let sq: f32 = (0..k).map(|i| s[i * m + j].max(0.0).powi(2)).sum::<f32>() + eps;
        let norm = safe_norm(sq);
        for i in 0..k {
            bar[i * m + j] = s[i * m + j].max(0.0) / norm;
        }
    }
    let mut r_i2t = 0.0;
    let mut ga = vec![0f32; m];
    for i in 0..k {
        let alpha = &mut att[i * m..(i + 1) * m];
        alpha.iter_mut().zip(&bar[i * m..(i + 1) * m]).for_each(|(a, b)| *a = b * scale);
        softmax(alpha);
        if cfg.filtering {
            filter(alpha, q);
        }
        // Eq. 12, R_i2t: cos(v_i, a_i) = Σ_j α_ij s_ij / sqrt(α_i G α_iᵀ).
        let dot_i = dot(alpha, &s[i * m..(i + 1) * m]);
        for (l, g) in ga.iter_mut().enumerate() {
            *g = (0..m).map(|j| alpha[j] * query.gram[j * m + l]).sum();
        }
        r_i2t += dot_i / safe_norm(dot(&ga, alpha));
    }
    r_i2t /= k as f32;

    // Text → image: s̄ normalised over words j (per region), softmax over regions i per word.
    for i in 0..k {
        let row = &s[i * m..(i + 1) * m];
        let sq: f32 = row.iter().map(|x| x.max(0.0).powi(2)).sum::<f32>() + eps;
        let norm = safe_norm(sq);
        for j in 0..m {
            bar[i * m + j] = row[j].max(0.0) / norm;
        }
    }
    // β stored transposed, (m × k), so that b = βᵀ-rows · V is one product.
    let mut dots = vec![0f32; m];
    for j in 0..m {
        let beta = &mut col[..k];
        for i in 0..k {
            beta[i] = bar[i * m + j] * scale;
        }
        softmax(beta);
        if cfg.filtering {
            filter(beta, q);
        }
        dots[j] = (0..k).map(|i| beta[i] * s[i * m + j]).sum();
        att[j * k..(j + 1) * k].copy_from_slice(beta);
    }
    // Eq. 13: b_j = Σ_i β_ij v_i, (m × D); R_t2i = mean_j cos(b_j, w_j).
    weighted_row_sums(&att[..m * k], regions, attended, d);
    let mut r_t2i = 0.0;
    for j in 0..m {
        let b = &attended[j * d..(j + 1) * d];
        r_t2i += dots[j] / safe_norm(dot(b, b));
    }
    r_t2i /= m.max(1) as f32;
    let local = r_i2t + r_t2i;
    if cfg.global_component { local + cfg.global_weight as f32 * sim_g } else { local }
}
