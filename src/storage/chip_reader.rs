//! Stage 2 reads: the chips picked by stage 1 (or every chip, for `--exhaustive`), with
//! their region features, using a Parquet row selection so that only the pages holding the
//! selected rows are read.

use std::ops::Range;
use std::path::Path;

use arrow::array::{
    Array, AsArray, BinaryArray, FixedSizeBinaryArray, FixedSizeListArray, Float32Array, Int32Array,
    RecordBatch, StringArray,
};
use arrow::datatypes::{Float32Type, TimestampMicrosecondType};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection};

use super::global_reader::bbox_at;
use super::schema::{NodesDtype, columns};
use crate::error::{AcfError, Result};

/// A stored chip with its features (nodes as stored: see `nodes_dtype`).
#[derive(Debug, Clone)]
pub struct StoredChip {
    pub row: usize,
    pub chip_id: String,
    pub scene: String,
    pub window: [i32; 4],
    pub bbox: Option<[f64; 4]>,
    pub geometry: Option<Vec<u8>>,
    pub valid_fraction: f32,
    pub acquired_us: Option<i64>,
    pub global: Vec<f32>,
    /// Region features as stored: k × D little-endian values of `nodes_dtype`.
    pub nodes: Vec<u8>,
    pub nodes_dtype: NodesDtype,
}

const COLUMNS: [&str; 12] = [
    columns::CHIP_ID,
    columns::SCENE,
    columns::COL,
    columns::ROW,
    columns::WIDTH,
    columns::HEIGHT,
    columns::GEOMETRY,
    columns::BBOX,
    columns::VALID_FRACTION,
    columns::ACQUIRED,
    columns::GLOBAL,
    columns::NODES,
];

/// Reads rows `rows` (sorted, unique) of a part file; `None` reads every row, calling
/// `each` with batches of at most `batch` chips so memory stays bounded.
pub fn read_rows(
    path: &Path,
    rows: Option<&[usize]>,
    batch: usize,
    each: impl FnMut(Vec<StoredChip>) -> Result<()>,
) -> Result<()> {
    read_columns(path, rows, batch, &COLUMNS, each)
}

/// [`read_rows`] reading only `global` and `nodes` (what scoring needs): the other fields of
/// the returned chips are empty. Stage 2 scores N candidates this way and reads the full rows
/// of the top k only.
pub fn read_features(
    path: &Path,
    rows: &[usize],
    each: impl FnMut(Vec<StoredChip>) -> Result<()>,
) -> Result<()> {
    read_columns(path, Some(rows), 1024, &[columns::GLOBAL, columns::NODES], each)
}

fn read_columns(
    path: &Path,
    rows: Option<&[usize]>,
    batch: usize,
    columns: &[&str],
    mut each: impl FnMut(Vec<StoredChip>) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| AcfError::io(path, "cannot open part file", e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
        file,
        ArrowReaderOptions::new().with_page_index(true),
    )
    .map_err(|e| bad(path, e))?;
    let meta = builder.metadata().clone();
    let total = meta.file_metadata().num_rows() as usize;
    let schema = meta.file_metadata().schema_descr();
    let fields = schema.root_schema().get_fields();
    let indices: Vec<usize> = columns
        .iter()
        .map(|name| {
            fields.iter().position(|f| f.name() == *name).ok_or_else(|| AcfError::Index {
                path: path.to_path_buf(),
                reason: format!("no '{name}' column: not an acf-index part file"),
            })
        })
        .collect::<Result<_>>()?;
    let mask = ProjectionMask::roots(schema, indices);
    let mut builder = builder.with_projection(mask).with_batch_size(batch.max(1));
    let row_numbers: Vec<usize> = match rows {
        Some(rows) => {
            builder = builder
                .with_row_selection(RowSelection::from_consecutive_ranges(ranges(rows).into_iter(), total));
            rows.to_vec()
        }
        None => (0..total).collect(),
    };
    let reader = builder.build().map_err(|e| bad(path, e))?;
    let mut next = 0usize;
    for batch in reader {
        let batch = batch
            .map_err(|e| AcfError::Index { path: path.to_path_buf(), reason: format!("cannot read: {e}") })?;
        let chips = decode(&batch, &row_numbers[next..next + batch.num_rows()], path)?;
        next += batch.num_rows();
        each(chips)?;
    }
    Ok(())
}

/// Sorted unique rows as consecutive ranges.
fn ranges(rows: &[usize]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for &r in rows {
        match out.last_mut() {
            Some(last) if last.end == r => last.end += 1,
            _ => out.push(r..r + 1),
        }
    }
    out
}

