//! Reading Princeton WordNet 3.0 in its documented database format (`wndb(5WN)`), as
//! Debian's `wordnet-base` installs it under `/usr/share/wordnet`: the sorted `index.POS`
//! files are binary-searched in memory, synsets are read from `data.POS` at their byte
//! offsets, and `POS.exc` holds irregular forms. Written here rather than taken from a crate:
//! the Rust WordNet crates found need other data layouts or are unmaintained, and the format
//! is a few line shapes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Parts of speech with their file suffixes.
pub const POS: [&str; 3] = ["noun", "verb", "adj"];

/// One synset: its words (multi-word lemmas with spaces, proper nouns and acronyms keep
/// their capitals) and its hypernyms' offsets.
#[derive(Debug, Clone)]
pub struct Synset {
    pub words: Vec<String>,
    pub hypernyms: Vec<u64>,
}

/// An opened WordNet database.
pub struct WordNet {
    dir: PathBuf,
    index: HashMap<&'static str, Vec<u8>>,
    exceptions: HashMap<&'static str, HashMap<String, Vec<String>>>,
    data: Mutex<HashMap<&'static str, BufReader<File>>>,
}

impl WordNet {
    /// The default location of Debian's `wordnet-base`.
    pub const DEFAULT_DIR: &'static str = "/usr/share/wordnet";

    /// Opens the database in `dir`; `None` when it is not there (the caller goes on without).
    pub fn open(dir: &Path) -> Option<WordNet> {
        let mut index = HashMap::new();
        let mut exceptions = HashMap::new();
        let mut data = HashMap::new();
        for pos in POS {
            index.insert(pos, std::fs::read(dir.join(format!("index.{pos}"))).ok()?);
            data.insert(pos, BufReader::new(File::open(dir.join(format!("data.{pos}"))).ok()?));
            let mut exc: HashMap<String, Vec<String>> = HashMap::new();
            if let Ok(text) = std::fs::read_to_string(dir.join(format!("{pos}.exc"))) {
                for line in text.lines() {
                    let mut parts = line.split_whitespace();
                    if let Some(form) = parts.next() {
                        exc.entry(form.to_string()).or_default().extend(parts.map(String::from));
                    }
                }
            }
            exceptions.insert(pos, exc);
        }
        Some(WordNet { dir: dir.to_path_buf(), index, exceptions, data: Mutex::new(data) })
    }

