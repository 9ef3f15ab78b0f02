//! `--model` / `--device`: loading the model a command runs with, shared by every command
//! that needs one.

use std::path::Path;

use anyhow::{Context, Result};

use super::args::ModelArgs;
use crate::device::device_name;
use crate::model::model_dir::ModelDir;

/// Loads the model named by `--model` onto `--device`.
pub fn load_model(args: &ModelArgs) -> Result<ModelDir> {
    let device = args.device.resolve()?;
    // The default model ships in the source tree: outside it (cron jobs), fall back to the
    // models/default of the checkout this binary was built from.
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default");
    let dir = if args.model == Path::new("models/default") && !args.model.exists() && built_in.exists() {
        built_in.as_path()
    } else {
        args.model.as_path()
    };
    let loaded = ModelDir::load(dir, device).with_context(|| {
        if args.model == Path::new("models/default") && !dir.exists() {
            "no --model given and models/default does not exist (pass --model DIR or set ACF_MODEL)"
                .to_string()
        } else {
            "cannot load model".to_string()
        }
    })?;
    tracing::info!(
        model = %dir.display(),
        config = %loaded.config().name,
        fingerprint = loaded.short_fingerprint(),
        device = %device_name(device),
        "model loaded"
    );
    Ok(loaded)
}