fn decode(batch: &RecordBatch, rows: &[usize], path: &Path) -> Result<Vec<StoredChip>> {
    let wrong = |what: &str| AcfError::Index {
        path: path.to_path_buf(),
        reason: format!("column '{what}' has an unexpected type"),
    };
    let col = |name: &str| batch.column_by_name(name).ok_or_else(|| wrong(name));
    // Metadata columns are absent when only features were read.
    let meta = batch.column_by_name(columns::CHIP_ID).is_some();
    let opt = |name: &str| meta.then(|| batch.column_by_name(name)).flatten();
    let strings = |name: &str| -> Result<Option<StringArray>> {
        opt(name)
            .map(|c| c.as_any().downcast_ref::<StringArray>().cloned().ok_or_else(|| wrong(name)))
            .transpose()
    };
    let ints = |name: &str| -> Result<Option<Int32Array>> {
        opt(name)
            .map(|c| c.as_any().downcast_ref::<Int32Array>().cloned().ok_or_else(|| wrong(name)))
            .transpose()
    };
    let (chip_id, scene) = (strings(columns::CHIP_ID)?, strings(columns::SCENE)?);
    let (c, r, w, h) =
        (ints(columns::COL)?, ints(columns::ROW)?, ints(columns::WIDTH)?, ints(columns::HEIGHT)?);
    let geometry = opt(columns::GEOMETRY)
        .map(|c| c.as_any().downcast_ref::<BinaryArray>().cloned().ok_or_else(|| wrong(columns::GEOMETRY)))
        .transpose()?;
    let bbox = opt(columns::BBOX)
        .map(|c| c.as_struct_opt().cloned().ok_or_else(|| wrong(columns::BBOX)))
        .transpose()?;
    let valid = opt(columns::VALID_FRACTION)
        .map(|c| c.as_primitive_opt::<Float32Type>().cloned().ok_or_else(|| wrong(columns::VALID_FRACTION)))
        .transpose()?;
    let acquired = opt(columns::ACQUIRED)
        .map(|c| {
            c.as_primitive_opt::<TimestampMicrosecondType>().cloned().ok_or_else(|| wrong(columns::ACQUIRED))
        })
        .transpose()?;
    let global = col(columns::GLOBAL)?
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .cloned()
        .ok_or_else(|| wrong(columns::GLOBAL))?;
    let nodes = col(columns::NODES)?
        .as_any()
        .downcast_ref::<FixedSizeBinaryArray>()
        .cloned()
        .ok_or_else(|| wrong(columns::NODES))?;
    let schema = batch.schema();
    let dtype = schema
        .field_with_name(columns::NODES)
        .ok()
        .and_then(|f| f.metadata().get(NodesDtype::METADATA_KEY).cloned())
        .ok_or_else(|| wrong("nodes (no acf_index:dtype)"))?;
    let nodes_dtype = NodesDtype::from_numpy(&dtype).ok_or_else(|| wrong("nodes (acf_index:dtype)"))?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for (i, &row) in rows.iter().enumerate().take(batch.num_rows()) {
        let g = global.value(i);
        let g = g
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| wrong(columns::GLOBAL))?
            .values()
            .to_vec();
        let nodes_bytes = nodes.value(i).to_vec();
        let int = |a: &Option<Int32Array>| a.as_ref().map_or(0, |a| a.value(i));
        out.push(StoredChip {
            row,
            chip_id: chip_id.as_ref().map_or(String::new(), |a| a.value(i).to_string()),
            scene: scene.as_ref().map_or(String::new(), |a| a.value(i).to_string()),
            window: [int(&c), int(&r), int(&w), int(&h)],
            bbox: bbox.as_ref().and_then(|b| bbox_at(b, i)),
            geometry: geometry.as_ref().and_then(|g| g.is_valid(i).then(|| g.value(i).to_vec())),
            valid_fraction: valid.as_ref().map_or(0.0, |v| v.value(i)),
            acquired_us: acquired.as_ref().and_then(|a| a.is_valid(i).then(|| a.value(i))),
            global: g,
            nodes: nodes_bytes,
            nodes_dtype,
        });
    }
    Ok(out)
}

fn bad(path: &Path, e: parquet::errors::ParquetError) -> AcfError {
    AcfError::Index { path: path.to_path_buf(), reason: format!("cannot read Parquet: {e}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_consecutive_ranges() {
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), vec![1..4, 7..8, 9..11]);
        assert!(ranges(&[]).is_empty());
    }
}
