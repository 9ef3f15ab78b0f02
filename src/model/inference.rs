//! Inference-only image encoder: the same function as [`ImageEncoder::forward_t`] in eval
//! mode, rebuilt for speed.
//!
//! - Every BatchNorm is folded (with its running statistics) into the convolution before
//!   it; the folded weights are plain tensors, a snapshot outside the `VarStore`, so
//!   training and saving are unaffected. Rebuild after the weights change.
//! - Activations stay channels-last (NHWC) throughout, so every 1×1 conv runs as one
//!   oneDNN convolution with its bias fused, and the Grapher's node matrix (B, N, C) is a
//!   view, not a transpose.
//! - The Grapher's `x_j − x_i` is folded into the weights of its grouped 1×1 conv, and
//!   neighbour selection plus max aggregation run in one pass ([`knn_max`]).
//! - Optionally bfloat16 weights and activations; k-NN distances, region pooling and
//!   the final L2 normalisations stay float32.
//!
//! Nothing here records autograd history.
//!
//! Equality with the training form holds to float32 rounding (1e-5, tested) as long as the
//! k-NN graphs come out the same. They are recomputed from the features in every block, and
//! where a node has two keys at nearly equal distance, a rounding-level difference (any
//! reordering of float arithmetic: BatchNorm folding, another batch size, another BLAS, or
//! bfloat16) can swap a neighbour and move that node's features, and the regions built on
//! it, by far more than the rounding. On untrained models and noise images this reaches
//! 1 − cos ≈ 1e-2 for a few regions even in float32; `Auto` therefore measures bfloat16
//! against float32 on real chips before using it.

use tch::{Device, Kind, Tensor};

use super::features::ImageFeatures;
use super::features::l2_normalize;
use super::image_encoder::{BackboneLayer, ImageEncoder, NodeFusion};
use super::knn::knn_max;
use super::vig::{BN_EPS, ConvBn, GraphSpec, Grapher};

/// Number format of the inference encoder's weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InferencePrecision {
    /// bfloat16 on a CPU with native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16 on x86,
    /// BF16 on Arm) when a probe batch stays within the tolerance of float32; otherwise
    /// float32. Always float32 on CUDA.
    #[default]
    Auto,
    /// float32 everywhere.
    Float32,
    /// bfloat16 weights and activations (slow on CPUs without native bfloat16).
    BFloat16,
}

impl InferencePrecision {
    /// The tensor kind of a resolved precision (`Auto` counts as float32).
    pub fn kind(self) -> Kind {
        match self {
            InferencePrecision::BFloat16 => Kind::BFloat16,
            InferencePrecision::Auto | InferencePrecision::Float32 => Kind::Float,
        }
    }

    /// Short name for logs and tables: `auto`, `f32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            InferencePrecision::Auto => "auto",
            InferencePrecision::Float32 => "f32",
            InferencePrecision::BFloat16 => "bf16",
        }
    }
}

/// How to build an [`InferenceImageEncoder`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InferenceOptions {
    /// Weights and activations format.
    pub precision: InferencePrecision,
    /// Largest accepted `1 − cos` between a bfloat16 and the float32 feature (any region
    /// or global vector of the probe batch) for `Auto` to pick bfloat16.
    pub bf16_tolerance: f64,
}

impl Default for InferenceOptions {
    fn default() -> Self {
        InferenceOptions { precision: InferencePrecision::Auto, bf16_tolerance: 1e-2 }
    }
}

impl InferenceOptions {
    /// Options for an explicit precision.
    pub fn with_precision(precision: InferencePrecision) -> Self {
        InferenceOptions { precision, ..Default::default() }
    }
}

/// Whether this CPU has native bfloat16 arithmetic that oneDNN uses (x86: AVX512-BF16 or
/// AMX-BF16; Arm: BF16). Without it bfloat16 is emulated and slower than float32.
pub fn cpu_has_native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16") || cpuinfo_flag("amx_bf16")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("bf16")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// True when the `flags` line of /proc/cpuinfo lists `flag` (false where unreadable).
#[cfg(target_arch = "x86_64")]
fn cpuinfo_flag(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|f| f == flag))
    })
}

