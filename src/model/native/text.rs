//! The ACF text encoder (Sec. 3.1.2, Eq. 3–4) for one caption at a time, in plain Rust:
//! word embeddings → bidirectional GRU → residual multi-head GAT → unit word features and
//! the global vector. The same computation as `model::text_encoder` (libtorch), checked
//! against it in `native::tests`.

use super::linalg::{dot, normalize, row_dots, sigmoid, softmax};
use super::weights::{Array, Weights};
use crate::error::Result;
use crate::model::config::Config;

/// One GRU direction, PyTorch's layout: gates (r, z, n) stacked in the rows of the weights.
#[derive(Debug, Clone)]
struct Gru {
    w_ih: Array,
    w_hh: Array,
    b_ih: Array,
    b_hh: Array,
    hidden: usize,
}

impl Gru {
    fn resident(&self) -> Gru {
        Gru {
            w_ih: self.w_ih.resident(),
            w_hh: self.w_hh.resident(),
            b_ih: self.b_ih.resident(),
            b_hh: self.b_hh.resident(),
            hidden: self.hidden,
        }
    }

    fn load(w: &Weights, prefix: &str, input: usize, hidden: usize) -> Result<Gru> {
        Ok(Gru {
            w_ih: w.get(&format!("{prefix}.weight_ih_l0"), &[3 * hidden, input], "")?,
            w_hh: w.get(&format!("{prefix}.weight_hh_l0"), &[3 * hidden, hidden], "")?,
            b_ih: w.get(&format!("{prefix}.bias_ih_l0"), &[3 * hidden], "")?,
            b_hh: w.get(&format!("{prefix}.bias_hh_l0"), &[3 * hidden], "")?,
            hidden,
        })
    }

    /// Runs over the rows of `x` (m × input) in `order`; returns the hidden state after each
    /// position, stored at that position (m × hidden).
    fn run(&self, x: &[f32], m: usize, order: impl Iterator<Item = usize>) -> Vec<f32> {
        let (h_dim, input) = (self.hidden, self.w_ih.shape[1]);
        let mut gi = vec![0f32; m * 3 * h_dim];
        row_dots(x, self.w_ih.data(), &mut gi, input);
        let mut out = vec![0f32; m * h_dim];
        let mut h = vec![0f32; h_dim];
        let mut gh = vec![0f32; 3 * h_dim];
        for j in order {
            row_dots(&h, self.w_hh.data(), &mut gh, h_dim);
            let gi = &gi[j * 3 * h_dim..(j + 1) * 3 * h_dim];
            let (bi, bh) = (&self.b_ih.data(), &self.b_hh.data());
            for u in 0..h_dim {
                let r = sigmoid(gi[u] + bi[u] + gh[u] + bh[u]);
                let z = sigmoid(gi[h_dim + u] + bi[h_dim + u] + gh[h_dim + u] + bh[h_dim + u]);
                let n = (gi[2 * h_dim + u] + bi[2 * h_dim + u] + r * (gh[2 * h_dim + u] + bh[2 * h_dim + u]))
                    .tanh();
                h[u] = (1.0 - z) * n + z * h[u];
            }
            out[j * h_dim..(j + 1) * h_dim].copy_from_slice(&h);
        }
        out
    }
}

/// Graph attention over the fully connected graph of the caption's words (all real).
#[derive(Debug, Clone)]
struct Gat {
    proj: Array,
    att_src: Array,
    att_dst: Array,
    heads: usize,
    slope: f32,
}

impl Gat {
    /// `x` (m × D) → ELU(concatenated heads of Σ_k α_jk W x_k) (m × D).
    fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let d = self.proj.shape[0];
        let hd = d / self.heads;
        let mut wh = vec![0f32; m * d];
        row_dots(x, self.proj.data(), &mut wh, d);
        let score = |att: &Array, j: usize, h: usize| {
            dot(&wh[j * d + h * hd..j * d + (h + 1) * hd], &att.data()[h * hd..(h + 1) * hd])
        };
        let mut out = vec![0f32; m * d];
        let mut alpha = vec![0f32; m];
        for h in 0..self.heads {
            let dst: Vec<f32> = (0..m).map(|k| score(&self.att_dst, k, h)).collect();
            for j in 0..m {
                let src = score(&self.att_src, j, h);
                for (a, &dk) in alpha.iter_mut().zip(&dst) {
                    let e = src + dk;
                    *a = if e > 0.0 { e } else { e * self.slope };
                }
                softmax(&mut alpha);
                let row = &mut out[j * d + h * hd..j * d + (h + 1) * hd];
                for (k, &a) in alpha.iter().enumerate() {
                    for (o, &v) in row.iter_mut().zip(&wh[k * d + h * hd..k * d + (h + 1) * hd]) {
                        *o += a * v;
                    }
                }
            }
        }
        out.iter_mut().for_each(|v| {
            if *v <= 0.0 {
                *v = v.exp_m1();
            }
        });
        out
    }
}

