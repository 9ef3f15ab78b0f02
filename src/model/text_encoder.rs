//! Text encoder (Sec. 3.1.2, Eq. 3–4): word embeddings → bidirectional GRU → residual
//! multi-head GAT over the caption's words → unit word features h_j and global vector t_g.
//!
//! Every output is independent of padding: the backward GRU runs on each caption reversed
//! within its own length, and the GAT masks padded neighbours, so a caption scores the same
//! whether it is encoded alone or in a batch with longer ones.

use tch::nn::{self, Module, RNN};
use tch::{Kind, Tensor};

use crate::model::config::Config;
use crate::model::features::{TextFeatures, l2_normalize};
use crate::model::vocab::{Encoded, PAD_ID};

/// Logit given to padded neighbours before the GAT softmax: exp underflows to exactly 0,
/// while a caption without any real word still gets a finite (uniform) softmax.
const MASKED_LOGIT: f64 = -1e9;

/// Graph attention layer (Veličković et al., 2018) over the fully connected graph of a
/// caption's real words: heads × (D / heads) outputs, concatenated, then ELU.
#[derive(Debug)]
struct Gat {
    /// Shared projection W (D → D, no bias), split into heads.
    proj: nn::Linear,
    /// Per-head attention vector applied to the attending word j, (heads, D / heads).
    att_src: Tensor,
    /// Per-head attention vector applied to the neighbour k, (heads, D / heads).
    att_dst: Tensor,
    heads: i64,
    slope: f64,
}

impl Gat {
    fn new(p: &nn::Path, dim: i64, heads: i64, slope: f64) -> Gat {
        let no_bias = nn::LinearConfig { bias: false, ..Default::default() };
        let head_dim = dim / heads;
        let init =
            nn::Init::Uniform { lo: -(1.0 / head_dim as f64).sqrt(), up: (1.0 / head_dim as f64).sqrt() };
        Gat {
            proj: nn::linear(p / "proj", dim, dim, no_bias),
            att_src: p.var("att_src", &[heads, head_dim], init),
            att_dst: p.var("att_dst", &[heads, head_dim], init),
            heads,
            slope,
        }
    }

    /// `x` (T, m, D), `mask` (T, m) float → GAT(x) (T, m, D).
    fn forward(&self, x: &Tensor, mask: &Tensor) -> Tensor {
        let (t, m, d) = x.size3().unwrap_or_default();
        let wh = self.proj.forward(x).view([t, m, self.heads, d / self.heads]);
        // e_jk = LeakyReLU(a_src·Wh_j + a_dst·Wh_k), per head: (T, m_j, m_k, heads).
        let src = (&wh * &self.att_src).sum_dim_intlist(-1, false, None).unsqueeze(2);
        let dst = (&wh * &self.att_dst).sum_dim_intlist(-1, false, None).unsqueeze(1);
        let e = src + dst;
        let e = e.clamp_min(0.0) + e.clamp_max(0.0) * self.slope;
        // Only real words are neighbours; softmax over k.
        let padded_k = mask.eq(0.0).view([t, 1, m, 1]);
        let alpha = e.masked_fill(&padded_k, MASKED_LOGIT).softmax(2, Kind::Float);
        // out_j = Σ_k α_jk Wh_k, heads concatenated, ELU.
        Tensor::einsum("bjkh,bkhd->bjhd", &[alpha, wh], None::<i64>).reshape([t, m, d]).elu()
    }
}

/// The ACF text encoder. Parameters live under the path given to [`TextEncoder::new`]:
/// `embed`, `gru_fwd`, `gru_bwd` and (when `text.use_gat`) `gat`.
#[derive(Debug)]
pub struct TextEncoder {
    embed: nn::Embedding,
    gru_fwd: nn::GRU,
    gru_bwd: nn::GRU,
    /// `None` for ablation M1 (`text.use_gat = false`): BiGRU features only.
    gat: Option<Gat>,
}

