//! `acf-index query`.

use std::io::Write;

use anyhow::{Context, Result, bail};

use super::UsageError;
use super::args::QueryArgs;
use crate::search::{Filters, QueryOptions, search};

/// Runs `query`: prints results on stdout, optionally writes an HTML page and thumbnails.
pub fn query(args: QueryArgs) -> Result<()> {
    let (results, image_size) = search_and_print(&args)?;
    write_pictures(&results, &args, image_size)
}

/// `query` without the pictures: searches and prints the results on stdout; returns them
/// and the model's chip size.
pub fn search_and_print(args: &QueryArgs) -> Result<(Vec<crate::search::QueryResult>, usize)> {
    let queries: Vec<String> = match (&args.text, &args.queries) {
        (Some(t), _) => vec![t.clone()],
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read --queries {}", file.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect(),
        (None, None) => bail!("give a query text or --queries FILE"),
    };
    if queries.is_empty() {
        bail!("no query in {}", args.queries.as_ref().map_or(String::new(), |p| p.display().to_string()));
    }
    if let (Some(since), Some(until)) = (args.since, args.until)
        && since > until
    {
        return Err(UsageError("--since is later than --until: no chip can match".into()).into());
    }
    let mut candidates = args.candidates;
    if args.top_k > args.candidates && !args.exhaustive {
        tracing::warn!(
            "--top-k {} is larger than --candidates {}: stage 1 keeps {} candidates instead",
            args.top_k,
            args.candidates,
            args.top_k
        );
        candidates = args.top_k;
    }
    let model = super::model_arg::load_query_model(&args.model)?;
    let opts = QueryOptions {
        top_k: args.top_k as usize,
        candidates: candidates as usize,
        filters: Filters {
            bbox: args.bbox,
            scenes: Filters::scene_globs(&args.scene)?,
            since_us: args.since,
            until_us: args.until,
            collections: args.collection.clone(),
        },
        exhaustive: args.exhaustive,
        strict: args.strict,
    };
    let results = search(&model, &args.index, &queries, &opts)?;
    for r in &results {
        if !r.mappings.is_empty() {
            let how: Vec<String> = r.mappings.iter().map(ToString::to_string).collect();
            tracing::info!("\"{}\": read as \"{}\" ({})", r.query, r.tokens.join(" "), how.join(", "));
        }
        if !r.unknown_words.is_empty() {
            tracing::warn!(
                "\"{}\": words not in the model's vocabulary and not mappable (left out): {}",
                r.query,
                r.unknown_words.join(", ")
            );
        }
        tracing::info!(
            query = %r.query,
            chips = r.chips_scanned,
            scored = r.scored,
            stage1_ms = format!("{:.1}", r.stage1_ms),
            stage2_ms = format!("{:.1}", r.stage2_ms),
            "searched"
        );
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    crate::search::output::write(&results, args.format.into(), &mut out)?;
    out.flush().ok();
    Ok((results, model.config.image.image_size as usize))
}

#[cfg(feature = "gdal")]
fn write_pictures(results: &[crate::search::QueryResult], args: &QueryArgs, size: usize) -> Result<()> {
    if let Some(dir) = &args.thumbnails {
        let files = crate::search::thumbnails::write_thumbnails(results, dir, size)?;
        tracing::info!("wrote {} thumbnails into {}", files.len(), dir.display());
    }
    if let Some(path) = &args.html {
        let page = crate::search::thumbnails::html_page(results, &args.index, size);
        crate::files::write_atomic(path, page.as_bytes())?;
        tracing::info!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(not(feature = "gdal"))]
fn write_pictures(_results: &[crate::search::QueryResult], args: &QueryArgs, _size: usize) -> Result<()> {
    if args.thumbnails.is_some() || args.html.is_some() {
        bail!(
            "--html and --thumbnails cut chips from scenes with GDAL: this build has no GDAL (cargo feature `gdal`)"
        );
    }
    Ok(())
}

/// Runs `bench query`.
pub fn bench_query(
    chips: &[usize],
    dir: &std::path::Path,
    candidates: usize,
    warm_runs: usize,
    query: &str,
    model: &super::args::ModelArgs,
    json: bool,
) -> Result<()> {
    let model = super::model_arg::load_query_model(model)?;
    if !json {
        println!(
            "{:>7}  {:>8}  {:>10}  {:>5}  {:>10}  {:>10}  {:>10}  {:>8}  {:>9}",
            "mode",
            "chips",
            "candidates",
            "cache",
            "stage1 ms",
            "stage2 ms",
            "total ms",
            "p99 ms",
            "peak RSS"
        );
    }
    for &n in chips {
        let index_dir = dir.join(format!("synthetic-{n}"));
        let start = std::time::Instant::now();
        crate::search::bench::synthetic_index(&model, &index_dir, n)?;
        tracing::info!(
            "synthetic index of {n} chips ready in {:.1} s: {}",
            start.elapsed().as_secs_f64(),
            index_dir.display()
        );
        for row in crate::search::bench::bench_query(&model, &index_dir, n, query, candidates, warm_runs)? {
            if json {
                println!("{}", serde_json::to_string(&row)?);
            } else {
                let ms = |v: f64| if v.is_nan() { "-".to_string() } else { format!("{v:.1}") };
                println!(
                    "{:>7}  {:>8}  {:>10}  {:>5}  {:>10}  {:>10}  {:>10.1}  {:>8}  {:>9}",
                    row.mode,
                    row.chips,
                    row.candidates,
                    row.cache,
                    ms(row.stage1_ms),
                    ms(row.stage2_ms),
                    row.total_ms,
                    row.p99_ms.map_or("-".into(), |p| format!("{p:.1}")),
                    row.peak_rss_mib.map_or("-".into(), |m| format!("{m:.0} MiB"))
                );
            }
        }
    }
    Ok(())
}

/// Runs `rerank`: the chip ids of `chips` ranked by S.
pub fn rerank(
    text: &str,
    index: &std::path::Path,
    chips: &std::path::Path,
    top_k: usize,
    strict: bool,
    format: super::args::FormatArg,
    model: &super::args::ModelArgs,
) -> Result<()> {
    let list = if chips == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read chip ids from stdin")?
    } else {
        std::fs::read_to_string(chips).with_context(|| format!("cannot read --chips {}", chips.display()))?
    };
    let ids: Vec<String> = list
        .lines()
        .map(|l| l.split(',').next().unwrap_or_default().trim().trim_matches('"').to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#') && l != "chip_id")
        .collect();
    if ids.is_empty() {
        bail!("no chip ids in {}", chips.display());
    }
    let model = super::model_arg::load_query_model(model)?;
    let result = crate::search::rerank::rerank(&model, index, text, &ids, top_k, strict)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    crate::search::output::write(&[result], format.into(), &mut out)?;
    out.flush()?;
    Ok(())
}

/// Runs `serve` until SIGINT/SIGTERM.
pub fn serve(args: super::args::ServeArgs) -> Result<()> {
    let model = super::model_arg::load_query_model(&args.model)?.resident();
    tracing::info!(model = %model.dir.display(), fingerprint = crate::model::ModelIdentity::short_fingerprint(&model), "model loaded");
    let opts = crate::serve::ServeOptions {
        index: args.index.clone(),
        addr: args.addr,
        refresh: std::time::Duration::from_secs_f64(args.refresh),
        limits: crate::serve::Limits {
            max_k: args.max_k as usize,
            max_candidates: args.max_candidates as usize,
            concurrent_searches: args.concurrent as usize,
            ..crate::serve::Limits::default()
        },
    };
    if !args.addr.ip().is_loopback() {
        tracing::warn!("listening on {}: every host that can reach it can search this index", args.addr);
    }
    crate::serve::serve(model, &opts, |addr| {
        // One line on stdout a script can wait for (the port when --addr asked for 0).
        println!("listening on http://{addr}/");
        let _ = std::io::stdout().flush();
    })
    .with_context(|| format!("cannot serve {}", args.index.display()))
}
