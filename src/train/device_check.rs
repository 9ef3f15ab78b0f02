//! `acf-index bench devices`: does the model compute the same thing on an accelerator as on
//! the CPU? One model's weights on both devices, the same inputs: image features (plain and
//! BN-folded float32, bfloat16 reported), scores S, and one training step (loss, gradient
//! norm, and the direction of the parameter update). Each row has a limit; the command fails
//! when one is exceeded, so a GPU run can stop before it trains on a broken device.

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::adam::Adam;
use super::loader::Batch;
use super::trainer::train_step;
use crate::model::inference::max_cosine_deviation;
use crate::model::{AcfModel, ImageFeatures, InferenceOptions, InferencePrecision};

/// One comparison of the device against the CPU.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub what: String,
    /// The measured difference (its unit is in `what`).
    pub value: f64,
    /// The largest difference accepted; `None` for rows only reported (bfloat16).
    pub limit: Option<f64>,
    pub pass: bool,
}

fn row(what: impl Into<String>, value: f64, limit: Option<f64>) -> CheckRow {
    let pass = limit.is_none_or(|l| value.is_finite() && value <= l);
    CheckRow { what: what.into(), value, limit, pass }
}

fn to_cpu(f: &ImageFeatures) -> ImageFeatures {
    ImageFeatures { regions: f.regions.to_device(Device::Cpu), global: f.global.to_device(Device::Cpu) }
}

