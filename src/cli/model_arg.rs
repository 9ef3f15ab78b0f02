//! `--model` / `--device`: loading the model a command runs with, shared by every command
//! that needs one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::args::ModelArgs;
use crate::device::device_name;
use crate::model::ModelIdentity;
use crate::model::model_dir::ModelDir;
use crate::model::native::QueryModel;

/// Loads the model named by `--model` onto `--device`.
pub fn load_model(args: &ModelArgs) -> Result<ModelDir> {
    let device = args.device.resolve()?;
    let dir = model_dir(args);
    let loaded = ModelDir::load(&dir, device).with_context(|| load_failed(args, &dir))?;
    tracing::info!(
        model = %dir.display(),
        config = %loaded.config().name,
        fingerprint = loaded.short_fingerprint(),
        device = %device_name(device),
        "model loaded"
    );
    Ok(loaded)
}

/// [`load_model`] without the model's hubness prior (`model calibrate` writes a new one).
pub fn load_model_without_prior(args: &ModelArgs) -> Result<ModelDir> {
    let device = args.device.resolve()?;
    let dir = model_dir(args);
    ModelDir::load_without_prior(&dir, device).with_context(|| load_failed(args, &dir))
}

/// Loads what a search needs of the model named by `--model` (no libtorch: queries run on
/// the CPU in plain Rust, see `model::native`; `--device` is accepted and not needed).
pub fn load_query_model(args: &ModelArgs) -> Result<QueryModel> {
    let dir = model_dir(args);
    let start = std::time::Instant::now();
    let loaded = QueryModel::load(&dir).with_context(|| load_failed(args, &dir))?;
    tracing::debug!(
        ms = start.elapsed().as_secs_f64() * 1e3,
        model = %dir.display(),
        config = %loaded.config.name,
        fingerprint = loaded.short_fingerprint(),
        "query model loaded"
    );
    Ok(loaded)
}

/// The directory `--model` names. The default model ships in the source tree: outside it
/// (cron jobs), fall back to the models/default of the checkout this binary was built from.
fn model_dir(args: &ModelArgs) -> PathBuf {
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default");
    if args.model == Path::new("models/default") && !args.model.exists() && built_in.exists() {
        built_in
    } else {
        args.model.clone()
    }
}

fn load_failed(args: &ModelArgs, dir: &Path) -> String {
    if args.model == Path::new("models/default") && !dir.exists() {
        "no --model given and models/default does not exist (pass --model DIR or set ACF_MODEL)".to_string()
    } else {
        "cannot load model".to_string()
    }
}
