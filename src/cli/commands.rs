//! One function per subcommand: validate, call the library, print.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tch::Device;

use super::args::{BenchCommand, Command, ModelArgs, ModelCommand};
use crate::bench::{BenchOptions, bench_model};
use crate::data::dataset::Dataset;
use crate::device::device_name;
use crate::model::model_dir;
use crate::model::{AcfModel, Config, Vocab};

/// Runs one subcommand; returns the exit code of a command that finished.
pub fn dispatch(command: Command) -> Result<i32> {
    use super::exit::OK;
    match command {
        Command::Doctor { json } => doctor(json).map(|_| OK),
        Command::Model(ModelCommand::Init { config, vocab_from, out, seed, force }) => {
            model_init(&config, &vocab_from, &out, seed, force).map(|_| OK)
        }
        Command::Model(ModelCommand::Average { models, out, force }) => {
            model_average(&models, &out, force).map(|_| OK)
        }
        Command::Model(ModelCommand::Info { model, json }) => model_info(&model, json).map(|_| OK),
        Command::Model(ModelCommand::Calibrate { model, dataset, split, bank }) => {
            model_calibrate(&model, &dataset, &split, bank).map(|_| OK)
        }
        Command::Rank { text, images, model, json } => rank(&text, &images, &model, json).map(|_| OK),
        Command::Train(args) => super::train_cmd::train(args).map(|_| OK),
        Command::Eval(args) => super::train_cmd::eval(args).map(|_| OK),
        Command::Index(args) => super::index_cmd::index(args),
        Command::Query(args) => super::query_cmd::query(args).map(|_| OK),
        Command::Compact { index, target_mib, dry_run, json } => {
            super::index_cmd::compact(&index, target_mib, dry_run, json).map(|_| OK)
        }
        Command::Serve(args) => super::query_cmd::serve(args).map(|_| OK),
        Command::Info { index, json } => super::index_cmd::info(&index, json).map(|_| OK),
        Command::Bench(BenchCommand::Query {
            chips,
            dir,
            candidates,
            warm_runs,
            query,
            model,
            json,
            stage1_chips,
        }) => {
            super::query_cmd::bench_query(&chips, &dir, candidates, warm_runs, &query, &model, json)?;
            if let Some(n) = stage1_chips {
                let ms = crate::search::bench::bench_stage1_in_memory(n, 512, candidates, warm_runs);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"mode": "served-stage1-in-memory", "chips": n, "synthetic": true, "stage1_ms": ms})
                    );
                } else {
                    println!(
                        "stage 1 as served, {n} synthetic in-memory vectors (512 floats): {ms:.1} ms (median)"
                    );
                }
            }
            Ok(OK)
        }
        Command::Bench(BenchCommand::Index { scene, model, batch, readers, min_seconds, json }) => {
            super::index_cmd::bench_index(&scene, &model, batch, readers, min_seconds, json).map(|_| OK)
        }
        Command::Embed { text, format, model } => embed(&text, format, &model).map(|_| OK),
        Command::Rerank { text, index, chips, top_k, strict, format, model } => {
            super::query_cmd::rerank(&text, &index, &chips, top_k as usize, strict, format, &model)
                .map(|_| OK)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = super::args::Cli::command();
            clap_complete::generate(shell, &mut cmd, "acf-index", &mut std::io::stdout());
            Ok(OK)
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(super::args::Cli::command()).render(&mut std::io::stdout())?;
            Ok(OK)
        }
        Command::Bench(BenchCommand::Model { configs, batches, device, min_seconds, json }) => {
            bench(&configs, &batches, device.resolve()?, min_seconds, json).map(|_| OK)
        }
        Command::Bench(BenchCommand::Devices(args)) => bench_devices(&args),
    }
}

