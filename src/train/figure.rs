//! The paper's visual retrieval analysis (Fig. 7) on our data: for chosen captions of a split
//! their top-5 images, and for chosen images their top-5 captions, ranked by the full S, with
//! the true matches marked. One self-contained HTML page (images embedded as data URIs).

use image::imageops::{self, FilterType};

use super::evaluate::EvalSet;
use super::loader::TrainImage;
use crate::error::Result;
use crate::html::{escape, png, png_data_uri};
use crate::model::Vocab;

/// Results shown per query (the paper shows five).
pub const TOP: usize = 5;
/// Side of the thumbnails in the page, in pixels.
const THUMB: u32 = 160;

/// What the page is made from: the split's images (in the set's order), the set, the model's
/// vocabulary (to print captions as the model read them) and the set's score matrix
/// (images × captions, row-major, as [`super::evaluate::score_all`] returns it).
pub struct FigureData<'a> {
    pub images: &'a [TrainImage],
    pub set: &'a EvalSet,
    pub vocab: &'a Vocab,
    pub scores: &'a [f32],
    /// A line saying which model, split and scoring produced the scores.
    pub title: String,
}

/// `count` indices spread evenly over `0..n` (the same ones on every run, so that two models
/// can be compared on one page each); `shift` moves them half a step, so that the caption
/// queries come from other images than the image queries.
pub fn spread(n: usize, count: usize, shift: bool) -> Vec<usize> {
    let count = count.min(n);
    let half = if shift { 0.5 } else { 0.0 };
    (0..count).map(|k| (((k as f64 + half) * n as f64 / count as f64) as usize).min(n - 1)).collect()
}

