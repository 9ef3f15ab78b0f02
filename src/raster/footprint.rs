//! Chip footprints: the window's outline in the scene CRS (from the geotransform), densified
//! along each edge and transformed to OGC:CRS84 (longitude, latitude) with GDAL/OGR, as a
//! WKB polygon (written by OGR) plus its bounding box. The [`Footprint`] type is plain data
//! (the catalog stores it without GDAL); computing one needs the `gdal` feature.

#[cfg(feature = "gdal")]
use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
#[cfg(feature = "gdal")]
use gdal::vector::{Geometry, OGRwkbGeometryType};

use super::tiling::Window;

/// A chip's footprint in OGC:CRS84: WKB polygon and its bounding box.
#[derive(Debug, Clone, PartialEq)]
pub struct Footprint {
    /// ISO WKB of the (densified) polygon.
    pub wkb: Vec<u8>,
    /// `[xmin, ymin, xmax, ymax]`.
    pub bbox: [f64; 4],
}

/// Points per window edge: enough that a projected square's curved image in CRS84 is
/// followed to well under a pixel for chip-sized windows.
pub const EDGE_SEGMENTS: usize = 8;

/// A scene's georeferencing: geotransform and the transformation to CRS84.
#[cfg(feature = "gdal")]
pub struct Georef {
    pub geo_transform: [f64; 6],
    to_crs84: CoordTransform,
}

/// The ring of a window: `EDGE_SEGMENTS` points per edge, clockwise from the top-left
/// corner in pixel space, closed.
pub fn window_ring(window: &Window) -> Vec<(f64, f64)> {
    let (x0, y0) = (window.col as f64, window.row as f64);
    let (x1, y1) = (x0 + window.width as f64, y0 + window.height as f64);
    let n = EDGE_SEGMENTS;
    let lerp = |a: f64, b: f64, i: usize| a + (b - a) * i as f64 / n as f64;
    let mut ring = Vec::with_capacity(4 * n + 1);
    ring.extend((0..n).map(|i| (lerp(x0, x1, i), y0)));
    ring.extend((0..n).map(|i| (x1, lerp(y0, y1, i))));
    ring.extend((0..n).map(|i| (lerp(x1, x0, i), y1)));
    ring.extend((0..n).map(|i| (x0, lerp(y1, y0, i))));
    ring.push((x0, y0));
    ring
}

/// Twice the signed area of a closed ring (shoelace): positive when counter-clockwise.
pub fn signed_area(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len().min(ys.len());
    (0..n.saturating_sub(1)).map(|i| xs[i] * ys[i + 1] - xs[i + 1] * ys[i]).sum()
}

/// The windows on the border of a `width` × `height` chip grid.
pub fn border_windows(windows: &[Window], width: usize, height: usize) -> impl Iterator<Item = &Window> {
    windows
        .iter()
        .filter(move |w| w.col == 0 || w.row == 0 || w.col + w.width == width || w.row + w.height == height)
}

#[cfg(feature = "gdal")]
impl Georef {
    /// Builds the transformation from `srs` (the scene's CRS) to CRS84.
    pub fn new(geo_transform: [f64; 6], srs: &SpatialRef) -> gdal::errors::Result<Georef> {
        let mut source = srs.clone();
        source.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
        let mut target = SpatialRef::from_definition("OGC:CRS84")?;
        target.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
        Ok(Georef { geo_transform, to_crs84: CoordTransform::new(&source, &target)? })
    }

    /// Scene CRS coordinates of pixel position (`px`, `py`) (pixel corners at integers).
    pub fn pixel_to_scene(&self, px: f64, py: f64) -> (f64, f64) {
        let g = &self.geo_transform;
        (g[0] + px * g[1] + py * g[2], g[3] + px * g[4] + py * g[5])
    }

