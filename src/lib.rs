//! acf-index: text search over satellite and aerial image archives with the ACF
//! cross-modal retrieval model. The binary only parses arguments; everything lives here.

pub mod bench;
pub mod cli;
pub mod data;
pub mod device;
pub mod doctor;
pub mod error;
pub mod faults;
pub mod files;
pub mod html;
pub mod index;
pub mod model;
pub mod raster;
pub mod search;
pub mod serve;
pub mod storage;
pub mod train;

pub use error::{AcfError, Result};
