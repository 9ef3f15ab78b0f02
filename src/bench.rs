//! `acf-index bench model`: throughput of the encoders and of scoring on one device.
//! A benchmark, not a test: it prints numbers and asserts nothing.

use std::time::{Duration, Instant};

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::model::features::l2_normalize;
use crate::model::inference::{cpu_has_native_bf16, max_cosine_deviation};
use crate::model::{AcfModel, Config, ImageFeatures, InferenceOptions, InferencePrecision, Vocab, scoring};

/// Unit of the accuracy rows: the largest `1 − cos` over region and global features.
pub const DEVIATION_UNIT: &str = "max 1 − cos";

/// One measured row.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// Config name (preset or config.json name).
    pub config: String,
    /// Device the row was measured on.
    pub device: String,
    /// What was measured.
    pub what: String,
    /// Throughput in `unit` per second, or for accuracy rows the deviation in `unit`.
    pub value: f64,
    /// `chips/s`, `captions/s`, `pairs/s`, or [`DEVIATION_UNIT`].
    pub unit: &'static str,
}

impl BenchRow {
    /// The value as printed in the table: one decimal for throughput, scientific for deviations.
    pub fn formatted_value(&self) -> String {
        if self.unit == DEVIATION_UNIT { format!("{:.1e}", self.value) } else { format!("{:.1}", self.value) }
    }
}

/// How long each measurement runs at least (after one warm-up run).
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub min_time: Duration,
    pub min_iters: u32,
    /// Stored chips that one caption is scored against.
    pub stored_chips: i64,
    /// Image encoder batch sizes.
    pub batches: Vec<i64>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            min_time: Duration::from_secs(3),
            min_iters: 2,
            stored_chips: 10_000,
            batches: vec![16, 64],
        }
    }
}

/// Runs `f` once to warm up, then repeatedly; returns calls per second.
fn rate(opts: &BenchOptions, device: Device, mut f: impl FnMut()) -> f64 {
    f();
    sync(device);
    let start = Instant::now();
    let mut n = 0u32;
    while n < opts.min_iters || start.elapsed() < opts.min_time {
        f();
        n += 1;
    }
    sync(device);
    f64::from(n) / start.elapsed().as_secs_f64()
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// A vocabulary of `n` synthetic words, for benchmarking without a dataset.
fn synthetic_vocab(n: usize) -> Vocab {
    let words: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
    Vocab::build(words.iter().map(String::as_str), 1)
}

/// Measures one config on `device`, calling `report` after each row.
pub fn bench_model(
    cfg: &Config,
    device: Device,
    opts: &BenchOptions,
    mut report: impl FnMut(&BenchRow),
) -> Vec<BenchRow> {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(0);
    let model = AcfModel::new(cfg.clone(), synthetic_vocab(3000), device);
    let dev_name = crate::device::device_name(device);
    let mut rows = Vec::new();
    let mut push = |what: String, value: f64, unit: &'static str| {
        let row = BenchRow { config: cfg.name.clone(), device: dev_name.clone(), what, value, unit };
        report(&row);
        rows.push(row);
    };
    // The training-form encoder in eval mode, then the inference encoder (BatchNorm folded)
    // in float32 and, where the hardware has native bfloat16, in bfloat16.
    let mut fast = vec![InferencePrecision::Float32];
    if device != Device::Cpu || cpu_has_native_bf16() {
        fast.push(InferencePrecision::BFloat16);
    }
    let fast: Vec<_> = fast
        .into_iter()
        .map(|p| (p, model.inference_image_encoder(&InferenceOptions::with_precision(p), None)))
        .collect();
    let s = cfg.image.image_size;
    let mut deviations = Vec::new();
    for &batch in &opts.batches {
        let pixels = Tensor::randint(256, [batch, 3, s, s], (Kind::Uint8, device));
        let per_s = rate(opts, device, || {
            let _ = model.encode_pixels(&pixels, false);
        });
        push(format!("image encoder f32 plain, batch {batch}"), per_s * batch as f64, "chips/s");
        for (precision, encoder) in &fast {
            let per_s = rate(opts, device, || {
                let _ = encoder.encode_pixels(&pixels);
            });
            let what = format!("image encoder {} BN-folded, batch {batch}", precision.name());
            push(what, per_s * batch as f64, "chips/s");
        }
        if deviations.is_empty() {
            let reference = model.encode_pixels(&pixels, false);
            for (precision, encoder) in &fast {
                let dev = max_cosine_deviation(&encoder.encode_pixels(&pixels), &reference);
                deviations.push((format!("{} BN-folded vs f32 plain, batch {batch}", precision.name()), dev));
            }
        }
    }
    for (what, dev) in deviations {
        push(what, dev, DEVIATION_UNIT);
    }
    let captions = 128i64;
    let ids = Tensor::randint_low(2, 3000, [captions, 12], (Kind::Int64, device));
    let lengths = Tensor::full([captions], 12, (Kind::Int64, device));
    let per_s = rate(opts, device, || {
        let _ = model.encode_ids(&ids, &lengths, false);
    });
    push(format!("text encoder, batch {captions}"), per_s * captions as f64, "captions/s");

    let n = opts.stored_chips;
    let d = cfg.embed_dim;
    let stored = ImageFeatures {
        regions: l2_normalize(&Tensor::randn([n, cfg.regions(), d], (Kind::Float, device)), -1),
        global: l2_normalize(&Tensor::randn([n, d], (Kind::Float, device)), -1),
    };
    let text = model.encode_ids(&ids.narrow(0, 0, 1), &lengths.narrow(0, 0, 1), false);
    let per_s = rate(opts, device, || {
        let _ = scoring::score_matrix_chunked(&stored, &text, &cfg.scoring, 2048);
    });
    push(format!("scoring S, 1 caption × {n} chips"), per_s * n as f64, "pairs/s");
    rows
}
