//! Caption tokenisation and the word vocabulary (Sec. 3.1.2), saved with a model as
//! `vocab.json` so that indexing and search map words to the ids the model was trained on.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{AcfError, Result};

/// Layout version of `vocab.json`.
pub const VOCAB_FORMAT_VERSION: u32 = 1;
/// Padding token, always id 0 (the text encoder masks it out).
pub const PAD: &str = "<pad>";
/// Out-of-vocabulary token, always id 1.
pub const UNK: &str = "<unk>";
/// Id of [`PAD`].
pub const PAD_ID: i64 = 0;
/// Id of [`UNK`].
pub const UNK_ID: i64 = 1;

/// Splits a caption into lower-case `[a-z0-9]+` runs; every other character separates.
pub fn tokenize(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// A caption mapped to ids: `ids` (with [`UNK_ID`] for unknown words) and the distinct
/// unknown words in order of appearance, so a search can tell the user what it ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    pub unknown: Vec<String>,
}

/// Word ↔ id table: `<pad>` = 0, `<unk>` = 1, then words by descending training count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocab {
    words: Vec<String>,
    ids: HashMap<String, i64>,
    min_count: u32,
}

/// On-disk form of `vocab.json`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VocabFile {
    format_version: u32,
    min_count: u32,
    words: Vec<String>,
}

