//! Reading scenes: the chip grid of a scene ([`tiling`], pure), and GDAL windowed reads with
//! band selection, 8-bit conversion, nodata masks and CRS84 footprints ([`scene`], behind
//! the default `gdal` feature).

pub mod stretch;
pub mod tiling;
pub mod timestamp;

#[cfg(feature = "gdal")]
pub mod footprint;
#[cfg(feature = "gdal")]
pub mod scene;

pub use tiling::{Window, chip_windows};
