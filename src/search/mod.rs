//! `acf-index query`: two-stage ACF search over a chip catalog.
//!
//! Stage 1 ([`scan`]) streams only the `global` column (plus filter columns) of every live
//! part file, in parallel, and keeps the N chips with the highest `sim_g` per query. Stage 2
//! reads `nodes` for just those rows (a Parquet row selection, [`crate::storage::chip_reader`])
//! and [`engine`] ranks them by the full score S (correction, filtering, both directions,
//! global term). Reading the catalog is `storage`'s work; this module filters, scores and ranks.

pub mod bench;
pub mod embed;
pub mod engine;
pub mod filters;
pub mod output;
pub mod rank;
pub mod rerank;
pub mod scan;
pub mod served;
#[cfg(feature = "gdal")]
pub mod thumbnails;
pub mod words;

pub use engine::{Hit, QueryOptions, QueryResult, search};
pub use filters::Filters;
