//! Query filters: a CRS84 bounding box (against the `bbox` covering column and row-group
//! statistics), scene path globs, and an acquisition time range.

use globset::GlobSet;

use crate::error::Result;

/// What a chip must satisfy to be ranked at all.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// `[minx, miny, maxx, maxy]` in CRS84: chips whose bbox intersects it.
    pub bbox: Option<[f64; 4]>,
    /// Scene path globs (any may match).
    pub scenes: Option<GlobSet>,
    /// Acquired at or after (µs since the epoch, UTC).
    pub since_us: Option<i64>,
    /// Acquired before or at.
    pub until_us: Option<i64>,
    /// STAC collections (any may match; empty = all scenes).
    pub collections: Vec<String>,
}

impl Filters {
    /// Builds the scene glob set (`*.tif` matches file names anywhere; patterns with `/`
    /// match whole paths).
    pub fn scene_globs(patterns: &[String]) -> Result<Option<GlobSet>> {
        crate::files::glob_set(patterns)
    }

    /// Whether a scene of this STAC collection passes the collection filter.
    pub fn collection_ok(&self, collection: Option<&str>) -> bool {
        self.collections.is_empty() || collection.is_some_and(|c| self.collections.iter().any(|w| w == c))
    }

    /// Whether a scene path passes the scene filter.
    pub fn scene_ok(&self, scene: &str) -> bool {
        self.scenes.as_ref().is_none_or(|g| g.is_match(scene))
    }

    /// Whether a chip bbox (None = not georeferenced) passes the bbox filter.
    pub fn bbox_ok(&self, bbox: Option<[f64; 4]>) -> bool {
        match (self.bbox, bbox) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(q), Some(b)) => {
                crate::raster::footprint::bbox_parts(b).into_iter().any(|p| intersects(q, p))
            }
        }
    }

    /// Whether an acquisition time passes the time filter (no time fails any time filter).
    pub fn time_ok(&self, acquired_us: Option<i64>) -> bool {
        if self.since_us.is_none() && self.until_us.is_none() {
            return true;
        }
        acquired_us
            .is_some_and(|t| self.since_us.is_none_or(|s| t >= s) && self.until_us.is_none_or(|u| t <= u))
    }

    /// True when some column-level filter is set (stage 1 must read the filter columns).
    pub fn needs_columns(&self) -> bool {
        self.bbox.is_some() || self.since_us.is_some() || self.until_us.is_some()
    }
}

/// Whether two `[minx, miny, maxx, maxy]` boxes intersect (touching counts).
pub fn intersects(a: [f64; 4], b: [f64; 4]) -> bool {
    a[0] <= b[2] && b[0] <= a[2] && a[1] <= b[3] && b[1] <= a[3]
}

/// Parses `MINX,MINY,MAXX,MAXY`.
pub fn parse_bbox(text: &str) -> std::result::Result<[f64; 4], String> {
    let v: Vec<f64> = text
        .split(',')
        .map(|x| x.trim().parse::<f64>().map_err(|_| format!("'{x}' is not a number")))
        .collect::<std::result::Result<_, _>>()?;
    let [a, b, c, d] = v[..] else { return Err(format!("'{text}' is not MINX,MINY,MAXX,MAXY")) };
    if v.iter().any(|x| !x.is_finite()) {
        return Err(format!("'{text}': every coordinate must be a finite number"));
    }
    if [a, c].iter().any(|x| x.abs() > 180.0) || [b, d].iter().any(|y| y.abs() > 90.0) {
        return Err(format!(
            "'{text}': longitudes must lie in [-180, 180] and latitudes in [-90, 90] (CRS84 degrees)"
        ));
    }
    if a > c || b > d {
        return Err(format!("'{text}': MINX must be <= MAXX and MINY <= MAXY"));
    }
    Ok([a, b, c, d])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_times_and_scenes_filter() {
        let f = Filters {
            bbox: Some([0.0, 0.0, 1.0, 1.0]),
            scenes: Filters::scene_globs(&["*.tif".into()]).unwrap(),
            since_us: Some(10),
            until_us: None,
            collections: vec!["naip".into()],
        };
        assert!(f.collection_ok(Some("naip")) && !f.collection_ok(Some("landsat")) && !f.collection_ok(None));
        assert!(Filters::default().collection_ok(None));
        assert!(f.bbox_ok(Some([0.5, 0.5, 2.0, 2.0])));
        assert!(f.bbox_ok(Some([1.0, 1.0, 2.0, 2.0])), "touching");
        assert!(!f.bbox_ok(Some([1.5, 0.0, 2.0, 1.0])));
        assert!(!f.bbox_ok(None), "no footprint, no match");
        assert!(f.scene_ok("/data/a/b.tif") && !f.scene_ok("/data/a/b.jp2"));
        assert!(f.time_ok(Some(10)) && !f.time_ok(Some(9)) && !f.time_ok(None));
        assert!(Filters::default().time_ok(None));
        assert_eq!(parse_bbox("1,2,3,4"), Ok([1.0, 2.0, 3.0, 4.0]));
        assert!(parse_bbox("3,2,1,4").is_err() && parse_bbox("1,2,3").is_err());
    }
}