/// Largest `1 − cos` between corresponding rows of `a` and `b`, over the region
/// features and the global vectors (both compared in float32).
pub fn max_cosine_deviation(a: &ImageFeatures, b: &ImageFeatures) -> f64 {
    let dev = |x: &Tensor, y: &Tensor| {
        if x.numel() == 0 {
            return 0.0;
        }
        let cos = Tensor::cosine_similarity(&x.to_kind(Kind::Float), &y.to_kind(Kind::Float), -1, 1e-12);
        (1.0f64 - cos.min().double_value(&[])).max(0.0)
    };
    dev(&a.regions, &b.regions).max(dev(&a.global, &b.global))
}

/// Permutes a (N, C, H, W) tensor's storage to channels-last (NHWC) order, keeping its
/// logical shape; oneDNN then runs convolutions without layout conversions.
fn channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// A convolution with its BatchNorm folded in: `conv(x, W·s) + (b − μ)·s + β`,
/// `s = γ/√(σ² + ε)`.
#[derive(Debug)]
struct FoldedConv {
    weight: Tensor,
    bias: Tensor,
    stride: i64,
    padding: i64,
    groups: i64,
}

impl FoldedConv {
    /// Folds in float64, then stores in `kind`, weights channels-last.
    fn new(cb: &ConvBn, kind: Kind) -> Self {
        let (weight, bias) = fold_batchnorm(cb);
        Self::from_parts(&weight, &bias, cb, kind)
    }

    fn from_parts(weight: &Tensor, bias: &Tensor, cb: &ConvBn, kind: Kind) -> Self {
        FoldedConv {
            weight: channels_last(&weight.to_kind(kind)),
            bias: bias.to_kind(kind),
            stride: cb.stride,
            padding: cb.padding,
            groups: cb.groups,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (s, p) = (self.stride, self.padding);
        x.conv2d(&self.weight, Some(&self.bias), [s, s], [p, p], [1, 1], self.groups)
    }
}

/// Folded (weight, bias) of a conv+BN pair in float64, with BatchNorm's eval statistics.
fn fold_batchnorm(cb: &ConvBn) -> (Tensor, Tensor) {
    let f64_of = |t: &Tensor| t.detach().to_kind(Kind::Double);
    let bn = &cb.bn;
    let opts = (Kind::Double, bn.running_mean.device());
    let c_out = bn.running_mean.size()[0];
    let gamma = bn.ws.as_ref().map_or_else(|| Tensor::ones([c_out], opts), f64_of);
    let beta = bn.bs.as_ref().map_or_else(|| Tensor::zeros([c_out], opts), f64_of);
    let scale = gamma / (f64_of(&bn.running_var) + BN_EPS).sqrt();
    let conv_bias = cb.conv.bs.as_ref().map_or_else(|| Tensor::zeros([c_out], opts), f64_of);
    let weight = f64_of(&cb.conv.ws) * scale.view([-1, 1, 1, 1]);
    let bias = (conv_bias - f64_of(&bn.running_mean)) * &scale + beta;
    (weight, bias)
}

/// Grapher for inference: fc1 → k-NN max-relative graph conv → fc2, residual.
#[derive(Debug)]
struct InferenceGrapher {
    fc1: FoldedConv,
    /// The grouped 1×1 conv over interleaved `[x_i, max_j x_j]` channels: its weights for
    /// the `x_i` channels hold `W_x − W_{x_j}`, which equals the original conv applied to
    /// `[x_i, max_j x_j − x_i]`.
    graph_nn: FoldedConv,
    fc2: FoldedConv,
    /// (1, N, M) float32.
    relative_pos: Tensor,
    spec: GraphSpec,
}

impl InferenceGrapher {
    fn new(g: &Grapher, kind: Kind) -> Self {
        let (w, bias) = fold_batchnorm(&g.graph_nn);
        // Input channel 2c of each group is x_c, 2c + 1 is x_j,c.
        let w_x = w.slice(1, 0, None, 2);
        let w_j = w.slice(1, 1, None, 2);
        let folded = Tensor::stack(&[&w_x - &w_j, w_j], 2).reshape(w.size());
        InferenceGrapher {
            fc1: FoldedConv::new(&g.fc1, kind),
            graph_nn: FoldedConv::from_parts(&folded, &bias, &g.graph_nn, kind),
            fc2: FoldedConv::new(&g.fc2, kind),
            relative_pos: g.relative_pos.detach().to_kind(Kind::Float).copy(),
            spec: g.spec,
        }
    }

