//! Reading scenes: the chip grid of a scene ([`tiling`], pure), and GDAL windowed reads with
//! band selection, 8-bit conversion, nodata masks and CRS84 footprints ([`scene`], behind
//! the default `gdal` feature), chip footprints ([`footprint`]) and the conversion of a read
//! window into the model's 8-bit input ([`chip`]), and chips at a chosen ground resolution
//! ([`resolution`], pure).

#[cfg(feature = "gdal")]
pub mod chip;
pub mod footprint;
pub mod resolution;
#[cfg(feature = "gdal")]
pub mod scene;
pub mod stretch;
pub mod tiling;
pub mod timestamp;
#[cfg(feature = "gdal")]
pub mod vsi;

pub use footprint::Footprint;
pub use tiling::{Window, chip_windows};
