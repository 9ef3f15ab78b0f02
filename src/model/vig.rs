//! Building blocks of the pyramid Vision GNN (Han et al., NeurIPS 2022), with
//! variable paths equal to the official PyTorch module paths (`stem.convs.0`,
//! `backbone.N.0.fc1.0`, …) so released ViG weights could be loaded later.
//! ACF uses this backbone as its image encoder (Sec. 3.1.1).

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use super::features::l2_normalize;

fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, groups: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig { stride, padding: k / 2, groups, ..Default::default() };
    nn::conv2d(p, c_in, c_out, k, cfg)
}

/// ε of every BatchNorm (PyTorch's default); the inference path folds with the same value.
pub(super) const BN_EPS: f64 = 1e-5;

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, nn::BatchNormConfig { eps: BN_EPS, ..Default::default() })
}

/// A convolution followed by BatchNorm: the `nn.Sequential(Conv2d, BatchNorm2d)` pairs of ViG.
#[derive(Debug)]
pub struct ConvBn {
    pub(super) conv: nn::Conv2D,
    pub(super) bn: nn::BatchNorm,
    /// Stride, padding and groups of `conv` (tch keeps its config private).
    pub(super) stride: i64,
    pub(super) padding: i64,
    pub(super) groups: i64,
}

impl ConvBn {
    /// `p/"{conv_idx}"` holds the conv and `p/"{conv_idx+1}"` the BatchNorm.
    fn new(p: &nn::Path, idx: usize, c_in: i64, c_out: i64, k: i64, stride: i64, groups: i64) -> Self {
        ConvBn {
            conv: conv(p / idx.to_string(), c_in, c_out, k, stride, groups),
            bn: bn(p / (idx + 1).to_string(), c_out),
            stride,
            padding: k / 2,
            groups,
        }
    }
}

impl ModuleT for ConvBn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.conv).apply_t(&self.bn, train)
    }
}

/// Stem: conv3×3 s2 + BN + GELU, conv3×3 s2 + BN + GELU, conv3×3 s1 + BN (image/4).
#[derive(Debug)]
pub struct Stem {
    pub(super) layers: [ConvBn; 3],
}

impl Stem {
    pub fn new(p: &nn::Path, c_out: i64) -> Self {
        let p = p / "convs";
        Stem {
            layers: [
                ConvBn::new(&p, 0, 3, c_out / 2, 3, 2, 1),
                ConvBn::new(&p, 3, c_out / 2, c_out, 3, 2, 1),
                ConvBn::new(&p, 6, c_out, c_out, 3, 1, 1),
            ],
        }
    }
}

impl ModuleT for Stem {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let x = self.layers[0].forward_t(xs, train).gelu("none");
        let x = self.layers[1].forward_t(&x, train).gelu("none");
        self.layers[2].forward_t(&x, train)
    }
}

/// Downsampling between stages: conv3×3 s2 + BN.
#[derive(Debug)]
pub struct Downsample {
    pub(super) conv: ConvBn,
}

impl Downsample {
    pub fn new(p: &nn::Path, c_in: i64, c_out: i64) -> Self {
        Downsample { conv: ConvBn::new(&(p / "conv"), 0, c_in, c_out, 3, 2, 1) }
    }
}

impl ModuleT for Downsample {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.conv.forward_t(xs, train)
    }
}

/// Shape of one Grapher's dynamic graph.
#[derive(Debug, Clone, Copy)]
pub struct GraphSpec {
    /// Channels C of the stage.
    pub channels: i64,
    /// Neighbours per node.
    pub knn: i64,
    /// Dilation of the neighbour list.
    pub dilation: i64,
    /// Key average-pool ratio.
    pub reduce: i64,
    /// Side of the stage's node grid.
    pub side: i64,
    /// Groups of the grouped 1×1 conv.
    pub groups: i64,
}

/// Grapher: 1×1 conv+BN → dynamic max-relative graph conv → 1×1 conv (2C→C)+BN, residual.
#[derive(Debug)]
pub struct Grapher {
    pub(super) fc1: ConvBn,
    pub(super) graph_nn: ConvBn,
    pub(super) fc2: ConvBn,
    /// Fixed relative-position term added to k-NN distances, (1, N, N/r²).
    pub(super) relative_pos: Tensor,
    pub(super) spec: GraphSpec,
    /// Stochastic-depth rate of the residual branch while training (`training.drop_path`).
    pub(super) drop_path: f64,
}