    /// `x`: (B, C, H, W) channels-last.
    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().unwrap_or((0, 0, 0, 0));
        let n = h * w;
        let r = self.spec.reduce;
        let y = self.fc1.forward(x);
        let keys_map =
            if r > 1 { y.avg_pool2d([r, r], [r, r], [0, 0], false, true, None) } else { y.shallow_clone() };
        let xs = y.permute([0, 2, 3, 1]).reshape([b, n, c]); // (B, N, C), a view
        let ys = keys_map.permute([0, 2, 3, 1]).reshape([b, -1, c]).to_kind(Kind::Float); // (B, M, C)
        let xn = l2_normalize(&xs.to_kind(Kind::Float), -1);
        let yn = l2_normalize(&ys, -1);
        // ‖x_i‖² is the same for every key of node i, so it cannot change the k-NN.
        let mut dist =
            yn.square().sum_dim_intlist(-1, true, Kind::Float).transpose(1, 2) + &self.relative_pos;
        let _ = dist.baddbmm_(&xn, &(yn * -2.0).transpose(1, 2));
        let x_j = knn_max(&dist, &ys, self.spec.knn, self.spec.dilation).to_kind(xs.kind());
        let both = Tensor::stack(&[xs, x_j], 3).reshape([b, h, w, 2 * c]).permute([0, 3, 1, 2]);
        let mut z = self.graph_nn.forward(&both);
        let z = z.gelu_("none");
        let mut out = self.fc2.forward(&z);
        let _ = out.g_add_(x);
        out
    }
}

/// FFN for inference: 1×1 conv + GELU, 1×1 conv, residual.
#[derive(Debug)]
struct InferenceFfn {
    fc1: FoldedConv,
    fc2: FoldedConv,
}

impl InferenceFfn {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut y = self.fc1.forward(x);
        let y = y.gelu_("none");
        let mut out = self.fc2.forward(&y);
        let _ = out.g_add_(x);
        out
    }
}

#[derive(Debug)]
enum InferenceLayer {
    Down(FoldedConv),
    Block(Box<(InferenceGrapher, InferenceFfn)>),
}

/// Node fusion (Eq. 1–2) with float32 weights, copied out of the `VarStore`.
#[derive(Debug)]
struct InferenceFusion {
    /// (weight, bias) of P_l and P_m, or of the top-stage projection when M2 is off.
    region_projections: Vec<(Tensor, Tensor)>,
    /// Whether `region_projections` reads stages 1 and 2 (M2 on) or stage 3 alone.
    multi_level: bool,
    proj_t: (Tensor, Option<Tensor>),
    grid: i64,
}

impl InferenceFusion {
    fn new(f: &NodeFusion) -> Self {
        let copy = |t: &Tensor| t.detach().to_kind(Kind::Float).copy();
        let conv = |c: &tch::nn::Conv2D| {
            let zeros = || Tensor::zeros([c.ws.size()[0]], (Kind::Float, c.ws.device()));
            (copy(&c.ws), c.bs.as_ref().map_or_else(zeros, copy))
        };
        let (region_projections, multi_level) = match (&f.levels, &f.top_regions) {
            (Some((p_l, p_m)), _) => (vec![conv(p_l), conv(p_m)], true),
            (None, Some(p_top)) => (vec![conv(p_top)], false),
            (None, None) => (Vec::new(), false),
        };
        InferenceFusion {
            region_projections,
            multi_level,
            proj_t: (copy(&f.proj_t.ws), f.proj_t.bs.as_ref().map(copy)),
            grid: f.grid,
        }
    }

