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
    /// ISO WKB of the (densified) polygon; a footprint crossing the antimeridian is a
    /// MultiPolygon of its two sides (RFC 7946 §3.1.9).
    pub wkb: Vec<u8>,
    /// `[xmin, ymin, xmax, ymax]`; across the antimeridian `xmin > xmax` (the western
    /// edge near +180, the eastern near −180), as GeoParquet and RFC 7946 §5.2 say.
    pub bbox: [f64; 4],
}

/// True when a bbox crosses the antimeridian (`xmin > xmax`).
pub fn crosses_antimeridian(bbox: &[f64; 4]) -> bool {
    bbox[0] > bbox[2]
}

/// The parts of a bbox on either side of the antimeridian (one part when it does not cross).
pub fn bbox_parts(bbox: [f64; 4]) -> Vec<[f64; 4]> {
    if crosses_antimeridian(&bbox) {
        vec![[bbox[0], bbox[1], 180.0, bbox[3]], [-180.0, bbox[1], bbox[2], bbox[3]]]
    } else {
        vec![bbox]
    }
}

/// The centre (lon, lat) of a bbox, across the antimeridian too.
pub fn bbox_center(b: [f64; 4]) -> [f64; 2] {
    let lat = (b[1] + b[3]) / 2.0;
    if crosses_antimeridian(&b) {
        let lon = (b[0] + b[2] + 360.0) / 2.0;
        [if lon > 180.0 { lon - 360.0 } else { lon }, lat]
    } else {
        [(b[0] + b[2]) / 2.0, lat]
    }
}

/// A longitude in [−180, 180].
pub fn normalize_lon(x: f64) -> f64 {
    if (-180.0..=180.0).contains(&x) { x } else { (x + 180.0).rem_euclid(360.0) - 180.0 }
}

/// A CRS84 ring (longitudes already in [−180, 180]) as one or two rings: a ring whose
/// longitudes span more than 180° crosses the antimeridian and is cut there into a western
/// ring (up to +180) and an eastern one (from −180). Returns the rings and the bbox.
pub fn split_at_antimeridian(xs: &[f64], ys: &[f64]) -> (Vec<Vec<(f64, f64)>>, [f64; 4]) {
    let (lo, hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    let (ylo, yhi) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| (a.min(y), b.max(y)));
    let ring: Vec<(f64, f64)> = xs.iter().copied().zip(ys.iter().copied()).collect();
    if hi - lo <= 180.0 {
        return (vec![ring], [lo, ylo, hi, yhi]);
    }
    // Unwrap onto [0, 360), then clip at 180 on each side (Sutherland–Hodgman against one
    // vertical line keeps the orientation; chip footprints are convex quadrilaterals).
    let unwrapped: Vec<(f64, f64)> =
        ring.iter().map(|&(x, y)| (if x < 0.0 { x + 360.0 } else { x }, y)).collect();
    let west = clip_at(&unwrapped, 180.0, true);
    let east: Vec<(f64, f64)> =
        clip_at(&unwrapped, 180.0, false).into_iter().map(|(x, y)| (x - 360.0, y)).collect();
    let west_min = west.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let east_max = east.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let rings: Vec<Vec<(f64, f64)>> = [west, east].into_iter().filter(|r| r.len() >= 4).collect();
    (rings, [west_min, ylo, east_max, yhi])
}

