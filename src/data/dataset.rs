//! RSICD-style dataset JSON (`dataset_rsicd.json`, `dataset_RSITMD.json`, and the sets
//! in shared/data): `images[].filename|split|sentences[].raw`, images in `images/`
//! beside the JSON unless another folder is given.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{AcfError, Result};

#[derive(Debug, Deserialize)]
struct RawDataset {
    #[serde(default)]
    dataset: Option<String>,
    images: Vec<RawImage>,
}

#[derive(Debug, Deserialize)]
struct RawImage {
    filename: String,
    #[serde(default)]
    split: Option<String>,
    #[serde(default)]
    sentences: Vec<RawSentence>,
    /// Any JSON value: other datasets' files may carry a number or null here, which
    /// must not make the whole file unreadable.
    #[serde(default)]
    class: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct RawSentence {
    raw: String,
}

/// One image with its captions.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Full path of the image file.
    pub path: PathBuf,
    /// `train`, `val` or `test` (as written in the JSON).
    pub split: String,
    /// Its captions (usually five).
    pub captions: Vec<String>,
    /// Its scene class when the JSON names one (`images[].class`, as in the UCM-Captions
    /// and RSICD-on-AID sets); used only by `loss.mask_same_class`.
    pub class: Option<String>,
}

/// A loaded dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Name from the JSON's `dataset` field, else the file stem.
    pub name: String,
    /// The JSON file it came from.
    pub source: PathBuf,
    pub samples: Vec<Sample>,
}

impl Dataset {
    /// Loads a dataset JSON; `images_dir` defaults to `images/` beside it.
    pub fn load(json: &Path, images_dir: Option<&Path>) -> Result<Dataset> {
        let text = std::fs::read_to_string(json).map_err(|e| AcfError::io(json, "cannot read dataset", e))?;
        let raw: RawDataset = serde_json::from_str(&text).map_err(|e| AcfError::Dataset {
            path: json.to_path_buf(),
            reason: format!("not an RSICD-style dataset JSON: {e}"),
        })?;
        let root = match images_dir {
            Some(dir) => dir.to_path_buf(),
            None => json.parent().unwrap_or(Path::new(".")).join("images"),
        };
        let samples = raw
            .images
            .into_iter()
            .map(|img| Sample {
                path: root.join(&img.filename),
                split: img.split.unwrap_or_else(|| "train".into()),
                captions: img.sentences.into_iter().map(|s| s.raw).collect(),
                class: match img.class {
                    serde_json::Value::String(name) => Some(name),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                },
            })
            .collect();
        let name = raw.dataset.unwrap_or_else(|| {
            json.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
        });
        Ok(Dataset { name, source: json.to_path_buf(), samples })
    }

    /// Samples of one split (`train`, `val`, `test`).
    pub fn split<'a>(&'a self, split: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.split == split)
    }

    /// Every caption of the dataset.
    pub fn captions(&self) -> impl Iterator<Item = &str> {
        self.samples.iter().flat_map(|s| s.captions.iter().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_rsicd_layout() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("d.json");
        std::fs::write(
            &json,
            r#"{"dataset":"tiny","images":[{"filename":"a.jpg","split":"test","imgid":0,
               "sentences":[{"raw":"A plane.","tokens":["a","plane"]}],"class":"airport"},
               {"filename":"b.jpg","split":"train","sentences":[]},
               {"filename":"c.jpg","class":7},{"filename":"d.jpg","class":null},
               {"filename":"e.jpg","class":["odd"]}]}"#,
        )
        .unwrap();
        let d = Dataset::load(&json, None).unwrap();
        assert_eq!(d.name, "tiny");
        assert_eq!(d.samples[0].path, dir.path().join("images/a.jpg"));
        assert_eq!(d.split("test").count(), 1);
        assert_eq!(d.captions().collect::<Vec<_>>(), vec!["A plane."]);
        assert_eq!(d.samples[0].class.as_deref(), Some("airport"));
        assert_eq!(d.samples[1].class, None);
        // Another file's class field of another type: a number names a class, the rest none.
        let classes: Vec<Option<&str>> = d.samples[2..].iter().map(|s| s.class.as_deref()).collect();
        assert_eq!(classes, [Some("7"), None, None]);
    }

    #[test]
    fn wrong_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("bad.json");
        std::fs::write(&json, r#"{"rows": []}"#).unwrap();
        let err = Dataset::load(&json, None).unwrap_err().to_string();
        assert!(err.contains("bad.json") && err.contains("RSICD"), "{err}");
    }
}