impl Grapher {
    pub fn new(p: &nn::Path, spec: GraphSpec, drop_path: f64) -> Self {
        let c = spec.channels;
        let n = spec.side * spec.side;
        let keys = n / (spec.reduce * spec.reduce);
        let mut relative_pos = p.zeros_no_train("relative_pos", &[1, n, keys]);
        let init = relative_position_term(c, spec.side, keys).to_device(p.device());
        tch::no_grad(|| relative_pos.copy_(&init));
        Grapher {
            fc1: ConvBn::new(&(p / "fc1"), 0, c, c, 1, 1, 1),
            graph_nn: ConvBn::new(&(p / "graph_conv" / "gconv" / "nn"), 0, 2 * c, 2 * c, 1, 1, spec.groups),
            fc2: ConvBn::new(&(p / "fc2"), 0, 2 * c, c, 1, 1, 1),
            relative_pos,
            spec,
            drop_path,
        }
    }

    /// Dynamic graph conv (MRConv): neighbours by k-NN on L2-normalised features plus
    /// the relative-position term, aggregation `max_j(x_j − x_i)` concatenated with x_i.
    fn graph_conv(&self, x: &Tensor, train: bool) -> Tensor {
        let (b, c, h, w) = x.size4().unwrap_or((0, 0, 0, 0));
        let n = h * w;
        let r = self.spec.reduce;
        let keys_map =
            if r > 1 { x.avg_pool2d([r, r], [r, r], [0, 0], false, true, None) } else { x.shallow_clone() };
        let xs = x.reshape([b, c, n]).transpose(1, 2); // (B, N, C)
        let ys = keys_map.reshape([b, c, -1]).transpose(1, 2); // (B, M, C)
        let m = ys.size()[1];
        let idx = tch::no_grad(|| {
            let xn = l2_normalize(&xs.detach(), -1);
            let yn = l2_normalize(&ys.detach(), -1);
            let dist: Tensor = xn.square().sum_dim_intlist(-1, true, Kind::Float)
                - 2.0 * xn.matmul(&yn.transpose(1, 2))
                + yn.square().sum_dim_intlist(-1, true, Kind::Float).transpose(1, 2)
                + &self.relative_pos;
            let kd = (self.spec.knn * self.spec.dilation).min(m);
            let (_, idx) = dist.neg().topk(kd, -1, true, true);
            idx.slice(2, 0, kd, self.spec.dilation)
        });
        let x_j = neighbour_rows(&ys, &idx).amax([2], false) - &xs; // max_j(x_j) − x_i
        // Interleave channels as torch.cat([x, x_j], dim=2).reshape(b, 2c, n, 1) does.
        let both = Tensor::stack(&[xs.transpose(1, 2), x_j.transpose(1, 2)], 2).reshape([b, 2 * c, n, 1]);
        self.graph_nn.forward_t(&both, train).gelu("none").reshape([b, 2 * c, h, w])
    }
}

impl ModuleT for Grapher {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let y = self.fc1.forward_t(xs, train);
        let y = self.graph_conv(&y, train);
        drop_path(self.fc2.forward_t(&y, train), self.drop_path, train) + xs
    }
}

/// FFN: 1×1 conv C→rC + BN + GELU, 1×1 conv rC→C + BN, residual.
#[derive(Debug)]
pub struct Ffn {
    pub(super) fc1: ConvBn,
    pub(super) fc2: ConvBn,
    /// Stochastic-depth rate of the residual branch while training (`training.drop_path`).
    pub(super) drop_path: f64,
}

impl Ffn {
    pub fn new(p: &nn::Path, c: i64, ratio: i64, drop_path: f64) -> Self {
        Ffn {
            fc1: ConvBn::new(&(p / "fc1"), 0, c, c * ratio, 1, 1, 1),
            fc2: ConvBn::new(&(p / "fc2"), 0, c * ratio, c, 1, 1, 1),
            drop_path,
        }
    }
}

impl ModuleT for Ffn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let y = self.fc1.forward_t(xs, train).gelu("none");
        drop_path(self.fc2.forward_t(&y, train), self.drop_path, train) + xs
    }
}

/// Stochastic depth (Huang et al. 2016) on a residual branch `y` (B, …): while training,
/// each sample's branch is zeroed with probability `rate` and kept ones are scaled by
/// 1/(1 − rate), so the block's expected output is unchanged; outside training, `y` as is.
pub(super) fn drop_path(y: Tensor, rate: f64, train: bool) -> Tensor {
    if !train || rate <= 0.0 {
        return y;
    }
    let mut shape = vec![1i64; y.dim()];
    shape[0] = y.size()[0];
    let keep = Tensor::empty(shape.as_slice(), (y.kind(), y.device())).bernoulli_float_(1.0 - rate);
    y * keep / (1.0 - rate)
}