/// The part of a closed ring with `x <= at` (`keep_below`) or `x >= at`, closed again.
fn clip_at(ring: &[(f64, f64)], at: f64, keep_below: bool) -> Vec<(f64, f64)> {
    let inside = |p: &(f64, f64)| if keep_below { p.0 <= at } else { p.0 >= at };
    let mut out = Vec::new();
    let open = &ring[..ring.len().saturating_sub(1)];
    for i in 0..open.len() {
        let (a, b) = (open[i], open[(i + 1) % open.len()]);
        let cut = || {
            let t = (at - a.0) / (b.0 - a.0);
            (at, a.1 + t * (b.1 - a.1))
        };
        match (inside(&a), inside(&b)) {
            (true, true) => out.push(b),
            (true, false) => out.push(cut()),
            (false, true) => {
                out.push(cut());
                out.push(b);
            }
            (false, false) => {}
        }
    }
    if let Some(&first) = out.first() {
        out.push(first);
    }
    out
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

    /// Ground sample distance in metres: the mean ground length of one pixel's sides near
    /// the scene centre (measured over up to 100 pixels, on the sphere, in CRS84), so that
    /// projected and geographic scenes are measured alike. `None` when a point cannot be
    /// transformed.
    pub fn pixel_size_m(&self, width: usize, height: usize) -> Option<f64> {
        let span = 100.0_f64.min(width.max(1) as f64).min(height.max(1) as f64);
        let (cx, cy) = ((width as f64 - span) / 2.0, (height as f64 - span) / 2.0);
        let pts = [(cx, cy), (cx + span, cy), (cx, cy + span)];
        let (mut xs, mut ys): (Vec<f64>, Vec<f64>) =
            pts.iter().map(|&(px, py)| self.pixel_to_scene(px.max(0.0), py.max(0.0))).unzip();
        self.to_crs84.transform_coords(&mut xs, &mut ys, &mut []).ok()?;
        let d = |i: usize| super::resolution::ground_distance_m((xs[0], ys[0]), (xs[i], ys[i]));
        let m = (d(1) + d(2)) / 2.0 / span;
        (m.is_finite() && m > 0.0).then_some(m)
    }

    /// The window's footprint in CRS84; `Err` with GDAL's reason when a point cannot be
    /// transformed.
    pub fn footprint(&self, window: &Window) -> gdal::errors::Result<Footprint> {
        let ring = window_ring(window);
        let (mut xs, mut ys): (Vec<f64>, Vec<f64>) =
            ring.iter().map(|&(px, py)| self.pixel_to_scene(px, py)).unzip();
        self.to_crs84.transform_coords(&mut xs, &mut ys, &mut [])?;
        for x in xs.iter_mut() {
            *x = normalize_lon(*x);
        }
        // RFC 7946 and GeoParquet's declared orientation: exterior rings counter-clockwise
        // (a north-up scene's pixel-order ring is clockwise on the map). Measured on the
        // unwrapped ring, so that a ring across the antimeridian is judged right.
        let (lo, hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        let unwrapped: Vec<f64> = if hi - lo > 180.0 {
            xs.iter().map(|&x| if x < 0.0 { x + 360.0 } else { x }).collect()
        } else {
            xs.clone()
        };
        if signed_area(&unwrapped, &ys) < 0.0 {
            xs.reverse();
            ys.reverse();
        }
        let (rings, bbox) = split_at_antimeridian(&xs, &ys);
        let polygon = |ring: &[(f64, f64)]| -> gdal::errors::Result<Geometry> {
            let mut linear_ring = Geometry::empty(OGRwkbGeometryType::wkbLinearRing)?;
            for &p in ring {
                linear_ring.add_point_2d(p);
            }
            let mut polygon = Geometry::empty(OGRwkbGeometryType::wkbPolygon)?;
            polygon.add_geometry(linear_ring)?;
            Ok(polygon)
        };
        let geometry = if rings.len() == 1 {
            polygon(&rings[0])?
        } else {
            let mut multi = Geometry::empty(OGRwkbGeometryType::wkbMultiPolygon)?;
            for r in &rings {
                multi.add_geometry(polygon(r)?)?;
            }
            multi
        };
        Ok(Footprint { wkb: geometry.wkb()?, bbox })
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
        let boxes: Vec<[f64; 4]> = border_windows(windows, width, height)
            .map(|w| self.footprint(w).map(|f| f.bbox))
            .collect::<Result<_, _>>()?;
        Ok(union_bbox(&boxes))
    }
}

/// The union of chip bboxes; when one of them crosses the antimeridian the union is taken
/// on the unwrapped longitudes and crosses too (`xmin > xmax`).
pub fn union_bbox(boxes: &[[f64; 4]]) -> Option<[f64; 4]> {
    let first = *boxes.first()?;
    let crossing = boxes.iter().any(crosses_antimeridian);
    let unwrap = |b: &[f64; 4]| -> [f64; 4] {
        match (crossing, crosses_antimeridian(b)) {
            (true, true) => [b[0], b[1], b[2] + 360.0, b[3]],
            (true, false) if b[2] < 0.0 => [b[0] + 360.0, b[1], b[2] + 360.0, b[3]],
            _ => *b,
        }
    };
    let u = boxes
        .iter()
        .map(unwrap)
        .fold(unwrap(&first), |a, b| [a[0].min(b[0]), a[1].min(b[1]), a[2].max(b[2]), a[3].max(b[3])]);
    Some(if u[2] > 180.0 { [u[0], u[1], u[2] - 360.0, u[3]] } else { u })
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
    fn a_ring_across_the_antimeridian_is_cut_in_two_with_a_wrapping_bbox() {
        // A counter-clockwise square from 179.5°E to 179.5°W.
        let xs = [179.5, 179.5, -179.5, -179.5, 179.5];
        let ys = [-17.0, -17.5, -17.5, -17.0, -17.0];
        let (rings, bbox) = split_at_antimeridian(&xs, &ys);
        assert_eq!(rings.len(), 2);
        assert_eq!(bbox, [179.5, -17.5, -179.5, -17.0]);
        assert!(rings[0].iter().all(|p| p.0 >= 179.5 && p.0 <= 180.0), "{:?}", rings[0]);
        assert!(rings[1].iter().all(|p| p.0 >= -180.0 && p.0 <= -179.5), "{:?}", rings[1]);
        for r in &rings {
            let (x, y): (Vec<f64>, Vec<f64>) = r.iter().copied().unzip();
            assert!(signed_area(&x, &y) > 0.0, "each side stays counter-clockwise");
            assert_eq!(r.first(), r.last());
        }
        assert!(bbox_center(bbox)[0].abs() > 179.9, "centre on the antimeridian: {:?}", bbox_center(bbox));
        assert_eq!(bbox_parts(bbox).len(), 2);
        // A ring that does not cross is kept whole.
        let (rings, bbox) =
            split_at_antimeridian(&[10.0, 10.0, 11.0, 11.0, 10.0], &[1.0, 0.0, 0.0, 1.0, 1.0]);
        assert_eq!((rings.len(), bbox), (1, [10.0, 0.0, 11.0, 1.0]));
    }

    #[test]
    fn unions_and_longitudes_wrap() {
        assert!((normalize_lon(180.1) - -179.9).abs() < 1e-9);
        assert!((normalize_lon(-180.5) - 179.5).abs() < 1e-12);
        assert_eq!(normalize_lon(180.0), 180.0);
        let u =
            union_bbox(&[[179.0, 0.0, 179.8, 1.0], [179.8, 0.0, -179.6, 1.0], [-179.6, 0.0, -179.0, 1.0]]);
        assert_eq!(u, Some([179.0, 0.0, -179.0, 1.0]));
        assert_eq!(union_bbox(&[[1.0, 2.0, 3.0, 4.0], [0.0, 3.0, 2.0, 5.0]]), Some([0.0, 2.0, 3.0, 5.0]));
    }

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
    fn pixel_sizes_of_projected_and_geographic_scenes() {
        let utm = SpatialRef::from_epsg(32618).unwrap();
        let g = Georef::new([500_000.0, 30.0, 0.0, 4_000_000.0, 0.0, -30.0], &utm).unwrap();
        let m = g.pixel_size_m(7_000, 7_000).unwrap();
        assert!((m - 30.0).abs() < 0.1, "{m}");
        // 1/3600 degree at the equator ≈ 30.9 m.
        let wgs84 = SpatialRef::from_epsg(4326).unwrap();
        let g = Georef::new([10.0, 1.0 / 3600.0, 0.0, 0.5, 0.0, -1.0 / 3600.0], &wgs84).unwrap();
        let m = g.pixel_size_m(3_600, 3_600).unwrap();
        assert!((m - 30.9).abs() < 0.2, "{m}");
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
