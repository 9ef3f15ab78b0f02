//! `acf-index embed`: a query's global vector (and the tokens it was read as), for engines
//! that run stage 1 themselves — DuckDB, Spark or DataFusion over `parts/*.parquet`.

use serde::Serialize;

use super::words::{Mapping, QueryReader};
use crate::error::Result;
use crate::model::native::QueryModel;

/// A text query as the model reads it.
#[derive(Debug, Clone, Serialize)]
pub struct QueryEmbedding {
    pub text: String,
    /// The vocabulary words the query was read as, in order (see `search::words`).
    pub tokens: Vec<String>,
    /// Unknown words read as known ones.
    pub mappings: Vec<Mapping>,
    /// Words outside the vocabulary.
    pub unknown: Vec<String>,
    /// The global text vector (D floats, unit length): `sim_g` = its dot product with a
    /// chip's `global` column.
    pub global: Vec<f32>,
}

/// Reads `text` as `query` does and encodes it; fails when nothing searchable is left.
pub fn embed(model: &QueryModel, text: &str) -> Result<QueryEmbedding> {
    let read = QueryReader::new(&model.vocab).read(text, false)?;
    let global = model.encode(&read.text())?.text.global;
    Ok(QueryEmbedding {
        text: text.to_string(),
        tokens: read.tokens,
        mappings: read.mappings,
        unknown: read.unknown,
        global,
    })
}

impl QueryEmbedding {
    /// The vector as a DuckDB array literal, `[…]::FLOAT[D]`.
    pub fn sql_literal(&self) -> String {
        let values: Vec<String> = self.global.iter().map(|v| format!("{v:e}")).collect();
        format!("[{}]::FLOAT[{}]", values.join(","), self.global.len())
    }
}