    /// Where the database was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// WordNet's `morphy`: the base forms of `word` as `pos` that the index knows (the word
    /// itself, irregular forms from the exception list, then the detachment rules).
    pub fn base_forms(&self, word: &str, pos: &'static str) -> Vec<String> {
        let mut out = Vec::new();
        let push = |w: String, out: &mut Vec<String>| {
            if !out.contains(&w) && self.offsets(&w, pos).is_some() {
                out.push(w);
            }
        };
        push(word.to_string(), &mut out);
        if let Some(forms) = self.exceptions.get(pos).and_then(|e| e.get(word)) {
            for f in forms {
                push(f.clone(), &mut out);
            }
        }
        let rules: &[(&str, &str)] = match pos {
            "noun" => &[
                ("s", ""),
                ("ses", "s"),
                ("xes", "x"),
                ("zes", "z"),
                ("ches", "ch"),
                ("shes", "sh"),
                ("men", "man"),
                ("ies", "y"),
            ],
            "verb" => &[
                ("s", ""),
                ("ies", "y"),
                ("es", "e"),
                ("es", ""),
                ("ed", "e"),
                ("ed", ""),
                ("ing", "e"),
                ("ing", ""),
            ],
            _ => &[("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
        };
        for (suffix, replacement) in rules {
            if let Some(stem) = word.strip_suffix(suffix).filter(|s| !s.is_empty()) {
                push(format!("{stem}{replacement}"), &mut out);
            }
        }
        out
    }

    /// The synsets of a base form, most frequent sense first.
    pub fn synsets(&self, lemma: &str, pos: &'static str) -> Vec<Synset> {
        self.offsets(lemma, pos).unwrap_or_default().into_iter().filter_map(|o| self.synset(o, pos)).collect()
    }

    /// The synset at byte `offset` of `data.POS`.
    pub fn synset(&self, offset: u64, pos: &'static str) -> Option<Synset> {
        let mut files = self.data.lock().ok()?;
        let file = files.get_mut(pos)?;
        file.seek(SeekFrom::Start(offset)).ok()?;
        let mut line = String::new();
        file.read_line(&mut line).ok()?;
        parse_synset(&line)
    }

    /// Synset offsets of `lemma` (binary search over the sorted index file).
    fn offsets(&self, lemma: &str, pos: &'static str) -> Option<Vec<u64>> {
        let index = self.index.get(pos)?;
        let key = lemma.replace(' ', "_");
        let line = binary_search_line(index, key.as_bytes())?;
        let fields: Vec<&str> = std::str::from_utf8(line).ok()?.split_whitespace().collect();
        // lemma pos synset_cnt p_cnt [ptr_symbol × p_cnt] sense_cnt tagsense_cnt offsets…
        let synsets: usize = fields.get(2)?.parse().ok()?;
        let pointers: usize = fields.get(3)?.parse().ok()?;
        let first = 4 + pointers + 2;
        fields.get(first..first + synsets)?.iter().map(|o| o.parse().ok()).collect()
    }
}

/// Parses a `data.POS` line: `offset lex_filenum ss_type w_cnt word lex_id … p_cnt ptr… | gloss`.
fn parse_synset(line: &str) -> Option<Synset> {
    let fields: Vec<&str> = line.split(" | ").next()?.split_whitespace().collect();
    let words_count = usize::from_str_radix(fields.get(3)?, 16).ok()?;
    let words: Vec<String> = (0..words_count)
        .filter_map(|i| fields.get(4 + 2 * i))
        .map(|w| strip_marker(w).replace('_', " "))
        .collect();
    let p = 4 + 2 * words_count;
    let pointers: usize = fields.get(p)?.parse().ok()?;
    let hypernyms = (0..pointers)
        .filter_map(|i| {
            let at = p + 1 + 4 * i;
            let (symbol, offset) = (fields.get(at)?, fields.get(at + 1)?);
            (*symbol == "@" || *symbol == "@i").then(|| offset.parse().ok()).flatten()
        })
        .collect();
    Some(Synset { words, hypernyms })
}

/// Adjective words carry a syntactic marker such as `(a)`.
fn strip_marker(word: &str) -> &str {
    word.split('(').next().unwrap_or(word)
}

/// The line of a sorted WordNet index file that starts with `key` followed by a space.
/// License lines at the top start with spaces and sort first.
fn binary_search_line<'a>(file: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let line_at = |pos: usize| -> (usize, &'a [u8]) {
        let start = file[..pos].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let end = file[start..].iter().position(|&b| b == b'\n').map_or(file.len(), |i| start + i);
        (start, &file[start..end])
    };
    let (mut lo, mut hi) = (0usize, file.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        let (start, line) = line_at(mid);
        let word = line.split(|&b| b == b' ').next().unwrap_or(line);
        match word.cmp(key) {
            std::cmp::Ordering::Equal if !line.starts_with(b" ") => return Some(line),
            std::cmp::Ordering::Less | std::cmp::Ordering::Equal => lo = start + line.len() + 1,
            std::cmp::Ordering::Greater => hi = start,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synset_lines_parse_words_and_hypernyms() {
        let s =
            parse_synset("03721590 06 n 02 marina 0 yacht_basin 0 001 @ 03216828 n 0000 | a fancy dock\n")
                .unwrap();
        assert_eq!(s.words, vec!["marina", "yacht basin"]);
        assert_eq!(s.hypernyms, vec![3216828]);
    }

    #[test]
    fn index_lines_are_found_by_binary_search() {
        let file = b"  1 license line\n  2 more\nabbey n 1 1 @ 1 0 01\nboat n 2 1 @ 2 0 02 03\nharbor n 1 1 @ 1 0 04\n";
        assert!(binary_search_line(file, b"boat").unwrap().starts_with(b"boat n 2"));
        assert!(binary_search_line(file, b"harbor").is_some());
        assert!(binary_search_line(file, b"abbey").is_some());
        assert!(binary_search_line(file, b"bo").is_none());
        assert!(binary_search_line(file, b"zebra").is_none());
    }

    #[test]
    fn the_installed_database_knows_plurals_and_hypernyms() {
        let Some(wn) = WordNet::open(Path::new(WordNet::DEFAULT_DIR)) else {
            eprintln!("skipped: no WordNet in {} (apt-get install wordnet-base)", WordNet::DEFAULT_DIR);
            return;
        };
        assert_eq!(wn.base_forms("sailboats", "noun"), vec!["sailboat"]);
        assert_eq!(wn.base_forms("geese", "noun"), vec!["goose"]);
        let marina = wn.synsets("marina", "noun");
        assert!(!marina.is_empty() && !marina[0].hypernyms.is_empty());
        let up = wn.synset(marina[0].hypernyms[0], "noun").unwrap();
        assert!(up.words.iter().any(|w| w == "dock"), "{up:?}");
    }
}
