//! Encoder outputs: the tensors that scoring, the loss and the index consume.

use tch::Tensor;

/// Image side of a batch: `regions` (N, k, D) with unit-norm rows, `global` (N, D) unit norm.
#[derive(Debug)]
pub struct ImageFeatures {
    /// Region ("node") features v_i, L2-normalised (Eq. 1).
    pub regions: Tensor,
    /// Global image vector v_g, L2-normalised (Eq. 2).
    pub global: Tensor,
}

/// Text side of a batch: `words` (T, m, D) unit-norm rows (zero rows at padding),
/// `mask` (T, m) float 1 for real tokens and 0 for padding, `global` (T, D) unit norm.
#[derive(Debug)]
pub struct TextFeatures {
    /// Word features h_j, L2-normalised (Eq. 3), zero at padded positions.
    pub words: Tensor,
    /// 1.0 where a word is real, 0.0 where it is padding.
    pub mask: Tensor,
    /// Global text vector t_g, L2-normalised (Eq. 4).
    pub global: Tensor,
}

impl ImageFeatures {
    /// Number of images in the batch.
    pub fn len(&self) -> i64 {
        self.global.size()[0]
    }

    /// True when the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `start..start+len` (a view, no copy).
    pub fn narrow(&self, start: i64, len: i64) -> ImageFeatures {
        ImageFeatures {
            regions: self.regions.narrow(0, start, len),
            global: self.global.narrow(0, start, len),
        }
    }
}

impl TextFeatures {
    /// Number of captions in the batch.
    pub fn len(&self) -> i64 {
        self.global.size()[0]
    }

    /// True when the batch holds no caption.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Divides each vector along `dim` by its L2 norm (guarded against zero): every feature the
/// model emits (regions, words, global vectors) is unit length.
pub fn l2_normalize(x: &Tensor, dim: i64) -> Tensor {
    x / x.norm_scalaropt_dim(2.0, [dim], true).clamp_min(1e-12)
}
