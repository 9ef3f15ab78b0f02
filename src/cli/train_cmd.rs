//! `acf-index train` and `acf-index eval`.

use anyhow::{Context, Result};

use super::args::{EvalArgs, TrainArgs};
use super::model_arg::load_model;
use crate::data::dataset::Dataset;
use crate::model::Config;
use crate::train::evaluate::{EvalSet, encode_images, score_all};
use crate::train::loader::load_split_subset;
use crate::train::metrics::Recall;
use crate::train::{TrainOptions, train as run_training};

pub fn train(args: TrainArgs) -> Result<()> {
    crate::device::retain_freed_memory();
    let mut config = Config::preset_or_file(&args.config)?;
    let t = &mut config.training;
    if let Some(v) = args.epochs {
        t.epochs = v;
    }
    if let Some(v) = args.batch_size {
        t.batch_size = v;
    }
    if let Some(v) = args.lr {
        t.learning_rate = v;
    }
    if let Some(v) = args.seed {
        t.seed = v;
    }
    if let Some(c) = args.correction {
        config.scoring.correction = c.into();
    }
    let interrupt = super::interrupt::install(
        "interrupt: saving a checkpoint after this batch (a second signal aborts)",
    )?;
    let opts = TrainOptions {
        datasets: args.datasets,
        images_dir: args.images,
        config,
        out: args.out.clone(),
        resume: args.resume,
        skip_bad: args.skip_bad,
        device: args.device.resolve()?,
        val_images: (args.val_images > 0).then_some(args.val_images),
        checkpoint_minutes: args.checkpoint_minutes,
        stop_after_epochs: args.stop_after,
        init_from: args.init_from,
        keep_epochs: args.keep_epochs,
    };
    let summary = run_training(&opts, interrupt)?;
    if !summary.skipped.is_empty() {
        super::say(&format!("skipped {} bad item(s) (--skip-bad):", summary.skipped.len()));
        for s in &summary.skipped {
            super::say(&format!("  {s}"));
        }
    }
    let s = &summary.state;
    if summary.interrupted {
        println!(
            "interrupted at epoch {} batch {}; resume with: acf-index train --resume --out {} --dataset …",
            s.epoch + 1,
            s.next_batch,
            args.out.display()
        );
    } else {
        println!(
            "trained {} epoch(s); best validation mR {:.2} at epoch {}; model in {}",
            s.epoch,
            s.best_val_mr,
            s.best_epoch,
            args.out.display()
        );
    }
    Ok(())
}

pub fn eval(args: EvalArgs) -> Result<()> {
    crate::device::retain_freed_memory();
    let mut loaded = load_model(&args.model)?;
    if let Some(views) = args.views {
        loaded.model.config.image.test_time_views = views;
    }
    let model = &loaded.model;
    let datasets: Vec<Dataset> =
        args.dataset.iter().map(|p| Dataset::load(p, args.images.as_deref())).collect::<Result<_, _>>()?;
    // --sample: every len/N-th image (the figure page's own spread), so a subset keeps every
    // class of a dataset that lists its images class by class; --max-images: the first N.
    // Only the chosen images are decoded.
    let (sample, first) = (args.sample, args.max_images);
    let pick = move |n: usize| match (sample, first) {
        (Some(k), _) => crate::train::figure::spread(n, k as usize, false),
        (None, Some(k)) => (0..k.min(n)).collect(),
        (None, None) => (0..n).collect(),
    };
    let max_tokens = model.config.text.max_tokens as usize;
    let (images, _) = load_split_subset(&datasets, &args.split, &model.vocab, max_tokens, false, pick)?;
    let set = EvalSet::new(&images, model.config.image.image_size as u32, None);
    let feats = encode_images(model, &set, 32);
    let mut rows: Vec<(String, Recall)> = Vec::new();
    let mut variants = crate::train::evaluate::scoring_variants(&model.config.scoring, args.ablate);
    for sweep in &args.sweep {
        variants.extend(sweep.variants(&model.config.scoring));
    }
    for (_, cfg) in &variants {
        crate::model::prior::require(&loaded.dir, cfg, model.prior.as_ref())?;
    }
    for (k, (name, cfg)) in variants.into_iter().enumerate() {
        let scores = score_all(model, &set, &feats, &cfg);
        rows.push((name, set.recall(&scores)));
        if let (0, Some(path)) = (k, &args.figure) {
            let title = format!(
                "model {} ({}), {} split '{}', {} images, {} captions; scoring: {}",
                model.config.name,
                loaded.short_fingerprint(),
                datasets.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(" + "),
                args.split,
                set.images(),
                set.captions.len(),
                serde_json::to_string(&cfg)?
            );
            let page = crate::train::figure::FigureData {
                images: &images[..set.images()],
                set: &set,
                vocab: &model.vocab,
                scores: &scores,
                title,
            }
            .page(args.figure_count as usize)?;
            crate::files::write_atomic(path, page.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!("wrote {}", path.display());
        }
    }
    let names: Vec<String> = datasets.iter().map(|d| d.name.clone()).collect();
    if args.json {
        let out = serde_json::json!({
            "model": loaded.dir, "fingerprint": loaded.fingerprint, "datasets": names, "split": args.split,
            "images": set.images(), "captions": set.captions.len(),
            "views": model.config.image.test_time_views,
            "rows": rows.iter().map(|(n, r)| serde_json::json!({"method": n, "recall": r})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} split '{}': {} images, {} captions (model {}, {}; {} view(s) per image)",
        names.join(" + "),
        args.split,
        set.images(),
        set.captions.len(),
        model.config.name,
        loaded.short_fingerprint(),
        model.config.image.test_time_views
    );
    println!("{:<30} | {:^23} | {:^23} |", "", "Sentence retrieval", "Image retrieval");
    println!(
        "{:<30} | {:>7}{:>8}{:>8} | {:>7}{:>8}{:>8} | {:>7}",
        "Method", "R@1", "R@5", "R@10", "R@1", "R@5", "R@10", "mR"
    );
    for (name, r) in rows {
        println!(
            "{:<30} | {:>7.2}{:>8.2}{:>8.2} | {:>7.2}{:>8.2}{:>8.2} | {:>7.2}",
            name, r.i2t[0], r.i2t[1], r.i2t[2], r.t2i[0], r.t2i[1], r.t2i[2], r.mr
        );
    }
    Ok(())
}