    /// `stages`: the four stage outputs, any kind; computed in float32.
    fn forward(&self, stages: &[Tensor]) -> ImageFeatures {
        let g = [self.grid, self.grid];
        let inputs: Vec<&Tensor> =
            if self.multi_level { vec![&stages[1], &stages[2]] } else { vec![&stages[3]] };
        let regions = inputs
            .iter()
            .zip(&self.region_projections)
            .map(|(x, (w, b))| {
                x.to_kind(Kind::Float).adaptive_avg_pool2d(g).conv2d(w, Some(b), [1, 1], [0, 0], [1, 1], 1)
            })
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::zeros([0], (Kind::Float, stages[3].device())));
        let regions = l2_normalize(&regions.flatten(2, 3).transpose(1, 2), -1);
        let top = stages[3].to_kind(Kind::Float).mean_dim([2i64, 3].as_slice(), false, Kind::Float);
        let top = top.linear(&self.proj_t.0, self.proj_t.1.as_ref());
        let global = l2_normalize(&(regions.mean_dim([1i64].as_slice(), false, Kind::Float) * top), -1);
        ImageFeatures { regions, global }
    }
}

/// The image encoder rebuilt for inference (see the module docs): same outputs as
/// `ImageEncoder::forward_t(.., false)` up to float rounding (float32), or within the
/// configured cosine tolerance (bfloat16). A snapshot of the weights at build time.
#[derive(Debug)]
pub struct InferenceImageEncoder {
    stem: [FoldedConv; 3],
    pos_embed: Tensor,
    backbone: Vec<InferenceLayer>,
    stage_ends: [usize; 4],
    fusion: InferenceFusion,
    mean: Tensor,
    std: Tensor,
    precision: InferencePrecision,
    probe_deviation: Option<f64>,
    /// Chips per forward pass (see [`CHUNK_BYTES`]).
    chunk: i64,
    /// Views averaged per chip (`image.test_time_views`).
    views: u32,
}

impl ImageEncoder {
    /// The inference-only form of this encoder in `precision` (`Auto` counts as float32;
    /// use [`InferenceImageEncoder::build`] for the automatic choice). Reads the weights
    /// and BatchNorm statistics now; later changes to them are not seen.
    pub fn for_inference(&self, precision: InferencePrecision) -> InferenceImageEncoder {
        let _guard = tch::no_grad_guard();
        let kind = precision.kind();
        let backbone: Vec<InferenceLayer> = self
            .backbone
            .iter()
            .map(|layer| match layer {
                BackboneLayer::Down(d) => InferenceLayer::Down(FoldedConv::new(&d.conv, kind)),
                BackboneLayer::Block(g, f) => InferenceLayer::Block(Box::new((
                    InferenceGrapher::new(g, kind),
                    InferenceFfn { fc1: FoldedConv::new(&f.fc1, kind), fc2: FoldedConv::new(&f.fc2, kind) },
                ))),
            })
            .collect();
        let [s0, s1, s2] = &self.stem.layers;
        let chunk = chunk_size(&backbone);
        InferenceImageEncoder {
            stem: [FoldedConv::new(s0, kind), FoldedConv::new(s1, kind), FoldedConv::new(s2, kind)],
            pos_embed: channels_last(&self.pos_embed.detach().to_kind(kind)),
            backbone,
            stage_ends: self.stage_ends,
            fusion: InferenceFusion::new(&self.fusion),
            mean: self.mean.copy(),
            std: self.std.copy(),
            precision: if kind == Kind::BFloat16 {
                InferencePrecision::BFloat16
            } else {
                InferencePrecision::Float32
            },
            probe_deviation: None,
            chunk,
            views: 1,
        }
    }
}

impl InferenceImageEncoder {
    /// Builds the inference encoder of `encoder` with `opts`. For `Auto` on a CPU with
    /// native bfloat16, encodes `probe` (8-bit chips (B, 3, S, S); a synthetic pattern when
    /// `None`) in both precisions and keeps bfloat16 only when every region and global
    /// vector is within `opts.bf16_tolerance` (1 − cos) of float32.
    pub fn build(encoder: &ImageEncoder, opts: &InferenceOptions, probe: Option<&Tensor>) -> Self {
        let device = encoder.mean.device();
        match opts.precision {
            InferencePrecision::Auto if device == Device::Cpu && cpu_has_native_bf16() => {
                let f32_encoder = encoder.for_inference(InferencePrecision::Float32);
                let mut bf16_encoder = encoder.for_inference(InferencePrecision::BFloat16);
                let side = encoder_input_side(encoder);
                let pixels = probe.map_or_else(|| synthetic_chips(2, side, device), Tensor::shallow_clone);
                let dev = max_cosine_deviation(
                    &f32_encoder.encode_pixels(&pixels),
                    &bf16_encoder.encode_pixels(&pixels),
                );
                if dev <= opts.bf16_tolerance {
                    tracing::info!(
                        deviation = dev,
                        "image encoder in bfloat16 (max 1 − cos vs float32 on the probe)"
                    );
                    bf16_encoder.probe_deviation = Some(dev);
                    bf16_encoder
                } else {
                    tracing::info!(
                        deviation = dev,
                        tolerance = opts.bf16_tolerance,
                        "image encoder in float32: bfloat16 too far from float32 on the probe"
                    );
                    f32_encoder
                }
            }
            precision => encoder.for_inference(precision),
        }
    }