fn doctor(json: bool) -> Result<()> {
    let report = crate::doctor::collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// Refuses an existing, non-empty output directory unless `force`, and even then one that
/// holds more than a model: `--force` replaces the directory as a whole.
fn refuse_non_empty(out: &Path, force: bool) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        bail!("{}: exists and is not a directory", out.display());
    }
    let names: Vec<String> = std::fs::read_dir(out)
        .with_context(|| format!("{}: cannot list", out.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    if !force {
        bail!("{}: already exists and is not empty (use --force to overwrite)", out.display());
    }
    if let Some(other) = names.iter().find(|n| !model_dir::is_model_file(n)) {
        bail!(
            "{}: --force replaces a model directory as a whole, and this one also holds '{other}' \
             (move it away or choose another --out)",
            out.display()
        );
    }
    Ok(())
}

fn model_init(
    config: &str,
    vocab_from: &[std::path::PathBuf],
    out: &Path,
    seed: i64,
    force: bool,
) -> Result<()> {
    refuse_non_empty(out, force)?;
    let mut config = Config::preset_or_file(config)?;
    crate::model::prior::drop_weight(&mut config, "the new model");
    let mut captions: Vec<String> = Vec::new();
    let mut sources = Vec::new();
    for json in vocab_from {
        let ds = Dataset::load(json, None)?;
        sources.push(format!("{} ({} images)", ds.name, ds.samples.len()));
        captions.extend(ds.captions().map(String::from));
    }
    if captions.is_empty() {
        bail!("the datasets given to --vocab-from hold no captions");
    }
    let vocab = Vocab::build(captions.iter().map(String::as_str), config.text.vocab_min_count);
    tch::manual_seed(seed);
    let model = AcfModel::new(config, vocab, Device::Cpu);
    let card = init_card(&model, &sources, seed);
    let fingerprint = model_dir::save_whole(&model, out, &card)?;
    println!(
        "created untrained {} model in {} ({} trainable parameters, {} words, fingerprint {})",
        model.config.name,
        out.display(),
        model.trainable_parameters(),
        model.vocab.len(),
        crate::files::short_fingerprint(&fingerprint)
    );
    Ok(())
}

fn model_average(models: &[std::path::PathBuf], out: &Path, force: bool) -> Result<()> {
    refuse_non_empty(out, force)?;
    if models.iter().any(|m| same_path(m, out)) {
        bail!("{}: is one of the models being averaged; choose another --out", out.display());
    }
    let averaged = crate::model::average::average_models(models)?;
    let card = average_card(&averaged);
    let fingerprint = model_dir::save_whole(&averaged.model, out, &card)?;
    println!(
        "averaged {} models into {} (fingerprint {})",
        averaged.sources.len(),
        out.display(),
        crate::files::short_fingerprint(&fingerprint)
    );
    Ok(())
}

/// Whether two paths name the same file or directory (when both exist).
fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn average_card(averaged: &crate::model::average::Averaged) -> String {
    let sources: String = averaged
        .sources
        .iter()
        .map(|(dir, fp)| {
            format!("- `{}` (fingerprint `{}`)\n", dir.display(), crate::files::short_fingerprint(fp))
        })
        .collect();
    format!(
        "# Model card: {name} (averaged)\n\n\
         Created by `acf-index model average`: every weight and BatchNorm statistic is the\n\
         uniform mean of these {n} models' (config.json and vocabulary from the first):\n\n\
         {sources}\n\
         - Weights fingerprint (sha256 of model.safetensors): `{{fingerprint}}`\n\
         - acf-index version: {version}\n\n\
         Its retrieval quality is not the sources': measure it with `acf-index eval --split val`.\n",
        name = averaged.model.config.name,
        n = averaged.sources.len(),
        version = env!("CARGO_PKG_VERSION"),
    )
}

fn init_card(model: &AcfModel, sources: &[String], seed: i64) -> String {
    format!(
        "# Model card: {name} (untrained)\n\n\
         Created by `acf-index model init` with seed {seed}. The weights are a random\n\
         initialisation: this model does not retrieve anything meaningful until it is trained.\n\n\
         - Config: `{name}` (see config.json)\n\
         - Trainable parameters: {params}\n\
         - Vocabulary: {words} words from {sources}\n\
         - Weights fingerprint (sha256 of model.safetensors): `{{fingerprint}}`\n\
         - acf-index version: {version}\n",
        name = model.config.name,
        params = model.trainable_parameters(),
        words = model.vocab.len(),
        sources = sources.join(", "),
        version = env!("CARGO_PKG_VERSION"),
    )
}

/// Runs `embed`: the query's global vector as JSON or a SQL literal.
pub fn embed(text: &str, format: super::args::EmbedFormat, model: &ModelArgs) -> Result<()> {
    let loaded = super::model_arg::load_query_model(model)?;
    let e = crate::search::embed::embed(&loaded, text)?;
    if !e.unknown.is_empty() {
        tracing::warn!("words not in the model's vocabulary (ignored): {}", e.unknown.join(", "));
    }
    match format {
        super::args::EmbedFormat::Json => println!("{}", serde_json::to_string(&e)?),
        super::args::EmbedFormat::Sql => println!("{}", e.sql_literal()),
    }
    Ok(())
}

fn model_calibrate(
    args: &ModelArgs,
    datasets: &[std::path::PathBuf],
    split: &str,
    bank: usize,
) -> Result<()> {
    use crate::model::prior::PRIOR_FILE;
    // The prior being replaced may be the reason the model does not load (other weights):
    // load without it, as calibration does not need it.
    let loaded = super::model_arg::load_model_without_prior(args)?;
    let scoring = &loaded.model.config.scoring;
    if bank == 0 && scoring.hubness_prior > 0.0 && scoring.hubness_sharpness > 0.0 {
        bail!(
            "--bank 0: {}'s config.json scores with hubness_sharpness {}, which needs a caption bank; give --bank > 0 or set hubness_sharpness to 0 first",
            loaded.dir.display(),
            scoring.hubness_sharpness
        );
    }
    let datasets: Vec<Dataset> = datasets.iter().map(|p| Dataset::load(p, None)).collect::<Result<_, _>>()?;
    let prior =
        crate::train::calibrate::hubness_prior(&loaded.model, &loaded.fingerprint, &datasets, split, bank)?;
    let path = loaded.dir.join(PRIOR_FILE);
    crate::files::write_atomic(&path, &prior.to_bytes()?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let norm = prior.text_mean.iter().map(|v| v * v).sum::<f32>().sqrt();
    println!(
        "wrote {} (mean of {} '{split}' captions, |t̄| = {norm:.3}, bank of {}; weights {}); scoring.hubness_prior = {}, hubness_sharpness = {} in config.json",
        path.display(),
        prior.captions,
        prior.bank_rows(),
        loaded.short_fingerprint(),
        loaded.model.config.scoring.hubness_prior,
        loaded.model.config.scoring.hubness_sharpness
    );
    Ok(())
}

fn model_info(args: &ModelArgs, json: bool) -> Result<()> {
    let loaded = super::model_arg::load_model(args)?;
    let m = &loaded.model;
    if json {
        let info = serde_json::json!({
            "dir": loaded.dir,
            "fingerprint": loaded.fingerprint,
            "trainable_parameters": m.trainable_parameters(),
            "vocabulary_words": m.vocab.len(),
            "prior_captions": m.prior.as_ref().map(|p| p.captions),
            "prior_bank": m.prior.as_ref().map(|p| p.bank_rows()),
            "config": m.config,
        });
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        let s = &m.config.scoring;
        println!("model        {}", loaded.dir.display());
        println!("config       {}", m.config.name);
        println!("fingerprint  {}", loaded.fingerprint);
        println!("parameters   {} trainable", m.trainable_parameters());
        println!("vocabulary   {} words", m.vocab.len());
        println!(
            "backbone     blocks {:?}, channels {:?}, D = {}",
            m.config.image.blocks, m.config.image.channels, m.config.embed_dim
        );
        println!(
            "scoring      λ = {}, p = {}, q = {}, correction {:?}, filtering {}, global {} (weight {}), hubness prior {}",
            s.lambda,
            s.p,
            s.q,
            s.correction,
            s.filtering,
            s.global_component,
            s.global_weight,
            match &m.prior {
                Some(p) => format!(
                    "{} (t̄ of {} captions, bank of {}, sharpness {})",
                    s.hubness_prior,
                    p.captions,
                    p.bank_rows(),
                    s.hubness_sharpness
                ),
                None => "none".to_string(),
            }
        );
    }
    Ok(())
}

fn rank(text: &str, images: &[std::path::PathBuf], args: &ModelArgs, json: bool) -> Result<()> {
    crate::device::retain_freed_memory();
    let loaded = super::model_arg::load_model(args)?;
    let ranking = crate::search::rank::rank_images(&loaded.model, text, images)?;
    if !ranking.unknown_words.is_empty() {
        tracing::warn!("words not in the model's vocabulary (ignored): {}", ranking.unknown_words.join(", "));
    }
    for e in &ranking.unreadable {
        tracing::error!("{e}");
    }
    if !json {
        println!("{:>4}  {:>8}  {:>8}  image", "rank", "S", "sim_g");
    }
    for (rank, r) in ranking.ranked.iter().enumerate() {
        if json {
            let row =
                serde_json::json!({"rank": rank + 1, "score": r.score, "sim_g": r.sim_g, "image": r.image});
            println!("{row}");
        } else {
            println!("{:>4}  {:>8.4}  {:>8.4}  {}", rank + 1, r.score, r.sim_g, r.image);
        }
    }
    Ok(())
}

fn bench(configs: &[String], batches: &[i64], device: Device, min_seconds: f64, json: bool) -> Result<()> {
    crate::device::retain_freed_memory();
    let opts = BenchOptions {
        min_time: Duration::from_secs_f64(min_seconds.max(0.0)),
        batches: batches.to_vec(),
        ..Default::default()
    };
    if !json {
        println!(
            "device {}, {} CPU threads, libtorch {}",
            device_name(device),
            tch::get_num_threads(),
            env!("ACF_LIBTORCH_BUILD_VERSION")
        );
        println!("{:<10} {:<42} {:>12}", "config", "measurement", "throughput");
    }
    for name in configs {
        let cfg = Config::preset_or_file(name)?;
        bench_model(&cfg, device, &opts, |row| {
            if json {
                println!("{}", serde_json::to_string(row).unwrap_or_default());
            } else {
                println!("{:<10} {:<42} {:>12} {}", row.config, row.what, row.formatted_value(), row.unit);
            }
        });
    }
    Ok(())
}

fn bench_devices(args: &super::args::DevicesArgs) -> Result<i32> {
    let device = args.device.resolve()?;
    let model = match &args.config {
        Some(name) => {
            tch::manual_seed(0);
            let cfg = Config::preset_or_file(name)?;
            let vocab = Vocab::build(["a red roof beside a green field near the water with many trees"], 1);
            AcfModel::new(cfg, vocab, Device::Cpu)
        }
        None => {
            super::model_arg::load_model(&ModelArgs {
                model: args.model.clone(),
                device: crate::device::DeviceChoice::Cpu,
            })?
            .model
        }
    };
    let rows = crate::train::device_check::compare(&model, device, args.batch)?;
    if !args.json {
        println!("{} ({}) against the CPU, batch {}", device_name(device), model.config.name, args.batch);
    }
    for r in &rows {
        if args.json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            let limit = r.limit.map_or("(reported)".to_string(), |l| format!("≤ {l:.0e}"));
            println!("{:<4} {:<62} {:>10.2e} {limit}", if r.pass { "ok" } else { "FAIL" }, r.what, r.value);
        }
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    if failed > 0 {
        eprintln!("error: {failed} of {} device checks failed", rows.len());
        return Ok(super::exit::FAILED);
    }
    Ok(super::exit::OK)
}