impl TextEncoder {
    /// Creates the encoder for a vocabulary of `vocab_size` entries (id 0 = `<pad>`), with
    /// sizes from `cfg.text` and `cfg.embed_dim`.
    pub fn new(p: &nn::Path, cfg: &Config, vocab_size: i64) -> TextEncoder {
        let tc = &cfg.text;
        let dim = cfg.embed_dim;
        let embed_cfg = nn::EmbeddingConfig { padding_idx: 0, ..Default::default() };
        // PyTorch's GRU initialisation: U(−1/√D, 1/√D) for all weights and biases.
        let bound = 1.0 / (dim as f64).sqrt();
        let init = nn::Init::Uniform { lo: -bound, up: bound };
        let gru_cfg = nn::RNNConfig {
            batch_first: true,
            w_ih_init: init,
            w_hh_init: init,
            b_ih_init: Some(init),
            b_hh_init: Some(init),
            ..Default::default()
        };
        TextEncoder {
            embed: nn::embedding(p / "embed", vocab_size, tc.word_dim, embed_cfg),
            gru_fwd: nn::gru(p / "gru_fwd", tc.word_dim, dim, gru_cfg),
            gru_bwd: nn::gru(p / "gru_bwd", tc.word_dim, dim, gru_cfg),
            gat: tc.use_gat.then(|| Gat::new(&(p / "gat"), dim, tc.gat_heads, tc.gat_leaky_slope)),
        }
    }

    /// Encodes padded captions: `ids` (T, m) int64 and `lengths` (T) int64, as made by
    /// `Vocab::batch`. Returns unit word features (zero at padding), the mask and t_g, on
    /// the VarStore's device. `train` is accepted for the `forward_t` convention; the encoder
    /// has no dropout or batch statistics, so it changes nothing.
    pub fn forward_t(&self, ids: &Tensor, lengths: &Tensor, _train: bool) -> TextFeatures {
        let device = self.embed.ws.device();
        let ids = ids.to_device(device);
        let (t, m) = ids.size2().unwrap_or_default();
        let lengths = lengths.to_device(device).to_kind(Kind::Int64).clamp(0, m).view([t, 1]);
        let pos = Tensor::arange(m, (Kind::Int64, device)).view([1, m]);
        let real = pos.lt_tensor(&lengths);
        let mask = real.to_kind(Kind::Float);

        let x = self.embed.forward(&ids);
        // Forward direction: right padding only follows the real words, so they are unaffected.
        let (h_fwd, _) = self.gru_fwd.seq(&x);
        // Backward direction: reverse each caption within its length (padding stays at the
        // end), run, and undo the reversal, so it starts at the last real word.
        let rev = (&lengths - 1 - &pos).where_self(&real, &pos.expand([t, m], false));
        let rev_x = rev.unsqueeze(-1).expand([t, m, x.size()[2]], false);
        let (h_bwd, _) = self.gru_bwd.seq(&x.gather(1, &rev_x, false));
        let rev_h = rev.unsqueeze(-1).expand([t, m, h_bwd.size()[2]], false);
        let h_bwd = h_bwd.gather(1, &rev_h, false);
        // Eq. 3: e'_j = (h_fwd_j + h_bwd_j) / 2.
        let e = (h_fwd + h_bwd) / 2.0;

        // Residual GAT, h_j = e'_j + GAT(e')_j, then unit rows; zero at padding.
        let h = match &self.gat {
            Some(gat) => &e + gat.forward(&e, &mask),
            None => e,
        };
        let words = l2_normalize(&h, -1) * mask.unsqueeze(-1);
        // Eq. 4: t_g = mean of h_j over the real words, L2-normalised.
        let count = mask.sum_dim_intlist(1, true, None).clamp_min(1.0);
        let global = l2_normalize(&(words.sum_dim_intlist(1, false, None) / count), -1);
        TextFeatures { words, mask, global }
    }
}

