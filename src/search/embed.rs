//! `acf-index embed`: a query's global vector (and the tokens it was read as), for engines
//! that run stage 1 themselves — DuckDB, Spark or DataFusion over `parts/*.parquet`.

use serde::Serialize;
use tch::{Device, Kind};

use crate::error::Result;
use crate::model::AcfModel;

/// A text query as the model reads it.
#[derive(Debug, Clone, Serialize)]
pub struct QueryEmbedding {
    pub text: String,
    /// The vocabulary words the query was read as, in order (unknown words left out).
    pub tokens: Vec<String>,
    /// Words outside the vocabulary.
    pub unknown: Vec<String>,
    /// The global text vector (D floats, unit length): `sim_g` = its dot product with a
    /// chip's `global` column.
    pub global: Vec<f32>,
}

/// Encodes `text`; fails when no word of it is in the vocabulary.
pub fn embed(model: &AcfModel, text: &str) -> Result<QueryEmbedding> {
    let (feats, encoded) = model.encode_captions(&[text])?;
    let global = Vec::<f32>::try_from(
        feats.global.to_device(Device::Cpu).to_kind(Kind::Float).contiguous().view([-1]),
    )?;
    let e = &encoded[0];
    let tokens = e.ids.iter().filter_map(|&id| model.vocab.word(id)).map(String::from).collect();
    Ok(QueryEmbedding { text: text.to_string(), tokens, unknown: e.unknown.clone(), global })
}

impl QueryEmbedding {
    /// The vector as a DuckDB array literal, `[…]::FLOAT[D]`.
    pub fn sql_literal(&self) -> String {
        let values: Vec<String> = self.global.iter().map(|v| format!("{v:e}")).collect();
        format!("[{}]::FLOAT[{}]", values.join(","), self.global.len())
    }
}
