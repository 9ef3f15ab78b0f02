//! `acf-index index` and `acf-index info`.

use std::path::Path;

use anyhow::{Context, Result};

use super::args::IndexArgs;

/// Runs `index`; the exit code says whether every scene succeeded.
#[cfg(feature = "gdal")]
pub fn index(args: IndexArgs) -> Result<i32> {
    use std::io::IsTerminal;

    use anyhow::Context;

    use super::exit;

    use crate::index::{IndexOptions, Inputs};
    use crate::raster::scene::ReadOptions;

    if args.paths.is_empty() && args.from_list.is_none() && args.stac.is_empty() {
        anyhow::bail!("nothing to index: give scene files or folders, --from-list FILE or --stac CATALOG");
    }
    // Before the model loads (a second or more): a SIGTERM from the scheduler during start-up
    // is an interrupt too, not a kill.
    let interrupt = super::interrupt::install(
        "interrupt: stopping; scenes in flight are dropped, nothing partial is published (a second signal aborts)",
    )?;
    let model = super::model_arg::load_model(&args.model)?;
    let opts = IndexOptions {
        inputs: Inputs {
            paths: args.paths,
            from_list: args.from_list,
            include: args.include,
            exclude: args.exclude,
            shard: args.shard,
        },
        out: args.out.clone(),
        read: ReadOptions { bands: args.bands, scale: args.scale },
        stride: args.stride as usize,
        gsd: args.gsd,
        min_valid: args.min_valid,
        batch: args.batch as usize,
        readers: args.readers as usize,
        nodes_dtype: args.nodes_dtype.map(Into::into),
        verify: args.verify,
        new_model: args.new_model,
        prune: args.prune,
        stac: args.stac,
        progress: std::io::stderr().is_terminal(),
    };
    let summary = crate::index::run(&model, &opts, interrupt)
        .with_context(|| format!("cannot index into {}", args.out.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{} scenes: {} indexed, {} already indexed, {} failed; {} chips ({} under --min-valid) in {:.1} s, {:.1} chips/s on {}, peak RSS {}",
            summary.scenes,
            summary.indexed,
            summary.skipped,
            summary.failed,
            summary.chips,
            summary.chips_low_valid,
            summary.seconds,
            summary.chips_per_s,
            summary.device,
            summary.peak_rss_mib.map_or("-".into(), |m| format!("{m:.0} MiB")),
        );
        if summary.pruned > 0 {
            println!("{} scene(s) whose source is gone removed (--prune)", summary.pruned);
        }
    }
    tracing::info!(
        scenes = summary.scenes,
        indexed = summary.indexed,
        skipped = summary.skipped,
        failed = summary.failed,
        chips = summary.chips,
        chips_low_valid = summary.chips_low_valid,
        seconds = summary.seconds,
        "index summary"
    );
    Ok(if summary.interrupted {
        if summary.not_done > 0 {
            super::say(&format!(
                "interrupted: {} scene(s) not indexed; rerun the same command to complete the index",
                summary.not_done
            ));
        } else {
            super::say("interrupted after every scene was done: the index is complete");
        }
        exit::INTERRUPTED
    } else if summary.failed > 0 {
        exit::SOME_FAILED
    } else {
        exit::OK
    })
}

/// Without GDAL there is nothing to read scenes with.
#[cfg(not(feature = "gdal"))]
pub fn index(_args: IndexArgs) -> Result<i32> {
    anyhow::bail!("this acf-index was built without GDAL (cargo feature `gdal`): it cannot read scenes")
}

/// Runs `bench index` on one scene.
#[cfg(feature = "gdal")]
pub fn bench_index(
    scene: &Path,
    model: &super::args::ModelArgs,
    batch: usize,
    readers: usize,
    min_seconds: f64,
    json: bool,
) -> Result<()> {
    use crate::index::IndexOptions;
    let model = super::model_arg::load_model(model)?;
    let opts = IndexOptions {
        batch: batch.max(1),
        readers: readers.max(1),
        ..IndexOptions::defaults(scene.to_path_buf(), model.config().image.image_size as usize)
    };
    let row = crate::index::bench::bench_index(&model, &scene.to_string_lossy(), &opts, min_seconds)?;
    if json {
        println!("{}", serde_json::to_string(&row)?);
    } else {
        println!(
            "{} ({}x{}): {} chips, end-to-end {:.1} chips/s in {:.1} s, encoder only {:.1} chips/s ({:.0} %), peak RSS {} on {}, batch {}",
            row.scene,
            row.width,
            row.height,
            row.chips,
            row.end_to_end_chips_per_s,
            row.end_to_end_s,
            row.encoder_only_chips_per_s,
            100.0 * row.ratio,
            row.peak_rss_mib.map_or("-".into(), |m| format!("{m:.0} MiB")),
            row.device,
            row.batch
        );
    }
    Ok(())
}

/// Without GDAL there is nothing to read scenes with.
#[cfg(not(feature = "gdal"))]
pub fn bench_index(
    _scene: &Path,
    _model: &super::args::ModelArgs,
    _batch: usize,
    _readers: usize,
    _min_seconds: f64,
    _json: bool,
) -> Result<()> {
    anyhow::bail!("this acf-index was built without GDAL (cargo feature `gdal`): it cannot read scenes")
}

/// Runs `info`.
pub fn info(index: &Path, json: bool) -> Result<()> {
    let info = crate::index::info::index_info(index)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print!("{info}");
    }
    Ok(())
}

/// Runs `compact` and prints its report.
pub fn compact(index: &Path, target_mib: u64, dry_run: bool, json: bool) -> Result<()> {
    let (dir, header) = crate::storage::IndexDir::open(index)
        .with_context(|| format!("cannot compact {}", index.display()))?;
    let config: crate::model::Config = serde_json::from_value(header.model_config.clone())
        .with_context(|| format!("{}: the model config in index.json cannot be read", index.display()))?;
    let schema = crate::storage::ChipSchema {
        embed_dim: config.embed_dim as usize,
        regions: config.image.region_grid.pow(2) as usize,
        nodes_dtype: header.nodes_dtype,
    };
    let opts = crate::storage::compact::CompactOptions { target_bytes: target_mib << 20, dry_run };
    let report = dir.compact(schema, &opts).with_context(|| format!("cannot compact {}", index.display()))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{}{} part files → {} ({} scenes moved into {} merged files, {:.1} MiB written, {} unreferenced files removed) in {:.1} s",
            if dry_run { "would merge: " } else { "" },
            report.part_files_before,
            report.part_files_after,
            report.scenes_moved,
            report.files_written,
            report.bytes_written as f64 / 1048576.0,
            report.unreferenced_removed,
            report.seconds
        );
    }
    Ok(())
}
