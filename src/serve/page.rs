//! The search page: one self-contained HTML file (no external scripts, styles or map tiles)
//! that calls `/api/search` and draws the hits' footprints over a lon/lat graticule.

/// The page's HTML.
pub const PAGE: &str = include_str!("page.html");