/// Mean and worst 1 − cos of region and global features, as two rows (the mean gated by `limit`).
fn push_features(
    rows: &mut Vec<CheckRow>,
    what: &str,
    a: &ImageFeatures,
    b: &ImageFeatures,
    limit: Option<f64>,
) {
    let cos = |x: &Tensor, y: &Tensor| {
        Tensor::cosine_similarity(&x.to_kind(Kind::Double), &y.to_kind(Kind::Double), -1, 1e-12)
            .flatten(0, -1)
    };
    let all = Tensor::cat(&[cos(&a.regions, &b.regions), cos(&a.global, &b.global)], 0);
    let mean = 1.0 - all.mean(Kind::Double).double_value(&[]);
    rows.push(row(format!("{what}, mean 1 − cos"), mean.max(0.0), limit));
    rows.push(row(format!("{what}, worst chip 1 − cos"), max_cosine_deviation(a, b), None));
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_device(Device::Cpu).to_kind(Kind::Double) - b.to_device(Device::Cpu).to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// All trainable parameters of a model, flattened into one CPU vector (sorted by name).
fn flat_parameters(model: &AcfModel) -> Tensor {
    let mut vars: Vec<(String, Tensor)> =
        model.var_store().variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let parts: Vec<Tensor> = vars
        .iter()
        .map(|(_, t)| t.detach().to_device(Device::Cpu).to_kind(Kind::Double).flatten(0, -1))
        .collect();
    Tensor::cat(&parts, 0)
}

/// Compares `device` against the CPU for `model` (on the CPU) with a batch of `batch` random
/// chips and captions (`model` itself is left as it is: both sides are copies of it).
/// `Err` only when the model cannot be copied to the device.
pub fn compare(model: &AcfModel, device: Device, batch: i64) -> crate::error::Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    // Stochastic depth (`training.drop_path`) draws a different mask on each run of the
    // training step, so the step would compare two random draws, not two devices: both
    // copies are built with it off (it has no weights; the forward passes are the same).
    let mut det = model.config.clone();
    det.training.drop_path = 0.0;
    let cfg = &det;
    let mut on_cpu = AcfModel::new(cfg.clone(), model.vocab.clone(), Device::Cpu);
    on_cpu.var_store_mut().copy(model.var_store())?;
    let model = &on_cpu;
    let mut on_device = AcfModel::new(cfg.clone(), model.vocab.clone(), device);
    on_device.var_store_mut().copy(model.var_store())?;
    tch::manual_seed(7);
    let s = cfg.image.image_size;
    let pixels = Tensor::randint(256, [batch, 3, s, s], (Kind::Uint8, Device::Cpu));
    let vocab = model.vocab.len() as i64;
    let ids = Tensor::randint_low(2, vocab.max(3), [batch, 12], (Kind::Int64, Device::Cpu));
    let lengths = Tensor::randint_low(3, 13, [batch], (Kind::Int64, Device::Cpu));
    let ids =
        ids * Tensor::arange(12, (Kind::Int64, Device::Cpu)).unsqueeze(0).lt_tensor(&lengths.unsqueeze(1));

    {
        let _guard = tch::no_grad_guard();
        // Like against like: each encoder form on the device against the same form on the CPU.
        // The gate is the mean 1 − cos; the worst chip is reported, because a dynamic k-NN
        // graph can swap nearly tied neighbours under any change of float order (a random
        // pvig-ti on noise input does), which says nothing about the device.
        let pixels_dev = pixels.to_device(device);
        let reference = model.encode_pixels(&pixels, false);
        let plain_dev = on_device.encode_pixels(&pixels_dev, false);
        push_features(&mut rows, "image features f32", &to_cpu(&plain_dev), &reference, Some(1e-3));
        for (precision, limit) in
            [(InferencePrecision::Float32, Some(1e-3)), (InferencePrecision::BFloat16, None)]
        {
            let opts = InferenceOptions::with_precision(precision);
            let cpu = model.inference_image_encoder(&opts, None).encode_pixels(&pixels);
            let enc = on_device.inference_image_encoder(&opts, None);
            let f = to_cpu(&enc.encode_pixels(&pixels_dev));
            push_features(
                &mut rows,
                &format!("image features {} BN-folded", precision.name()),
                &f,
                &cpu,
                limit,
            );
        }
        let text = model.encode_ids(&ids, &lengths, false);
        let text_dev = on_device.encode_ids(&ids.to_device(device), &lengths.to_device(device), false);
        rows.push(row("word features, max |Δ|", max_abs_diff(&text.words, &text_dev.words), Some(1e-3)));
        let scores = model.score(&reference, &text);
        let scores_dev = on_device.score(&plain_dev, &text_dev);
        rows.push(row(
            format!("scores S ({batch}×{batch}), max |Δ|"),
            max_abs_diff(&scores, &scores_dev),
            Some(2e-3),
        ));
    }

    // One training step from the same weights and a fresh optimiser on each device.
    let flat = Vec::<u8>::try_from(&pixels.flatten(0, -1)).unwrap_or_default();
    let captions: Vec<Vec<i64>> = (0..batch)
        .map(|i| {
            let n = lengths.int64_value(&[i]);
            (0..n).map(|j| ids.int64_value(&[i, j])).collect()
        })
        .collect();
    let caption_groups = super::loader::caption_groups(captions.iter().map(Vec::as_slice));
    let step_batch = Batch {
        pixels: flat,
        captions,
        image_ids: (0..batch).collect(),
        caption_groups,
        class_groups: (0..batch).collect(),
    };
    let lr = cfg.training.learning_rate;
    let mut results = Vec::new();
    for m in [model, &on_device] {
        let before = flat_parameters(m);
        let mut adam = Adam::new(m.var_store(), &cfg.training);
        let (loss, grad_norm) = train_step(m, &mut adam, &step_batch, &cfg.loss, lr, s);
        results.push((loss, grad_norm, flat_parameters(m) - before));
    }
    let (cpu, dev) = (&results[0], &results[1]);
    let rel = |a: f64, b: f64| (a - b).abs() / a.abs().max(1e-12);
    rows.push(row("training step: loss, relative |Δ|", rel(cpu.0, dev.0), Some(1e-3)));
    rows.push(row("training step: gradient norm, relative |Δ|", rel(cpu.1, dev.1), Some(1e-2)));
    let cos =
        Tensor::cosine_similarity(&cpu.2.unsqueeze(0), &dev.2.unsqueeze(0), 1, 1e-30).double_value(&[0]);
    rows.push(row("training step: parameter update, 1 − cos", 1.0 - cos, Some(1e-2)));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Vocab;

    #[test]
    fn the_cpu_agrees_with_itself_and_every_row_has_a_verdict() {
        let mut cfg = crate::train::trainer::tests::micro_config();
        // Stochastic depth on, as in the shipped model's config: the CPU still agrees with itself.
        cfg.training.drop_path = 0.1;
        let vocab = Vocab::build(["a red roof beside a green field near water"], 1);
        tch::manual_seed(1);
        let model = AcfModel::new(cfg, vocab, Device::Cpu);
        let rows = compare(&model, Device::Cpu, 4).unwrap();
        assert!(rows.len() >= 7, "{rows:?}");
        for r in &rows {
            assert!(r.value.is_finite(), "{r:?}");
            assert!(r.pass, "CPU against CPU must pass: {r:?}");
        }
        assert!(rows.iter().any(|r| r.what.contains("training step")));
    }
}