    /// The window's footprint in CRS84; `Err` with GDAL's reason when a point cannot be
    /// transformed.
    pub fn footprint(&self, window: &Window) -> gdal::errors::Result<Footprint> {
        let ring = window_ring(window);
        let (mut xs, mut ys): (Vec<f64>, Vec<f64>) =
            ring.iter().map(|&(px, py)| self.pixel_to_scene(px, py)).unzip();
        self.to_crs84.transform_coords(&mut xs, &mut ys, &mut [])?;
        // RFC 7946 and GeoParquet's declared orientation: exterior rings counter-clockwise
        // (a north-up scene's pixel-order ring is clockwise on the map).
        if signed_area(&xs, &ys) < 0.0 {
            xs.reverse();
            ys.reverse();
        }
        let mut linear_ring = Geometry::empty(OGRwkbGeometryType::wkbLinearRing)?;
        let mut bbox = [f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY];
        for (&x, &y) in xs.iter().zip(&ys) {
            linear_ring.add_point_2d((x, y));
            bbox = [bbox[0].min(x), bbox[1].min(y), bbox[2].max(x), bbox[3].max(y)];
        }
        let mut polygon = Geometry::empty(OGRwkbGeometryType::wkbPolygon)?;
        polygon.add_geometry(linear_ring)?;
        Ok(Footprint { wkb: polygon.wkb()?, bbox })
    }

    /// The CRS84 extent of a chip grid: a projection maps the scene's interior inside the
    /// image of its border, so the border windows' footprints (sampled at the same points
    /// as every chip's) bound all chips.
    pub fn grid_bbox(
        &self,
        windows: &[Window],
        width: usize,
        height: usize,
    ) -> gdal::errors::Result<Option<[f64; 4]>> {
        let mut bbox: Option<[f64; 4]> = None;
        for w in border_windows(windows, width, height) {
            let f = self.footprint(w)?.bbox;
            let b = bbox.get_or_insert(f);
            *b = [b[0].min(f[0]), b[1].min(f[1]), b[2].max(f[2]), b[3].max(f[3])];
        }
        Ok(bbox)
    }
}

/// The CRS as `AUTHORITY:CODE` when it has one, else its WKT.
#[cfg(feature = "gdal")]
pub fn crs_name(srs: &SpatialRef) -> Option<String> {
    match (srs.auth_name(), srs.auth_code()) {
        (Some(name), Ok(code)) => Some(format!("{name}:{code}")),
        _ => srs.to_wkt().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn border_windows_are_those_touching_an_edge() {
        let windows = crate::raster::chip_windows(800, 800, 224, 112);
        let border: Vec<_> = border_windows(&windows, 800, 800).collect();
        // 7 × 7 windows (0, 112, …, 576): the 5 × 5 inner ones touch no edge.
        assert_eq!((windows.len(), border.len()), (49, 24));
        assert!(
            border
                .iter()
                .all(|w| w.col == 0 || w.row == 0 || w.col + w.width == 800 || w.row + w.height == 800)
        );
    }

    #[test]
    fn a_ring_walks_the_window_edges_and_closes() {
        let ring = window_ring(&Window { col: 10, row: 20, width: 224, height: 100 });
        assert_eq!(ring.len(), 4 * EDGE_SEGMENTS + 1);
        assert_eq!(ring[0], (10.0, 20.0));
        assert_eq!(ring[EDGE_SEGMENTS], (234.0, 20.0));
        assert_eq!(ring[2 * EDGE_SEGMENTS], (234.0, 120.0));
        assert_eq!(ring[3 * EDGE_SEGMENTS], (10.0, 120.0));
        assert_eq!(ring.last(), ring.first());
    }

    #[cfg(feature = "gdal")]
    #[test]
    fn utm_corners_match_a_hand_checked_transformation() {
        // EPSG:32618 easting 500000 on the equator is 75°W, 0°.
        let srs = SpatialRef::from_epsg(32618).unwrap();
        let georef = Georef::new([500_000.0, 30.0, 0.0, 0.0, 0.0, -30.0], &srs).unwrap();
        let fp = georef.footprint(&Window { col: 0, row: 0, width: 224, height: 224 }).unwrap();
        assert!((fp.bbox[0] - -75.0).abs() < 1e-9, "{:?}", fp.bbox);
        assert!((fp.bbox[3] - 0.0).abs() < 1e-9, "{:?}", fp.bbox);
        assert!(fp.bbox[2] > -75.0 && fp.bbox[2] < -74.9 && fp.bbox[1] < 0.0 && fp.bbox[1] > -0.1);
        let polygon = Geometry::from_wkb(&fp.wkb).unwrap();
        assert_eq!(polygon.geometry_name(), "POLYGON");
        let ring = polygon.get_geometry(0);
        let (xs, ys): (Vec<f64>, Vec<f64>) = (0..ring.point_count() as i32)
            .map(|i| {
                let (x, y, _) = ring.get_point(i);
                (x, y)
            })
            .unzip();
        assert!(signed_area(&xs, &ys) > 0.0, "exterior ring counter-clockwise");
    }
}
