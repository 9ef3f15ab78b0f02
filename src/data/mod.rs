//! Image–caption data: decoding image files into model-ready chips.

pub mod dataset;
pub mod image_file;
