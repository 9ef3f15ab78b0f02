//! `acf-index index`: scenes → chips → ACF features → GeoParquet catalog, incrementally and
//! crash-safely. [`discover`] decides which scenes, [`pipeline`] runs readers, the encoder and
//! the writer concurrently, [`info`] summarises an existing index.

#[cfg(feature = "gdal")]
pub mod bench;
pub mod discover;
pub mod info;
#[cfg(feature = "gdal")]
pub mod pipeline;
#[cfg(feature = "gdal")]
mod prepare;
#[cfg(feature = "gdal")]
pub mod stac;

pub use discover::{Inputs, discover, parse_shard};
#[cfg(feature = "gdal")]
pub use pipeline::{IndexOptions, IndexSummary, run};
