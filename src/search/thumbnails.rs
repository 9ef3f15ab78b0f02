//! Looking at hits: each hit's chip cut from its source scene with GDAL (same bands,
//! stretch and nodata handling as indexing) as a PNG, and a self-contained HTML page that
//! embeds them (data URIs) with score and location.

use std::path::{Path, PathBuf};

use super::engine::QueryResult;
use crate::error::{AcfError, Result};
use crate::html::escape;
use crate::raster::chip::to_model_chip;
use crate::raster::scene::{ReadOptions, Scene};
use crate::raster::tiling::Window;

/// PNG bytes of a hit's window (`size`×`size`, padded like the model input).
pub fn chip_png(scene: &str, window: [i32; 4], size: usize) -> Result<Vec<u8>> {
    let s = Scene::open(scene, &ReadOptions::default())?;
    let w = Window {
        col: window[0] as usize,
        row: window[1] as usize,
        width: window[2] as usize,
        height: window[3] as usize,
    };
    if w.col + w.width > s.width || w.row + w.height > s.height {
        return Err(AcfError::Raster {
            path: scene.into(),
            reason: "the window is outside the scene (the scene changed since indexing?)".into(),
        });
    }
    let raw = s.read_resampled(&w, thumbnail_buffer(&w, (s.width, s.height), size))?;
    let chw = to_model_chip(&raw, s.stretch.as_ref(), size);
    let plane = size * size;
    let hwc: Vec<u8> = (0..plane).flat_map(|i| [chw[i], chw[plane + i], chw[2 * plane + i]]).collect();
    let img = image::RgbImage::from_raw(size as u32, size as u32, hwc).ok_or_else(|| {
        AcfError::Serialize { what: "thumbnail".into(), reason: "pixel buffer of the wrong size".into() }
    })?;
    crate::html::png(&img)
}

/// The buffer a hit's window is drawn into. A window at native resolution is drawn pixel for
/// pixel (a short side only where the scene itself is short, padded as the model saw it); a
/// window of an index made with `--gsd` is larger than the chip, or smaller without spanning
/// the scene, and is resampled so that its longer side fills the thumbnail.
fn thumbnail_buffer(w: &Window, scene: (usize, usize), size: usize) -> (usize, usize) {
    let side = w.width.max(w.height);
    let resampled =
        side > size || (w.width < size && w.width < scene.0) || (w.height < size && w.height < scene.1);
    if !resampled || side == 0 {
        return (w.width, w.height);
    }
    let fit = |n: usize| ((n * size) as f64 / side as f64).round().clamp(1.0, size as f64) as usize;
    (fit(w.width), fit(w.height))
}

/// Writes `DIR/<query#>-<rank>-<chip_id>.png` for every hit; returns the files written.
/// A hit whose scene cannot be read any more is reported and skipped.
pub fn write_thumbnails(results: &[QueryResult], dir: &Path, size: usize) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| AcfError::io(dir, "cannot create thumbnail folder", e))?;
    let mut written = Vec::new();
    for (qi, r) in results.iter().enumerate() {
        for h in &r.hits {
            match chip_png(&h.scene, h.window, size) {
                Ok(png) => {
                    let path = dir.join(format!("q{}-{:03}-{}.png", qi + 1, h.rank, h.chip_id));
                    std::fs::write(&path, png)
                        .map_err(|e| AcfError::io(&path, "cannot write thumbnail", e))?;
                    written.push(path);
                }
                Err(e) => tracing::warn!("no thumbnail for {}: {e}", h.chip_id),
            }
        }
    }
    Ok(written)
}

/// A self-contained HTML page of the results: every thumbnail is embedded as a data URI,
/// so the page references no other file.
pub fn html_page(results: &[QueryResult], index: &Path, size: usize) -> String {
    let mut body = String::new();
    for r in results {
        body.push_str(&format!("<h2>{}</h2>\n", escape(&r.query)));
        if !r.unknown_words.is_empty() {
            body.push_str(&format!(
                "<p class=note>unknown words ignored: {}</p>\n",
                escape(&r.unknown_words.join(", "))
            ));
        }
        body.push_str(&format!(
            "<p class=note>{} chips compared, {} scored with S, stage 1 {:.0} ms, stage 2 {:.0} ms</p>\n<div class=grid>\n",
            r.chips_scanned, r.scored, r.stage1_ms, r.stage2_ms
        ));
        for h in &r.hits {
            let img = match chip_png(&h.scene, h.window, size) {
                Ok(png) => format!(
                    "<img alt=\"{}\" src=\"{}\">",
                    escape(&h.chip_id),
                    crate::html::png_data_uri(&png)
                ),
                Err(e) => format!("<div class=missing>no thumbnail: {}</div>", escape(&e.to_string())),
            };
            let place =
                h.center.map_or("not georeferenced".to_string(), |c| format!("{:.5}, {:.5}", c[1], c[0]));
            body.push_str(&format!(
                "<figure>{img}<figcaption><b>#{}</b> S {:.4} · sim<sub>g</sub> {:.4}<br>{}<br>window {},{} {}×{}<br>lat, lon {place}</figcaption></figure>\n",
                h.rank,
                h.score,
                h.sim_g,
                escape(&file_name(&h.scene)),
                h.window[0],
                h.window[1],
                h.window[2],
                h.window[3],
            ));
        }
        body.push_str("</div>\n");
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=utf-8><title>acf-index: {}</title>\n<style>\
body{{font-family:sans-serif;margin:1.5em;background:#fafafa}}.grid{{display:flex;flex-wrap:wrap;gap:12px}}\
figure{{margin:0;background:#fff;padding:6px;border:1px solid #ddd;width:{size}px}}img{{width:{size}px;height:{size}px;image-rendering:pixelated}}\
figcaption{{font-size:12px;line-height:1.4}}.note{{color:#666;font-size:13px}}.missing{{width:{size}px;height:{size}px;background:#eee;font-size:12px}}\
</style></head><body>\n<h1>acf-index results</h1><p class=note>index {}</p>\n{body}</body></html>\n",
        escape(&results.iter().map(|r| r.query.as_str()).collect::<Vec<_>>().join(" | ")),
        escape(&index.display().to_string()),
    )
}

fn file_name(scene: &str) -> String {
    Path::new(scene).file_name().map_or(scene.to_string(), |n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_windows_are_drawn_as_read_and_gsd_windows_fill_the_thumbnail() {
        let win = |width, height| Window { col: 0, row: 0, width, height };
        assert_eq!(thumbnail_buffer(&win(224, 224), (1000, 900), 224), (224, 224));
        // A scene 100 px wide: its windows are 100 wide at native resolution.
        assert_eq!(thumbnail_buffer(&win(100, 224), (100, 900), 224), (100, 224));
        // --gsd 2 on 1 m (448 px windows), --gsd 0.5 (112 px), and a 300 px wide scene at 2 m.
        assert_eq!(thumbnail_buffer(&win(448, 448), (1000, 900), 224), (224, 224));
        assert_eq!(thumbnail_buffer(&win(112, 112), (1000, 900), 224), (224, 224));
        assert_eq!(thumbnail_buffer(&win(300, 448), (300, 900), 224), (150, 224));
    }
}
