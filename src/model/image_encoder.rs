//! Image encoder of ACF (Sec. 3.1.1): a pyramid Vision GNN whose stage outputs are
//! fused into 49 region ("node") features and one global vector.

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use super::config::Config;
use super::features::ImageFeatures;
use super::features::l2_normalize;
use super::vig::{Downsample, Ffn, GraphSpec, Grapher, Stem};

/// One entry of the backbone list, in the order of the official `backbone` ModuleList.
// A dozen layers, built once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum BackboneLayer {
    Down(Downsample),
    Block(Grapher, Ffn),
}

/// Pyramid ViG backbone plus multi-level node fusion (Eq. 1–2).
#[derive(Debug)]
pub struct ImageEncoder {
    pub(super) stem: Stem,
    pub(super) pos_embed: Tensor,
    pub(super) backbone: Vec<BackboneLayer>,
    /// Index into `backbone` after which each stage ends.
    pub(super) stage_ends: [usize; 4],
    pub(super) fusion: NodeFusion,
    pub(super) mean: Tensor,
    pub(super) std: Tensor,
}

impl ImageEncoder {
    pub fn new(p: &nn::Path, cfg: &Config) -> Self {
        let im = &cfg.image;
        let c0 = im.channels[0];
        let side0 = im.image_size / 4;
        let pos_embed = p.zeros("pos_embed", &[1, c0, side0, side0]);
        let total = cfg.total_blocks();
        let mut backbone = Vec::new();
        let mut stage_ends = [0usize; 4];
        let mut block_idx = 0i64;
        let bp = p / "backbone";
        for (stage, stage_end) in stage_ends.iter_mut().enumerate() {
            let c = im.channels[stage];
            if stage > 0 {
                let layer = Downsample::new(&(&bp / backbone.len()), im.channels[stage - 1], c);
                backbone.push(BackboneLayer::Down(layer));
            }
            for _ in 0..im.blocks[stage] {
                let spec = GraphSpec {
                    channels: c,
                    knn: knn_of_block(block_idx, total, im.knn_min, im.knn_max),
                    dilation: if block_idx < im.dilation_after { 1 } else { im.max_dilation },
                    reduce: im.reduce_ratios[stage],
                    side: side0 >> stage,
                    groups: im.graph_conv_groups,
                };
                let lp = &bp / backbone.len();
                backbone.push(BackboneLayer::Block(
                    Grapher::new(&(&lp / 0), spec, cfg.training.drop_path),
                    Ffn::new(&(&lp / 1), c, im.ffn_ratio, cfg.training.drop_path),
                ));
                block_idx += 1;
            }
            *stage_end = backbone.len() - 1;
        }
        let mean = Tensor::from_slice(&im.mean.map(|v| v as f32)).reshape([1, 3, 1, 1]).to_device(p.device());
        let std = Tensor::from_slice(&im.std.map(|v| v as f32)).reshape([1, 3, 1, 1]).to_device(p.device());
        ImageEncoder {
            stem: Stem::new(&(p / "stem"), c0),
            pos_embed,
            backbone,
            stage_ends,
            fusion: NodeFusion::new(&(p / "fusion"), cfg),
            mean,
            std,
        }
    }

    /// Turns 8-bit chips (B, 3, H, W) of any integer or float kind in 0..=255 into the
    /// encoder's input: `(x/255 − mean)/std` with the config's per-channel values.
    pub fn preprocess(&self, pixels: &Tensor) -> Tensor {
        let x = pixels.to_device(self.mean.device()).to_kind(Kind::Float) / 255.0;
        (x - &self.mean) / &self.std
    }

    /// Encodes preprocessed chips (B, 3, S, S) into region and global features.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> ImageFeatures {
        let mut x = self.stem.forward_t(xs, train) + &self.pos_embed;
        let mut stages: Vec<Tensor> = Vec::with_capacity(4);
        for (i, layer) in self.backbone.iter().enumerate() {
            x = match layer {
                BackboneLayer::Down(d) => d.forward_t(&x, train),
                BackboneLayer::Block(g, f) => f.forward_t(&g.forward_t(&x, train), train),
            };
            if self.stage_ends.contains(&i) {
                stages.push(x.shallow_clone());
            }
        }
        self.fusion.forward(&stages[1], &stages[2], &stages[3])
    }
}

/// k of block `idx`: linear from `min` to `max` over all blocks (ViG's `torch.linspace`).
fn knn_of_block(idx: i64, total: i64, min: i64, max: i64) -> i64 {
    if total <= 1 {
        return min;
    }
    let t = idx as f64 / (total - 1) as f64;
    // torch.linspace in float32 then int(): truncation.
    (min as f64 + t * (max - min) as f64 + 1e-6).floor() as i64
}

/// Multi-level node fusion (Eq. 1) and the global vector (Eq. 2).
#[derive(Debug)]
pub(super) struct NodeFusion {
    /// P_l and P_m of Eq. 1; `None` when M2 is off.
    pub(super) levels: Option<(nn::Conv2D, nn::Conv2D)>,
    /// Regions from the top stage alone (M2 off).
    pub(super) top_regions: Option<nn::Conv2D>,
    /// P_t of Eq. 2.
    pub(super) proj_t: nn::Linear,
    pub(super) grid: i64,
}

impl NodeFusion {
    fn new(p: &nn::Path, cfg: &Config) -> Self {
        let ch = &cfg.image.channels;
        let d = cfg.embed_dim;
        let c1 = Default::default();
        let (levels, top_regions) = if cfg.image.multi_level_fusion {
            (
                Some((nn::conv2d(p / "proj_l", ch[1], d, 1, c1), nn::conv2d(p / "proj_m", ch[2], d, 1, c1))),
                None,
            )
        } else {
            (None, Some(nn::conv2d(p / "proj_top", ch[3], d, 1, c1)))
        };
        NodeFusion {
            levels,
            top_regions,
            proj_t: nn::linear(p / "proj_t", ch[3], d, Default::default()),
            grid: cfg.image.region_grid,
        }
    }