    /// This encoder averaging `views` views of each chip (`image.test_time_views`; built
    /// with one).
    pub fn with_views(mut self, views: u32) -> Self {
        self.views = views;
        self
    }

    /// The precision this encoder runs in (never `Auto`).
    pub fn precision(&self) -> InferencePrecision {
        self.precision
    }

    /// `1 − cos` measured against float32 when `Auto` chose bfloat16 (else `None`).
    pub fn probe_deviation(&self) -> Option<f64> {
        self.probe_deviation
    }

    /// Encodes 8-bit chips (B, 3, S, S), values 0..=255, into region and global features,
    /// each chip as `image.test_time_views` views averaged (`views::encode_views`).
    pub fn encode_pixels(&self, pixels: &Tensor) -> ImageFeatures {
        let _guard = tch::no_grad_guard();
        super::views::encode_views(pixels, self.views, self.fusion.grid, |px| {
            self.in_chunks(px, |chips| {
                let x = chips.to_device(self.mean.device()).to_kind(Kind::Float) / 255.0;
                self.forward_chunk(&((x - &self.mean) / &self.std))
            })
        })
    }

    /// Encodes preprocessed float chips (B, 3, S, S) (see [`ImageEncoder::preprocess`]); the
    /// tests compare it with the training-form encoder on the same input.
    #[cfg(test)]
    pub fn forward(&self, xs: &Tensor) -> ImageFeatures {
        let _guard = tch::no_grad_guard();
        self.in_chunks(xs, |chunk| self.forward_chunk(chunk))
    }

    /// Runs `f` on slices of at most `self.chunk` chips and concatenates the features.
    fn in_chunks(&self, xs: &Tensor, f: impl Fn(&Tensor) -> ImageFeatures) -> ImageFeatures {
        let b = xs.size().first().copied().unwrap_or(0);
        if b <= self.chunk {
            return f(xs);
        }
        let parts: Vec<ImageFeatures> =
            (0..b).step_by(self.chunk as usize).map(|s| f(&xs.narrow(0, s, self.chunk.min(b - s)))).collect();
        let regions: Vec<&Tensor> = parts.iter().map(|p| &p.regions).collect();
        let global: Vec<&Tensor> = parts.iter().map(|p| &p.global).collect();
        ImageFeatures { regions: Tensor::cat(&regions, 0), global: Tensor::cat(&global, 0) }
    }

    fn forward_chunk(&self, xs: &Tensor) -> ImageFeatures {
        let x = channels_last(&xs.to_kind(self.precision.kind()));
        let mut x = self.stem[0].forward(&x);
        let x = self.stem[1].forward(&x.gelu_("none")).gelu_("none");
        let mut x = self.stem[2].forward(&x);
        let _ = x.g_add_(&self.pos_embed);
        let mut stages = Vec::with_capacity(4);
        for (i, layer) in self.backbone.iter().enumerate() {
            x = match layer {
                InferenceLayer::Down(d) => d.forward(&x),
                InferenceLayer::Block(block) => block.1.forward(&block.0.forward(&x)),
            };
            if self.stage_ends.contains(&i) {
                stages.push(x.shallow_clone());
            }
        }
        self.fusion.forward(&stages)
    }
}

/// Largest intermediate tensor one forward pass should allocate: batches are split into
/// chunks of chips so that memory stays bounded for any batch size (32 chips of 224² for
/// pvig-ti); larger chunks were not faster. See also [`crate::device::retain_freed_memory`].
const CHUNK_BYTES: i64 = 80 << 20;

