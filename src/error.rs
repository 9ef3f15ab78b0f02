//! The library's error type: one enum whose variants carry the thing that failed
//! (file, field, word) and why, so the CLI can print one clear line.

use std::path::{Path, PathBuf};

/// Result alias used across the library.
pub type Result<T, E = AcfError> = std::result::Result<T, E>;

/// Everything that can go wrong in acf-index.
#[derive(Debug, thiserror::Error)]
pub enum AcfError {
    /// Reading or writing a file failed.
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A `config.json` is malformed or inconsistent.
    #[error("{path}: invalid model config: {reason}")]
    Config { path: PathBuf, reason: String },
    /// A config preset name that does not exist.
    #[error("unknown model config '{name}' (known presets: {known}; or give a path to a config.json)")]
    UnknownPreset { name: String, known: String },
    /// A `vocab.json` is malformed.
    #[error("{path}: invalid vocabulary: {reason}")]
    Vocab { path: PathBuf, reason: String },
    /// A model directory whose parts do not agree with each other.
    #[error("{path}: model does not match its config/vocab: {reason}")]
    ModelMismatch { path: PathBuf, reason: String },
    /// A model directory that lacks a required file.
    #[error("{path}: not a model directory: {reason}")]
    NotAModel { path: PathBuf, reason: String },
    /// A dataset JSON or image that cannot be used.
    #[error("{path}: {reason}")]
    Dataset { path: PathBuf, reason: String },
    /// A `--device` value that cannot be used.
    #[error("device '{spec}': {reason}")]
    Device { spec: String, reason: String },
    /// A caption with no word in the model's vocabulary.
    #[error("no word of \"{text}\" is in the model's vocabulary")]
    NoKnownWords { text: String },
    /// An error raised inside libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A safetensors file that cannot be parsed.
    #[error("{path}: invalid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    /// An index directory (or one of its files) that cannot be used.
    #[error("{path}: {reason}")]
    Index { path: PathBuf, reason: String },
    /// A scene GDAL cannot open or read as needed.
    #[error("{path}: {reason}")]
    Raster { path: String, reason: String },
    /// Arrow data that does not fit the catalog schema.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Another process holds the index's writer lock.
    #[error("{path}: {reason}")]
    LockConflict { path: PathBuf, reason: String },
    /// A value that could not be serialised (JSON, PNG, GeoJSON).
    #[error("cannot serialise {what}: {reason}")]
    Serialize { what: String, reason: String },
    /// A worker thread of a pipeline panicked or stopped early.
    #[error("internal error: {0}")]
    Thread(String),
    /// A glob pattern that does not parse.
    #[error("bad glob '{pattern}': {reason}")]
    Glob { pattern: String, reason: String },
    /// Arguments that make no sense together, or an input that gives nothing to work on.
    #[error("{0}")]
    InvalidArgument(String),
}

impl AcfError {
    /// An I/O error on `path`, with a short description of what was being done.
    pub fn io(path: impl AsRef<Path>, what: &'static str, source: std::io::Error) -> Self {
        AcfError::Io { path: path.as_ref().to_path_buf(), what, source }
    }
}