    fn forward(&self, x_l: &Tensor, x_m: &Tensor, x_t: &Tensor) -> ImageFeatures {
        let g = [self.grid, self.grid];
        let regions = match (&self.levels, &self.top_regions) {
            (Some((p_l, p_m)), _) => {
                x_l.adaptive_avg_pool2d(g).apply(p_l) + x_m.adaptive_avg_pool2d(g).apply(p_m)
            }
            (None, Some(p_top)) => x_t.adaptive_avg_pool2d(g).apply(p_top),
            (None, None) => unreachable!("NodeFusion::new always builds one projection"),
        };
        // (B, D, g, g) → (B, k, D), each region unit length (Eq. 1).
        let regions = l2_normalize(&regions.flatten(2, 3).transpose(1, 2), -1);
        let top = x_t.mean_dim([2i64, 3].as_slice(), false, Kind::Float).apply(&self.proj_t);
        let global = l2_normalize(&(regions.mean_dim([1i64].as_slice(), false, Kind::Float) * top), -1);
        ImageFeatures { regions, global }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn encoder(cfg: &Config) -> (nn::VarStore, ImageEncoder) {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let enc = ImageEncoder::new(&vs.root(), cfg);
        (vs, enc)
    }

    #[test]
    fn knn_grows_linearly_like_vig() {
        // torch.linspace(9, 18, 12).int() for pvig-ti
        let ks: Vec<i64> = (0..12).map(|i| knn_of_block(i, 12, 9, 18)).collect();
        assert_eq!(ks, vec![9, 9, 10, 11, 12, 13, 13, 14, 15, 16, 17, 18]);
    }

    #[test]
    fn shapes_and_unit_norms_for_both_configs() {
        for cfg in [Config::pvig_nano(), Config::pvig_ti()] {
            let (_vs, enc) = encoder(&cfg);
            let pixels = Tensor::randint(256, [2, 3, 224, 224], (Kind::Uint8, Device::Cpu));
            let f = tch::no_grad(|| enc.forward_t(&enc.preprocess(&pixels), false));
            assert_eq!(f.regions.size(), vec![2, 49, 512], "{}", cfg.name);
            assert_eq!(f.global.size(), vec![2, 512], "{}", cfg.name);
            let rn = f.regions.norm_scalaropt_dim(2.0, [-1], false);
            assert!((rn - 1.0).abs().max().double_value(&[]) < 1e-5);
            let gn = f.global.norm_scalaropt_dim(2.0, [-1], false);
            assert!((gn - 1.0).abs().max().double_value(&[]) < 1e-5);
        }
    }

    #[test]
    fn eval_mode_is_deterministic_and_per_image() {
        let (_vs, enc) = encoder(&Config::pvig_nano());
        let x = Tensor::randn([3, 3, 224, 224], (Kind::Float, Device::Cpu));
        let a = tch::no_grad(|| enc.forward_t(&x, false));
        let b = tch::no_grad(|| enc.forward_t(&x, false));
        assert!(a.regions.equal(&b.regions) && a.global.equal(&b.global));
        // An image's features do not depend on the rest of the batch in eval mode.
        let single = tch::no_grad(|| enc.forward_t(&x.narrow(0, 1, 1), false));
        let diff = (single.regions - a.regions.narrow(0, 1, 1)).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn drop_path_varies_training_forwards_only() {
        // Two images × ten residual branches: two forwards draw the same mask with p = 2⁻²⁰.
        let x = Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu));
        let twice = |cfg: &Config, train: bool| {
            let (_vs, enc) = encoder(cfg);
            let a = tch::no_grad(|| enc.forward_t(&x, train));
            let b = tch::no_grad(|| enc.forward_t(&x, train));
            a.global.equal(&b.global)
        };
        let mut cfg = Config::pvig_nano();
        assert!(twice(&cfg, true), "without stochastic depth a training forward is deterministic");
        cfg.training.drop_path = 0.5;
        assert!(!twice(&cfg, true), "training.drop_path is not applied while training");
        assert!(twice(&cfg, false), "stochastic depth must not act outside training");
    }

    #[test]
    fn fusion_ablation_changes_parameters_not_shapes() {
        let mut cfg = Config::pvig_nano();
        cfg.image.multi_level_fusion = false;
        let (vs, enc) = encoder(&cfg);
        assert!(vs.variables().keys().any(|k| k.contains("proj_top")));
        assert!(!vs.variables().keys().any(|k| k.contains("proj_l")));
        let x = Tensor::randn([1, 3, 224, 224], (Kind::Float, Device::Cpu));
        let f = tch::no_grad(|| enc.forward_t(&x, false));
        assert_eq!(f.regions.size(), vec![1, 49, 512]);
    }

    #[test]
    fn parameter_names_follow_official_vig_paths() {
        let (vs, _) = encoder(&Config::pvig_nano());
        let names = vs.variables();
        for key in [
            "stem.convs.0.weight",
            "stem.convs.7.running_mean",
            "pos_embed",
            "backbone.0.0.fc1.0.weight",
            "backbone.0.0.graph_conv.gconv.nn.0.weight",
            "backbone.0.0.relative_pos",
            "backbone.0.1.fc2.1.bias",
            "backbone.1.conv.0.weight",
        ] {
            assert!(names.contains_key(key), "missing {key}");
        }
    }
}