/// Pads encoded captions into ids `(T, m)` int64 (padding [`PAD_ID`]) and lengths `(T)`
/// int64, m being the longest caption (at least 1, so the tensors always have a column).
/// Here, not in `vocab`, so that the vocabulary does not depend on libtorch.
pub fn batch(encoded: &[Encoded]) -> (Tensor, Tensor) {
    batch_ids(encoded.iter().map(|e| e.ids.as_slice()))
}

/// [`batch`] for token-id lists that are already known (training and evaluation).
pub fn batch_ids<'a>(captions: impl ExactSizeIterator<Item = &'a [i64]> + Clone) -> (Tensor, Tensor) {
    let t = captions.len();
    let m = captions.clone().map(<[i64]>::len).max().unwrap_or(0).max(1);
    let mut flat = Vec::with_capacity(t * m);
    let mut lengths = Vec::with_capacity(t);
    for ids in captions {
        flat.extend_from_slice(ids);
        flat.resize(flat.len() + m - ids.len(), PAD_ID);
        lengths.push(ids.len() as i64);
    }
    let ids = Tensor::from_slice(&flat).view([t as i64, m as i64]);
    (ids, Tensor::from_slice(&lengths))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, nn::OptimizerConfig};

    fn small_cfg(use_gat: bool) -> Config {
        let mut cfg = Config::pvig_nano();
        cfg.embed_dim = 64;
        cfg.text.word_dim = 32;
        cfg.text.gat_heads = 8;
        cfg.text.use_gat = use_gat;
        cfg
    }

    fn encoder(cfg: &Config, vocab: i64) -> (nn::VarStore, TextEncoder) {
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let enc = TextEncoder::new(&vs.root(), cfg, vocab);
        (vs, enc)
    }

    fn batch(rows: &[&[i64]]) -> (Tensor, Tensor) {
        let m = rows.iter().map(|r| r.len()).max().unwrap();
        let flat: Vec<i64> =
            rows.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(0, m - r.len()))).collect();
        let lengths: Vec<i64> = rows.iter().map(|r| r.len() as i64).collect();
        (Tensor::from_slice(&flat).view([rows.len() as i64, m as i64]), Tensor::from_slice(&lengths))
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    fn check_unit_rows(f: &TextFeatures, lengths: &[i64]) {
        let norms = f.words.norm_scalaropt_dim(2, [-1], false);
        for (i, &len) in lengths.iter().enumerate() {
            for j in 0..norms.size()[1] {
                let n = norms.double_value(&[i as i64, j]);
                let want = if j < len { 1.0 } else { 0.0 };
                assert!((n - want).abs() < 1e-5, "row {i} pos {j}: norm {n}");
                assert_eq!(f.mask.double_value(&[i as i64, j]), want);
            }
        }
        let g = f.global.norm_scalaropt_dim(2, [-1], false);
        assert!(max_diff(&g, &Tensor::ones_like(&g)) < 1e-5);
    }

    #[test]
    fn batch_pads_with_zero() {
        let v = crate::model::Vocab::build(["a b c"], 1);
        let enc = [v.encode("a b c", 8), v.encode("c", 8)];
        let (ids, lengths) = super::batch(&enc);
        assert_eq!(ids.size(), [2, 3]);
        assert_eq!(Vec::<i64>::try_from(ids.view([-1])).unwrap(), [2, 3, 4, 4, 0, 0]);
        assert_eq!(Vec::<i64>::try_from(lengths).unwrap(), [3, 1]);
    }

    #[test]
    fn shapes_and_unit_norms() {
        let cfg = small_cfg(true);
        let (_vs, enc) = encoder(&cfg, 50);
        let (ids, lengths) = batch(&[&[2, 3, 4, 5], &[6, 7], &[8]]);
        let f = enc.forward_t(&ids, &lengths, false);
        assert_eq!(f.words.size(), [3, 4, 64]);
        assert_eq!(f.mask.size(), [3, 4]);
        assert_eq!(f.global.size(), [3, 64]);
        check_unit_rows(&f, &[4, 2, 1]);
    }

    #[test]
    fn real_size_shapes() {
        let cfg = Config::pvig_ti();
        let (vs, enc) = encoder(&cfg, 3000);
        let (ids, lengths) = batch(&[&[2, 3, 4, 5, 6], &[7, 8]]);
        let f = enc.forward_t(&ids, &lengths, true);
        assert_eq!(f.words.size(), [2, 5, 512]);
        assert_eq!(f.global.size(), [2, 512]);
        check_unit_rows(&f, &[5, 2]);
        let params: i64 = vs.trainable_variables().iter().map(Tensor::numel).map(|n| n as i64).sum();
        assert_eq!(params, 3000 * 300 + 2 * (3 * 512 * (300 + 512) + 2 * 3 * 512) + 512 * 512 + 2 * 512);
    }

    #[test]
    fn eval_is_deterministic_and_length_one_works() {
        let (_vs, enc) = encoder(&small_cfg(true), 50);
        let (ids, lengths) = batch(&[&[9, 4, 4, 11], &[3]]);
        let a = enc.forward_t(&ids, &lengths, false);
        let b = enc.forward_t(&ids, &lengths, false);
        assert_eq!(max_diff(&a.words, &b.words), 0.0);
        assert_eq!(max_diff(&a.global, &b.global), 0.0);
        let (one, one_len) = batch(&[&[3]]);
        let f = enc.forward_t(&one, &one_len, false);
        check_unit_rows(&f, &[1]);
        // A one-word caption's global vector is its word feature.
        assert!(max_diff(&f.global, &f.words.select(1, 0)) < 1e-6);
    }

    #[test]
    fn padding_invariance() {
        for use_gat in [true, false] {
            let (_vs, enc) = encoder(&small_cfg(use_gat), 50);
            let caption: &[i64] = &[5, 9, 2, 17];
            let (ids, lengths) = batch(&[caption]);
            let alone = enc.forward_t(&ids, &lengths, false);
            let (ids, lengths) = batch(&[&[3, 1, 4, 1, 5, 9, 2, 6, 8], caption, &[7]]);
            let padded = enc.forward_t(&ids, &lengths, false);
            let words = padded.words.get(1).narrow(0, 0, 4);
            assert!(max_diff(&alone.words.get(0), &words) < 1e-5, "use_gat={use_gat}");
            assert!(max_diff(&alone.global.get(0), &padded.global.get(1)) < 1e-5, "use_gat={use_gat}");
            assert_eq!(padded.words.get(1).narrow(0, 4, 5).abs().max().double_value(&[]), 0.0);
        }
    }

    #[test]
    fn one_adam_step_updates_every_variable() {
        for use_gat in [true, false] {
            let (vs, enc) = encoder(&small_cfg(use_gat), 20);
            let before: Vec<(String, Tensor)> =
                vs.variables().into_iter().map(|(n, t)| (n, t.copy())).collect();
            let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
            let (ids, lengths) = batch(&[&[2, 3, 4, 5, 6], &[7, 8, 9], &[10, 11]]);
            let f = enc.forward_t(&ids, &lengths, true);
            // A loss that depends on every position of every output.
            let target = Tensor::randn([3, 5, 64], (Kind::Float, Device::Cpu));
            let loss = (&f.words * target).sum(Kind::Float) + f.global.select(1, 0).sum(Kind::Float);
            opt.backward_step(&loss);
            let after = vs.variables();
            let expected = if use_gat { 12 } else { 9 };
            assert_eq!(before.len(), expected, "{:?}", after.keys());
            for (name, old) in before {
                assert!(max_diff(&old, &after[&name]) > 0.0, "{name} unchanged (use_gat={use_gat})");
            }
        }
    }
}