/// Chips per chunk: the stage-1 k-NN distances (N·M float32), FFN hidden layer (N·rC) and
/// graph-conv input (N·2C) of one chip must fit [`CHUNK_BYTES`] together with the others.
fn chunk_size(backbone: &[InferenceLayer]) -> i64 {
    let per_chip = backbone
        .iter()
        .filter_map(|layer| match layer {
            InferenceLayer::Block(block) => {
                let spec = block.0.spec;
                let n = spec.side * spec.side;
                let m = n / (spec.reduce * spec.reduce).max(1);
                let hidden = block.1.fc1.weight.size()[0];
                Some(4 * n * m.max(hidden).max(2 * spec.channels))
            }
            InferenceLayer::Down(_) => None,
        })
        .max()
        .unwrap_or(1);
    (CHUNK_BYTES / per_chip.max(1)).max(1)
}

/// Input side S of an encoder, from its positional embedding (S/4 per side).
fn encoder_input_side(encoder: &ImageEncoder) -> i64 {
    encoder.pos_embed.size().last().copied().unwrap_or(56) * 4
}

/// Deterministic 8-bit chips with smooth gradients, edges and texture (no RNG use).
fn synthetic_chips(batch: i64, side: i64, device: Device) -> Tensor {
    let opts = (Kind::Float, device);
    let coord = Tensor::arange(side, opts) / side as f64;
    let (yy, xx) = (coord.view([side, 1]), coord.view([1, side]));
    let chips: Vec<Tensor> = (0..batch)
        .map(|i| {
            let f = 3.0 + 5.0 * i as f64;
            let r = (&xx * f).sin() * (&yy * (f + 2.0)).cos() * 100.0 + 128.0;
            let g = (&xx + &yy) * 127.0 + ((&xx * 40.0).sin() * 20.0);
            let b = (&yy * 255.0) * xx.gt(0.5).to_kind(Kind::Float) + 30.0;
            Tensor::stack(&[r, g, b], 0)
        })
        .collect();
    Tensor::stack(&chips, 0).clamp(0.0, 255.0).round().to_kind(Kind::Uint8)
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use crate::data::image_file::{Chip, load_chip};
    use crate::model::Config;
    use tch::nn;

    /// The bundled example images (UCM-Captions), 224×224.
    pub(super) fn example_pixels() -> Tensor {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/images");
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        paths.sort();
        let chips: Vec<Chip> = paths.iter().filter_map(|p| load_chip(p, 224).ok()).collect();
        assert!(chips.len() >= 4, "examples/images should hold the bundled example images");
        Chip::batch(&chips)
    }

    /// A seeded encoder whose BatchNorm statistics come from train-mode passes over
    /// `pixels` (as after training). With `perturb`, BatchNorm affine parameters and conv
    /// biases are also set to random non-trivial values (which makes many k-NN distances
    /// nearly tied: features share an offset, so their directions crowd together).
    pub(super) fn calibrated_encoder(
        cfg: &Config,
        pixels: &Tensor,
        perturb: bool,
    ) -> (nn::VarStore, ImageEncoder) {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let enc = ImageEncoder::new(&vs.root(), cfg);
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                let size = t.size();
                let opts = (Kind::Float, Device::Cpu);
                if perturb && name.ends_with(".bias") && !name.contains("fusion") {
                    t.copy_(&(Tensor::randn(size.as_slice(), opts) * 0.1));
                } else if perturb && name.ends_with(".weight") && size.len() == 1 {
                    t.copy_(&(Tensor::randn(size.as_slice(), opts) * 0.2 + 1.0));
                }
            }
            let x = enc.preprocess(pixels);
            let n = x.size()[0];
            for i in 0..10 {
                let _ = enc.forward_t(&x.narrow(0, (2 * i) % (n - 1), 2), true);
            }
        });
        (vs, enc)
    }

    /// `cfg` with every node linked to every key: the k-NN graph cannot change under
    /// rounding, so the whole encoder can be compared at float32 precision. (With a sparse
    /// graph, two keys at nearly equal distance make the features a discontinuous function of
    /// the input: a 1e-6 relative change of the pixels moves pvig-ti regions by up to ~1e-2.)
    pub(super) fn complete_graph(mut cfg: Config) -> Config {
        cfg.image.knn_min = 196;
        cfg.image.knn_max = 196;
        cfg.image.max_dilation = 1;
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;
    use crate::model::Config;
    use tch::nn;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn test_time_views_are_averaged_alike_by_both_encoders() {
        let pixels = example_pixels().narrow(0, 0, 2);
        let cfg = complete_graph(Config::pvig_nano());
        let (_vs, enc) = calibrated_encoder(&cfg, &example_pixels(), true);
        let fast = enc.for_inference(InferencePrecision::Float32).with_views(2).encode_pixels(&pixels);
        let forward = |px: &Tensor| tch::no_grad(|| enc.forward_t(&enc.preprocess(px), false));
        let averaged = crate::model::views::encode_views(&pixels, 2, cfg.image.region_grid, forward);
        assert!(max_abs_diff(&fast.regions, &averaged.regions) < 1e-4);
        assert!(max_abs_diff(&fast.global, &averaged.global) < 1e-4);
        // Two views are not the chip alone.
        let single = forward(&pixels);
        assert!(max_abs_diff(&fast.global, &single.global) > 1e-4);
    }

    #[test]
    fn folded_float32_equals_unfolded_eval() {
        let pixels = example_pixels().narrow(0, 0, 2);
        for cfg in [complete_graph(Config::pvig_nano()), complete_graph(Config::pvig_ti())] {
            let (_vs, enc) = calibrated_encoder(&cfg, &example_pixels(), true);
            let reference = tch::no_grad(|| enc.forward_t(&enc.preprocess(&pixels), false));
            let fast = enc.for_inference(InferencePrecision::Float32).encode_pixels(&pixels);
            assert_eq!(fast.regions.kind(), Kind::Float);
            let (dr, dg) = (
                max_abs_diff(&fast.regions, &reference.regions),
                max_abs_diff(&fast.global, &reference.global),
            );
            assert!(dr < 1e-5 && dg < 1e-5, "{}: regions {dr:e}, global {dg:e}", cfg.name);
        }
    }

    #[test]
    fn folded_float32_with_hand_set_statistics() {
        // Random running statistics set directly, far from what the activations have.
        let cfg = complete_graph(Config::pvig_nano());
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let enc = ImageEncoder::new(&vs.root(), &cfg);
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                let size = t.size();
                let opts = (Kind::Float, Device::Cpu);
                if name.ends_with("running_mean") {
                    t.copy_(&(Tensor::randn(size.as_slice(), opts) * 0.3));
                } else if name.ends_with("running_var") {
                    t.copy_(&(Tensor::rand(size.as_slice(), opts) * 1.5 + 0.5));
                }
            }
        });
        let x = Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu));
        let reference = tch::no_grad(|| enc.forward_t(&x, false));
        let fast = enc.for_inference(InferencePrecision::Float32).forward(&x);
        assert!(max_abs_diff(&fast.regions, &reference.regions) < 1e-5);
        assert!(max_abs_diff(&fast.global, &reference.global) < 1e-5);
    }

    #[test]
    fn folded_float32_close_on_preset_graphs() {
        // The presets' sparse k-NN graphs: rounding may flip a near-tied neighbour (see
        // `complete_graph`), so only closeness is guaranteed.
        let pixels = example_pixels();
        for cfg in [Config::pvig_nano(), Config::pvig_ti()] {
            let (_vs, enc) = calibrated_encoder(&cfg, &pixels, false);
            let reference = tch::no_grad(|| enc.forward_t(&enc.preprocess(&pixels), false));
            let fast = enc.for_inference(InferencePrecision::Float32).encode_pixels(&pixels);
            let dev = max_cosine_deviation(&fast, &reference);
            assert!(dev < 1e-2, "{}: 1 − cos = {dev:e}", cfg.name);
        }
    }

    /// bfloat16 vs the float32 training-form encoder, per region and global vector.
    fn assert_bf16_within_tolerance(cfg: &Config, perturb: bool) {
        let pixels = example_pixels();
        let (_vs, enc) = calibrated_encoder(cfg, &pixels, perturb);
        let reference = tch::no_grad(|| enc.forward_t(&enc.preprocess(&pixels), false));
        let bf16 = enc.for_inference(InferencePrecision::BFloat16);
        assert_eq!(bf16.precision(), InferencePrecision::BFloat16);
        let fast = bf16.encode_pixels(&pixels);
        assert_eq!(fast.regions.kind(), Kind::Float);
        assert_eq!(fast.global.kind(), Kind::Float);
        let dev = max_cosine_deviation(&fast, &reference);
        assert!(dev < 1e-2, "{} (knn_max {}): 1 − cos = {dev:e}", cfg.name, cfg.image.knn_max);
    }

    #[test]
    fn bfloat16_within_tolerance_of_float32() {
        if !cpu_has_native_bf16() {
            println!("skipped: this CPU has no native bfloat16 (avx512_bf16 / amx_bf16 / bf16)");
            return;
        }
        // Arithmetic alone (a graph rounding cannot change), with perturbed parameters.
        for cfg in [complete_graph(Config::pvig_nano()), complete_graph(Config::pvig_ti())] {
            assert_bf16_within_tolerance(&cfg, true);
        }
        // The presets' sparse graphs on the example images.
        for cfg in [Config::pvig_nano(), Config::pvig_ti()] {
            assert_bf16_within_tolerance(&cfg, false);
        }
    }

    #[test]
    fn auto_precision_follows_cpu_support_and_probe() {
        let pixels = example_pixels();
        let (_vs, enc) = calibrated_encoder(&Config::pvig_nano(), &pixels, false);
        let lenient = InferenceOptions { bf16_tolerance: 1.0, ..Default::default() };
        for probe in [None, Some(&pixels)] {
            let built = InferenceImageEncoder::build(&enc, &lenient, probe);
            if cpu_has_native_bf16() {
                assert_eq!(built.precision(), InferencePrecision::BFloat16);
                assert!(built.probe_deviation().is_some_and(|d| (0.0..=1.0).contains(&d)));
            } else {
                assert_eq!(built.precision(), InferencePrecision::Float32);
            }
        }
        let built = InferenceImageEncoder::build(&enc, &InferenceOptions::default(), Some(&pixels));
        if let Some(dev) = built.probe_deviation() {
            assert!(dev <= 1e-2, "Auto kept bfloat16 with 1 − cos = {dev:e}");
        }
        let strict = InferenceOptions { bf16_tolerance: -1.0, ..Default::default() };
        let built = InferenceImageEncoder::build(&enc, &strict, None);
        assert_eq!(built.precision(), InferencePrecision::Float32, "a tolerance nothing meets falls back");
        let forced = InferenceImageEncoder::build(
            &enc,
            &InferenceOptions::with_precision(InferencePrecision::Float32),
            None,
        );
        assert_eq!((forced.precision(), forced.probe_deviation()), (InferencePrecision::Float32, None));
    }

    #[test]
    fn inference_encoder_is_a_snapshot_and_records_no_graph() {
        let (vs, enc) = calibrated_encoder(&Config::pvig_nano(), &example_pixels(), true);
        let fast = enc.for_inference(InferencePrecision::Float32);
        let x = Tensor::randn([1, 3, 224, 224], (Kind::Float, Device::Cpu));
        let before = fast.forward(&x);
        assert!(!before.regions.requires_grad() && !before.global.requires_grad());
        tch::no_grad(|| {
            for (_, mut t) in vs.variables() {
                let _ = t.zero_();
            }
        });
        assert!(fast.forward(&x).regions.equal(&before.regions));
    }

    #[test]
    fn fusion_ablation_is_supported() {
        let mut cfg = complete_graph(Config::pvig_nano());
        cfg.image.multi_level_fusion = false;
        let (_vs, enc) = calibrated_encoder(&cfg, &example_pixels(), true);
        let x = Tensor::randn([1, 3, 224, 224], (Kind::Float, Device::Cpu));
        let reference = tch::no_grad(|| enc.forward_t(&x, false));
        let fast = enc.for_inference(InferencePrecision::Float32).forward(&x);
        assert!(max_abs_diff(&fast.regions, &reference.regions) < 1e-5);
    }

    #[test]
    fn synthetic_probe_is_valid_pixels() {
        let chips = synthetic_chips(2, 224, Device::Cpu);
        assert_eq!(chips.size(), [2, 3, 224, 224]);
        assert_eq!(chips.kind(), Kind::Uint8);
        assert!(chips.to_kind(Kind::Float).std(false).double_value(&[]) > 10.0);
    }
}