/// The indices of the `k` largest values of `row` (ties: lower index first).
fn top_k(row: impl Iterator<Item = f32>, k: usize) -> Vec<(usize, f32)> {
    let mut all: Vec<(usize, f32)> = row.enumerate().collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

impl FigureData<'_> {
    fn caption_text(&self, c: usize) -> String {
        let words: Vec<&str> =
            self.set.captions[c].iter().map(|&id| self.vocab.word(id).unwrap_or("<unk>")).collect();
        words.join(" ")
    }

    fn image_name(&self, i: usize) -> String {
        self.images[i]
            .path
            .file_name()
            .map_or_else(|| format!("image {i}"), |n| n.to_string_lossy().into_owned())
    }

    fn thumbnail(&self, i: usize) -> Result<String> {
        let small = imageops::resize(&self.images[i].pixels, THUMB, THUMB, FilterType::Triangle);
        Ok(png_data_uri(&png(&small)?))
    }

    /// The top-[`TOP`] images of caption `c`: (image, score, true match).
    pub fn images_for_caption(&self, c: usize) -> Vec<(usize, f32, bool)> {
        let n_cap = self.set.captions.len();
        let column = (0..self.set.images()).map(|i| self.scores[i * n_cap + c]);
        top_k(column, TOP).into_iter().map(|(i, s)| (i, s, self.set.caption_image[c] == i)).collect()
    }

    /// The top-[`TOP`] captions of image `i`: (caption, score, true match, same words as one
    /// of the image's own captions).
    pub fn captions_for_image(&self, i: usize) -> Vec<(usize, f32, bool, bool)> {
        let n_cap = self.set.captions.len();
        let own: Vec<&Vec<i64>> =
            (0..n_cap).filter(|&c| self.set.caption_image[c] == i).map(|c| &self.set.captions[c]).collect();
        top_k(self.scores[i * n_cap..(i + 1) * n_cap].iter().copied(), TOP)
            .into_iter()
            .map(|(c, s)| {
                let truth = self.set.caption_image[c] == i;
                (c, s, truth, !truth && own.contains(&&self.set.captions[c]))
            })
            .collect()
    }

    /// The page for `count` caption queries and `count` image queries (see [`spread`]).
    pub fn page(&self, count: usize) -> Result<String> {
        let mut body = String::new();
        body.push_str("<h2>Text → image: the top 5 images of a caption</h2>\n");
        let caption_owners = spread(self.set.images(), count, true);
        for &owner in &caption_owners {
            let Some(c) = (0..self.set.captions.len()).find(|&c| self.set.caption_image[c] == owner) else {
                continue;
            };
            body.push_str(&format!(
                "<section><p class=query>“{}” <span class=src>(a caption of {})</span></p><div class=row>\n",
                escape(&self.caption_text(c)),
                escape(&self.image_name(owner))
            ));
            for (rank, (i, s, truth)) in self.images_for_caption(c).into_iter().enumerate() {
                body.push_str(&format!(
                    "<figure class=\"{}\"><img alt=\"{}\" src=\"{}\"><figcaption>#{} {}S {:.3}<br>{}</figcaption></figure>\n",
                    if truth { "hit" } else { "miss" },
                    escape(&self.image_name(i)),
                    self.thumbnail(i)?,
                    rank + 1,
                    if truth { "✓ " } else { "" },
                    s,
                    escape(&self.image_name(i))
                ));
            }
            body.push_str("</div></section>\n");
        }
        body.push_str("<h2>Image → text: the top 5 captions of an image</h2>\n");
        for i in spread(self.set.images(), count, false) {
            body.push_str(&format!(
                "<section class=pair><figure class=query-image><img alt=\"{0}\" src=\"{1}\"><figcaption>{0}</figcaption></figure><ol>\n",
                escape(&self.image_name(i)),
                self.thumbnail(i)?
            ));
            for (c, s, truth, same_words) in self.captions_for_image(i) {
                let mark = if truth {
                    "<b class=ok>✓</b> "
                } else if same_words {
                    "<b class=same>=</b> "
                } else {
                    "<b class=no>✗</b> "
                };
                let from = if truth {
                    String::new()
                } else {
                    format!(
                        " <span class=src>(a caption of {})</span>",
                        escape(&self.image_name(self.set.caption_image[c]))
                    )
                };
                body.push_str(&format!(
                    "<li>{mark}{} <span class=score>S {:.3}</span>{from}</li>\n",
                    escape(&self.caption_text(c)),
                    s
                ));
            }
            body.push_str("</ol></section>\n");
        }
        Ok(format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Retrieval examples</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }}
h1 {{ font-size: 1.3em; }} h2 {{ font-size: 1.1em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }}
.note, .src, .score {{ color: #666; font-size: 0.9em; }}
.query {{ margin: 0.8em 0 0.3em; font-weight: 600; }}
.row {{ display: flex; gap: 8px; }}
figure {{ margin: 0; width: {THUMB}px; font-size: 0.8em; }}
figure img {{ width: {THUMB}px; height: {THUMB}px; display: block; border: 4px solid #bbb; box-sizing: border-box; }}
figure.hit img {{ border-color: #1a9a3a; }} figure.miss img {{ border-color: #ddd; }}
.pair {{ display: flex; gap: 16px; align-items: flex-start; margin: 0.8em 0; }}
.pair ol {{ margin: 0; }} .ok {{ color: #1a9a3a; }} .no {{ color: #c33; }} .same {{ color: #b80; }}
</style></head><body>
<h1>Retrieval examples (ACF, Fig. 7 layout)</h1>
<p class=note>{}</p>
<p class=note>Green frame / ✓: the true match. = : not the image's own caption, but word for word the same as one of them (such captions tie, and count as a match in R@K only for their own image). Queries are spread evenly over the split, the same ones on every run.</p>
{body}</body></html>
"#,
            escape(&self.title)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_are_spread_and_stable() {
        assert_eq!(spread(10, 4, false), vec![0, 2, 5, 7]);
        assert_eq!(spread(10, 4, true), vec![1, 3, 6, 8]);
        assert_eq!(spread(3, 10, false), vec![0, 1, 2]);
        assert!(spread(0, 4, false).is_empty());
    }

    fn data_with(scores: Vec<f32>) -> (Vec<TrainImage>, EvalSet, Vocab) {
        let vocab = Vocab::build(["a red roof", "a green field", "a blue lake"], 1);
        let ids = |t: &str| vocab.encode(t, 8).ids;
        let img = |name: &str, caps: Vec<Vec<i64>>| TrainImage {
            path: name.into(),
            pixels: image::RgbImage::new(8, 8),
            captions: caps,
            dataset: 0,
            class: None,
        };
        let images = vec![
            img("roof.jpg", vec![ids("a red roof")]),
            img("field.jpg", vec![ids("a green field"), ids("a blue lake")]),
            img("lake.jpg", vec![ids("a blue lake")]),
        ];
        let set = EvalSet::new(&images, 8, None);
        assert_eq!(set.captions.len() * set.images(), scores.len());
        (images, set, vocab)
    }

    #[test]
    fn rankings_mark_true_matches_and_identical_captions() {
        // 3 images × 4 captions (roof; field, lake; lake).
        let scores = vec![
            0.9, 0.1, 0.2, 0.3, // roof
            0.2, 0.5, 0.8, 0.7, // field: its "lake" caption first, then image 2's identical one
            0.1, 0.3, 0.4, 0.6, // lake
        ];
        let (images, set, vocab) = data_with(scores.clone());
        let fig =
            FigureData { images: &images, set: &set, vocab: &vocab, scores: &scores, title: "t".into() };
        let by_caption = fig.images_for_caption(3); // lake.jpg's caption
        assert_eq!(
            by_caption.iter().map(|r| (r.0, r.2)).collect::<Vec<_>>(),
            vec![(1, false), (2, true), (0, false)]
        );
        let by_image = fig.captions_for_image(1);
        assert_eq!(
            by_image.iter().map(|r| (r.0, r.2, r.3)).collect::<Vec<_>>()[..3],
            [(2, true, false), (3, false, true), (1, true, false)]
        );
        let page = fig.page(2).unwrap();
        assert!(page.contains("a blue lake") && page.contains("data:image/png;base64,"));
        assert!(page.contains("class=\"hit\"") && page.contains("class=same"));
        assert!(!page.contains("src=\"/") && !page.contains("http"), "self-contained");
    }
}
