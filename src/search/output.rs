//! Printing query results: a table for people, JSON lines, CSV, and GeoJSON (a
//! FeatureCollection of chip footprints that QGIS and geojson.io open).

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use super::engine::{Hit, QueryResult};
use crate::error::{AcfError, Result};

/// Output format of `acf-index query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// rank, S, sim_g, scene, window, lon/lat of the centre.
    Table,
    /// One JSON object per hit per line.
    Json,
    /// Comma-separated, with a header line.
    Csv,
    /// A GeoJSON FeatureCollection of the hits' footprints.
    Geojson,
}

/// Writes `results` to `out` in `format`.
pub fn write(results: &[QueryResult], format: Format, out: &mut dyn Write) -> Result<()> {
    let io = |e: std::io::Error| AcfError::io("<stdout>", "cannot write results", e);
    match format {
        Format::Table => {
            for (i, r) in results.iter().enumerate() {
                if results.len() > 1 || i > 0 {
                    writeln!(out, "{}# {}", if i > 0 { "\n" } else { "" }, r.query).map_err(io)?;
                }
                if !r.mappings.is_empty() || !r.unknown_words.is_empty() {
                    let mut how: Vec<String> = r
                        .mappings
                        .iter()
                        .map(|m| {
                            format!("{} → {} ({})", m.word, m.known, format!("{:?}", m.via).to_lowercase())
                        })
                        .collect();
                    how.extend(r.unknown_words.iter().map(|w| format!("{w}: not understood, left out")));
                    writeln!(out, "# read as \"{}\": {}", r.tokens.join(" "), how.join(", ")).map_err(io)?;
                }
                writeln!(
                    out,
                    "{:>4}  {:>8}  {:>8}  {:<28}  {:<16}  {:>11}  {:>10}",
                    "rank", "S", "sim_g", "scene", "window", "lon", "lat"
                )
                .map_err(io)?;
                for h in &r.hits {
                    let (lon, lat) = h.center.map_or(("-".to_string(), "-".to_string()), |c| {
                        (format!("{:.6}", c[0]), format!("{:.6}", c[1]))
                    });
                    writeln!(
                        out,
                        "{:>4}  {:>8.4}  {:>8.4}  {:<28}  {:<16}  {:>11}  {:>10}",
                        h.rank,
                        h.score,
                        h.sim_g,
                        short_scene(&h.scene),
                        format!("{},{} {}x{}", h.window[0], h.window[1], h.window[2], h.window[3]),
                        lon,
                        lat
                    )
                    .map_err(io)?;
                }
            }
        }
        Format::Json => {
            for r in results {
                for h in &r.hits {
                    let mut v = serde_json::to_value(h).map_err(|e| AcfError::Serialize {
                        what: format!("hit {}", h.chip_id),
                        reason: e.to_string(),
                    })?;
                    v["query"] = json!(r.query);
                    v["tokens"] = json!(r.tokens);
                    v["mappings"] = json!(r.mappings);
                    writeln!(out, "{v}").map_err(io)?;
                }
            }
        }
        Format::Csv => {
            writeln!(
                out,
                "query,rank,score,sim_g,chip_id,scene,col,row,width,height,lon,lat,valid_fraction,tokens"
            )
            .map_err(io)?;
            for r in results {
                for h in &r.hits {
                    let (lon, lat) = h
                        .center
                        .map_or((String::new(), String::new()), |c| (c[0].to_string(), c[1].to_string()));
                    writeln!(
                        out,
                        "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                        csv(&r.query),
                        h.rank,
                        h.score,
                        h.sim_g,
                        h.chip_id,
                        csv(&h.scene),
                        h.window[0],
                        h.window[1],
                        h.window[2],
                        h.window[3],
                        lon,
                        lat,
                        h.valid_fraction,
                        csv(&r.tokens.join(" "))
                    )
                    .map_err(io)?;
                }
            }
        }
        Format::Geojson => {
            let collection = geojson(results)?;
            writeln!(out, "{collection}").map_err(io)?;
        }
    }
    Ok(())
}

/// The GeoJSON FeatureCollection of all hits (chips without georeferencing have a null
/// geometry, which GeoJSON allows).
pub fn geojson(results: &[QueryResult]) -> Result<Value> {
    let mut features = Vec::new();
    for r in results {
        for h in &r.hits {
            features.push(json!({
                "type": "Feature",
                "id": format!("{}#{}", h.chip_id, features.len()),
                "geometry": geometry(h)?,
                "properties": {
                    "query": r.query, "rank": h.rank, "score": h.score, "sim_g": h.sim_g,
                    "chip_id": h.chip_id, "scene": h.scene,
                    "col": h.window[0], "row": h.window[1], "width": h.window[2], "height": h.window[3],
                    "valid_fraction": h.valid_fraction, "tokens": r.tokens,
                },
            }));
        }
    }
    Ok(json!({"type": "FeatureCollection", "features": features}))
}

/// A hit's stored footprint (ISO WKB, as OGR wrote it) as a GeoJSON geometry (geozero:
/// no GDAL needed, so the front binary answers GeoJSON queries without loading it).
pub(crate) fn geometry(h: &Hit) -> Result<Value> {
    use geozero::ToJson;
    let Some(wkb) = &h.geometry else { return Ok(Value::Null) };
    let bad = |reason: String| AcfError::Serialize {
        what: format!("chip {} geometry", h.chip_id),
        reason: format!("bad stored geometry: {reason}"),
    };
    let text = geozero::wkb::Wkb(wkb.as_slice()).to_json().map_err(|e| bad(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| bad(e.to_string()))
}

fn short_scene(scene: &str) -> String {
    let name = Path::new(scene).file_name().map_or(scene.to_string(), |n| n.to_string_lossy().into_owned());
    if name.chars().count() > 28 {
        format!("…{}", name.chars().rev().take(27).collect::<Vec<_>>().into_iter().rev().collect::<String>())
    } else {
        name
    }
}

fn csv(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> QueryResult {
        QueryResult {
            query: "a, \"quoted\" query".into(),
            unknown_words: vec![],
            tokens: vec!["quoted".into(), "query".into()],
            mappings: vec![],
            hits: vec![Hit {
                rank: 1,
                score: 1.5,
                sim_g: 0.5,
                chip_id: "abc_0_0".into(),
                scene: "/data/x.tif".into(),
                window: [0, 0, 224, 224],
                center: None,
                bbox: None,
                geometry: None,
                valid_fraction: 1.0,
                acquired_us: None,
            }],
            chips_scanned: 1,
            scored: 1,
            stage1_ms: 0.0,
            stage2_ms: 0.0,
        }
    }

    #[test]
    fn csv_quotes_and_geojson_allows_null_geometry() {
        let mut out = Vec::new();
        write(&[result()], Format::Csv, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.lines().nth(1).unwrap().starts_with("\"a, \"\"quoted\"\" query\",1,1.5,0.5,abc_0_0"),
            "{text}"
        );
        let g = geojson(&[result()]).unwrap();
        assert_eq!(g["features"][0]["geometry"], Value::Null);
        assert_eq!(g["features"][0]["properties"]["rank"], 1);
    }
}