impl Vocab {
    /// Builds the vocabulary of `captions`, keeping words seen at least `min_count` times.
    /// Ids are deterministic: by descending count, ties alphabetical.
    pub fn build<'a>(captions: impl IntoIterator<Item = &'a str>, min_count: u32) -> Vocab {
        let mut counts: HashMap<String, u32> = HashMap::new();
        for caption in captions {
            for token in tokenize(caption) {
                *counts.entry(token).or_insert(0) += 1;
            }
        }
        let mut kept: Vec<(String, u32)> = counts.into_iter().filter(|(_, c)| *c >= min_count).collect();
        kept.sort_by(|(wa, ca), (wb, cb)| cb.cmp(ca).then_with(|| wa.cmp(wb)));
        let words = [PAD.to_string(), UNK.to_string()].into_iter().chain(kept.into_iter().map(|(w, _)| w));
        Self::from_words(words.collect(), min_count)
    }

    fn from_words(words: Vec<String>, min_count: u32) -> Vocab {
        let ids = words.iter().enumerate().map(|(i, w)| (w.clone(), i as i64)).collect();
        Vocab { words, ids, min_count }
    }

    /// Every entry by id (`<pad>`, `<unk>`, then words by descending training count).
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Number of entries, including `<pad>` and `<unk>` (the embedding table's row count).
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True only for a vocabulary without even `<pad>`/`<unk>` (never built by this module).
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The `min_count` the vocabulary was built with.
    pub fn min_count(&self) -> u32 {
        self.min_count
    }

    /// Id of `word`, if it is in the vocabulary.
    pub fn id(&self, word: &str) -> Option<i64> {
        self.ids.get(word).copied()
    }

    /// Word with id `id`, if any.
    pub fn word(&self, id: i64) -> Option<&str> {
        usize::try_from(id).ok().and_then(|i| self.words.get(i)).map(String::as_str)
    }

    /// Tokenises `text`, keeps the first `max_tokens` tokens and maps them to ids.
    pub fn encode(&self, text: &str, max_tokens: usize) -> Encoded {
        let mut ids = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        for token in tokenize(text).into_iter().take(max_tokens) {
            match self.id(&token) {
                Some(id) => ids.push(id),
                None => {
                    ids.push(UNK_ID);
                    if !unknown.contains(&token) {
                        unknown.push(token);
                    }
                }
            }
        }
        Encoded { ids, unknown }
    }

    /// Like [`Vocab::encode`], but a caption without any known word (or with no word at all)
    /// is an [`AcfError::NoKnownWords`]: such a query would return arbitrary results.
    pub fn encode_known(&self, text: &str, max_tokens: usize) -> Result<Encoded> {
        let encoded = self.encode(text, max_tokens);
        if encoded.ids.iter().all(|&id| id == UNK_ID) {
            return Err(AcfError::NoKnownWords { text: text.to_string() });
        }
        Ok(encoded)
    }

    /// Writes `vocab.json` atomically: a temporary file in the same directory, then a rename,
    /// so a reader never sees a half-written vocabulary.
    pub fn save(&self, path: &Path) -> Result<()> {
        let file = VocabFile {
            format_version: VOCAB_FORMAT_VERSION,
            min_count: self.min_count,
            words: self.words.clone(),
        };
        // A struct of numbers and strings always serialises.
        let text = serde_json::to_string_pretty(&file).unwrap_or_default() + "\n";
        crate::files::write_atomic(path, text.as_bytes())
    }

    /// Reads and checks a `vocab.json` written by [`Vocab::save`].
    pub fn load(path: &Path) -> Result<Vocab> {
        let bad = |reason: String| AcfError::Vocab { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(path)
            .map_err(|source| AcfError::io(path, "cannot read vocabulary", source))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        match value.get("format_version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(VOCAB_FORMAT_VERSION) => {}
            Some(v) => {
                return Err(bad(format!(
                    "format_version {v} is not supported (this acf-index reads {VOCAB_FORMAT_VERSION})"
                )));
            }
            None => return Err(bad("missing or non-integer format_version".into())),
        }
        let file: VocabFile = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        if file.words.first().map(String::as_str) != Some(PAD)
            || file.words.get(1).map(String::as_str) != Some(UNK)
        {
            return Err(bad(format!("words must start with \"{PAD}\", \"{UNK}\" (ids 0 and 1)")));
        }
        let mut seen = HashSet::new();
        for (i, word) in file.words.iter().enumerate().skip(2) {
            if tokenize(word) != [word.as_str()] {
                return Err(bad(format!("word {word:?} at id {i} is not a lower-case [a-z0-9]+ token")));
            }
            if !seen.insert(word.as_str()) {
                return Err(bad(format!("word {word:?} appears more than once (again at id {i})")));
            }
        }
        Ok(Self::from_words(file.words, file.min_count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("acf-vocab-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn tokenize_examples() {
        assert_eq!(
            tokenize("There is a piece of farmland ."),
            ["there", "is", "a", "piece", "of", "farmland"]
        );
        assert_eq!(
            tokenize("Two  BUILDINGS,next-to 3 cars!"),
            ["two", "buildings", "next", "to", "3", "cars"]
        );
        assert_eq!(tokenize("a 10m-wide road's edge"), ["a", "10m", "wide", "road", "s", "edge"]);
        assert_eq!(tokenize("café über"), ["caf", "ber"]);
        assert!(tokenize(" .,;!? ").is_empty());
    }

    #[test]
    fn build_respects_min_count_and_is_deterministic() {
        let caps = ["a red roof", "A red car.", "a car", "green"];
        let v = Vocab::build(caps, 2);
        let words: Vec<&str> = (0..v.len() as i64).map(|i| v.word(i).unwrap()).collect();
        assert_eq!(words, [PAD, UNK, "a", "car", "red"]);
        assert_eq!(v.id("green"), None);
        assert_eq!(v.word(99), None);
        assert_eq!(v.word(-1), None);
        let again = Vocab::build(caps.iter().rev().copied(), 2);
        assert_eq!(again, v);
        assert_eq!(Vocab::build(caps, 1).len(), 7);
    }

    #[test]
    fn unknown_words_are_reported_and_all_unknown_is_an_error() {
        let v = Vocab::build(["a river runs through the forest"], 1);
        let e = v.encode("A lake, a lake and the river", 32);
        assert_eq!(
            e.ids,
            [
                v.id("a").unwrap(),
                UNK_ID,
                v.id("a").unwrap(),
                UNK_ID,
                UNK_ID,
                v.id("the").unwrap(),
                v.id("river").unwrap()
            ]
        );
        assert_eq!(e.unknown, ["lake", "and"]);
        assert_eq!(v.encode("a river b c", 2).ids.len(), 2);
        assert!(v.encode_known("river", 32).is_ok());
        let err = v.encode_known("Skyscrapers downtown", 32).unwrap_err();
        assert!(matches!(err, AcfError::NoKnownWords { .. }));
        assert!(err.to_string().contains("Skyscrapers downtown"));
        assert!(v.encode_known("  !! ", 32).is_err());
    }

    #[test]
    fn save_load_round_trip() {
        let dir = scratch_dir("roundtrip");
        let path = dir.join("vocab.json");
        let v = Vocab::build(["some tennis courts", "two tennis courts near 3 houses"], 1);
        v.save(&path).unwrap();
        let back = Vocab::load(&path).unwrap();
        assert_eq!(back, v);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "temporary file left behind");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_files_are_clear_errors_naming_the_file() {
        let dir = scratch_dir("corrupt");
        let path = dir.join("vocab.json");
        let cases = [
            ("{not json", "not valid JSON"),
            (r#"{"format_version": 7, "min_count": 1, "words": ["<pad>", "<unk>"]}"#, "format_version 7"),
            (r#"{"format_version": 1, "min_count": 1, "words": ["<unk>", "<pad>"]}"#, "<pad>"),
            (
                r#"{"format_version": 1, "min_count": 1, "words": ["<pad>", "<unk>", "road", "road"]}"#,
                "\"road\"",
            ),
            (r#"{"format_version": 1, "min_count": 1, "words": ["<pad>", "<unk>", "Road"]}"#, "\"Road\""),
            (r#"{"format_version": 1, "words": ["<pad>", "<unk>"]}"#, "min_count"),
        ];
        for (text, needle) in cases {
            std::fs::write(&path, text).unwrap();
            let err = Vocab::load(&path).unwrap_err();
            assert!(matches!(err, AcfError::Vocab { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains(&*path.to_string_lossy()) && msg.contains(needle), "{msg}");
        }
        let missing = Vocab::load(&dir.join("absent.json")).unwrap_err().to_string();
        assert!(missing.contains("absent.json"), "{missing}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
