//! What identifies a loaded model to an index: its config, the fingerprint of its weights
//! and where it was loaded from. Both the libtorch model ([`ModelDir`]) and the query model
//! ([`QueryModel`]) have one, so index headers and mismatch errors take either.
//!
//! [`ModelDir`]: super::ModelDir
//! [`QueryModel`]: super::native::QueryModel

use std::path::Path;

use super::Config;

/// A loaded model as indexes see it.
pub trait ModelIdentity {
    /// Every hyperparameter, as in `config.json`.
    fn config(&self) -> &Config;
    /// Hex sha256 of `model.safetensors`.
    fn fingerprint(&self) -> &str;
    /// The model directory it was loaded from.
    fn dir(&self) -> &Path;
    /// Short form of the fingerprint for display.
    fn short_fingerprint(&self) -> &str {
        crate::files::short_fingerprint(self.fingerprint())
    }
}

impl ModelIdentity for super::ModelDir {
    fn config(&self) -> &Config {
        &self.model.config
    }
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    fn dir(&self) -> &Path {
        &self.dir
    }
}

impl ModelIdentity for super::native::QueryModel {
    fn config(&self) -> &Config {
        &self.config
    }
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    fn dir(&self) -> &Path {
        &self.dir
    }
}