/// `out[b, i, j] = keys[b, idx[b, i, j]]`: keys (B, M, C), idx (B, N, k) → (B, N, k, C).
/// Row lookups in the flattened (B·M, C) keys (`index_select`) give the same values as
/// `gather` with the index expanded over C, faster, without an index element per value.
pub(super) fn neighbour_rows(keys: &Tensor, idx: &Tensor) -> Tensor {
    let (b, m, c) = keys.size3().unwrap_or((0, 0, 0));
    let (_, n, k) = idx.size3().unwrap_or((0, 0, 0));
    let offsets = Tensor::arange(b, (Kind::Int64, idx.device())).view([b, 1, 1]) * m;
    let rows = (idx + offsets).reshape([-1]);
    keys.reshape([b * m, c]).index_select(0, &rows).reshape([b, n, k, c])
}

/// The fixed relative-position term of pyramid ViG: `−2·E·Eᵀ/C` for the 2-D sin-cos
/// embedding E of the node grid, resized (bicubic) on the key axis to the pooled grid.
fn relative_position_term(channels: i64, side: i64, keys: i64) -> Tensor {
    let n = side * side;
    let quarter = channels / 4;
    let mut emb = vec![0f32; (n * channels) as usize];
    for row in 0..side {
        for col in 0..side {
            let node = (row * side + col) as usize;
            // First half from the column coordinate, second from the row (np.meshgrid order).
            for (half, coord) in [(0usize, col as f64), (1usize, row as f64)] {
                for d in 0..quarter {
                    let omega = 1.0 / 10000f64.powf(d as f64 / quarter as f64);
                    let base = node * channels as usize + half * 2 * quarter as usize;
                    emb[base + d as usize] = (coord * omega).sin() as f32;
                    emb[base + (quarter + d) as usize] = (coord * omega).cos() as f32;
                }
            }
        }
    }
    let e = Tensor::from_slice(&emb).reshape([n, channels]);
    let rel = e.matmul(&e.transpose(0, 1)) * (2.0 / channels as f64);
    let rel = if keys == n {
        rel
    } else {
        rel.reshape([1, 1, n, n]).upsample_bicubic2d([n, keys], false, None, None).reshape([n, keys])
    };
    rel.neg().unsqueeze(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn drop_path_skips_whole_samples_keeps_the_mean_and_is_off_outside_training() {
        tch::manual_seed(11);
        let y = Tensor::ones([4000, 3, 2, 2], (Kind::Float, Device::Cpu));
        // Outside training, or at rate 0, the branch passes unchanged.
        assert!(drop_path(y.shallow_clone(), 0.3, false).equal(&y));
        assert!(drop_path(y.shallow_clone(), 0.0, true).equal(&y));
        let out = drop_path(y.shallow_clone(), 0.25, true);
        // Each sample is either dropped entirely (0) or kept and scaled by 1/(1 − 0.25).
        let per_sample = out.reshape([4000, 12]);
        let (lo, hi) = (per_sample.amin([1], false), per_sample.amax([1], false));
        assert!(lo.equal(&hi), "a sample was dropped only in part");
        let kept = hi.gt(0.0).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        assert!((kept - 0.75).abs() < 0.03, "kept fraction {kept}");
        assert!((hi.amax([0], false).double_value(&[]) - 4.0 / 3.0).abs() < 1e-6);
        // The expectation is unchanged (mean ≈ 1).
        let mean = out.mean(Kind::Float).double_value(&[]);
        assert!((mean - 1.0).abs() < 0.05, "mean {mean}");
    }

    #[test]
    fn neighbour_rows_equal_expanded_gather_with_same_gradient() {
        tch::manual_seed(5);
        let (b, m, c, n, k) = (3, 11, 6, 17, 4);
        let keys = Tensor::randn([b, m, c], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let idx = Tensor::randint(m, [b, n, k], (Kind::Int64, Device::Cpu));
        let fast = neighbour_rows(&keys, &idx);
        let gathered = keys.gather(1, &idx.reshape([b, n * k, 1]).expand([b, n * k, c], false), false);
        let reference = gathered.reshape([b, n, k, c]);
        assert!(fast.equal(&reference));
        let weights = Tensor::randn([b, n, k, c], (Kind::Float, Device::Cpu));
        let grad = |t: &Tensor| {
            let g = Tensor::run_backward(&[(t * &weights).sum(Kind::Float)], &[&keys], false, false);
            g[0].shallow_clone()
        };
        let diff = (grad(&fast) - grad(&reference)).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
    }
}