/// The encoder's weights (`text.*` of `model.safetensors`).
#[derive(Debug, Clone)]
pub struct TextEncoder {
    embed: Array,
    fwd: Gru,
    bwd: Gru,
    gat: Option<Gat>,
    dim: usize,
}

/// A caption encoded: `m` unit word features (m × D, row-major) and the unit global vector.
#[derive(Debug, Clone)]
pub struct EncodedText {
    pub words: Vec<f32>,
    pub m: usize,
    pub global: Vec<f32>,
}

impl TextEncoder {
    /// The encoder with every array copied out of the mapped weights file.
    pub fn resident(&self) -> TextEncoder {
        TextEncoder {
            embed: self.embed.resident(),
            fwd: self.fwd.resident(),
            bwd: self.bwd.resident(),
            gat: self.gat.as_ref().map(|g| Gat {
                proj: g.proj.resident(),
                att_src: g.att_src.resident(),
                att_dst: g.att_dst.resident(),
                heads: g.heads,
                slope: g.slope,
            }),
            dim: self.dim,
        }
    }

    /// Reads the encoder for a vocabulary of `vocab_size` words with sizes from `cfg`.
    pub fn load(w: &Weights, cfg: &Config, vocab_size: usize) -> Result<TextEncoder> {
        let (dim, word_dim) = (cfg.embed_dim as usize, cfg.text.word_dim as usize);
        let hint = format!(" (vocab.json has {vocab_size} words)");
        let gat = if cfg.text.use_gat {
            let heads = cfg.text.gat_heads as usize;
            Some(Gat {
                proj: w.get("text.gat.proj.weight", &[dim, dim], "")?,
                att_src: w.get("text.gat.att_src", &[heads, dim / heads], "")?,
                att_dst: w.get("text.gat.att_dst", &[heads, dim / heads], "")?,
                heads,
                slope: cfg.text.gat_leaky_slope as f32,
            })
        } else {
            None
        };
        Ok(TextEncoder {
            embed: w.get("text.embed.weight", &[vocab_size, word_dim], &hint)?,
            fwd: Gru::load(w, "text.gru_fwd", word_dim, dim)?,
            bwd: Gru::load(w, "text.gru_bwd", word_dim, dim)?,
            gat,
            dim,
        })
    }

    /// Encodes one caption given as vocabulary ids (every id below the vocabulary size).
    pub fn encode(&self, ids: &[i64]) -> EncodedText {
        let (m, d, word_dim) = (ids.len(), self.dim, self.embed.shape[1]);
        let mut x = Vec::with_capacity(m * word_dim);
        for &id in ids {
            let row = (id.max(0) as usize).min(self.embed.shape[0] - 1);
            x.extend_from_slice(&self.embed.data()[row * word_dim..(row + 1) * word_dim]);
        }
        let h_fwd = self.fwd.run(&x, m, 0..m);
        let h_bwd = self.bwd.run(&x, m, (0..m).rev());
        // Eq. 3: e'_j = (h_fwd_j + h_bwd_j) / 2, then the residual GAT.
        let mut h: Vec<f32> = h_fwd.iter().zip(&h_bwd).map(|(a, b)| (a + b) / 2.0).collect();
        if let Some(gat) = &self.gat {
            let g = gat.forward(&h, m);
            h.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
        }
        h.chunks_exact_mut(d).for_each(normalize);
        // Eq. 4: t_g = mean of the unit word features, L2-normalised.
        let mut global = vec![0f32; d];
        for row in h.chunks_exact(d) {
            global.iter_mut().zip(row).for_each(|(g, v)| *g += v);
        }
        global.iter_mut().for_each(|g| *g /= m.max(1) as f32);
        normalize(&mut global);
        EncodedText { words: h, m, global }
    }
}
