//! Stage 2 reads: the chips picked by stage 1 (or every chip, for `--exhaustive`), with
//! their region features, using a Parquet row selection so that only the pages holding the
//! selected rows are read.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BinaryArray, FixedSizeBinaryArray, FixedSizeListArray, Float32Array, Int32Array,
    RecordBatch, StringArray,
};
use arrow::datatypes::{Float32Type, TimestampMicrosecondType};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};

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

fn read_columns(
    path: &Path,
    rows: Option<&[usize]>,
    batch: usize,
    columns: &[&str],
    each: impl FnMut(Vec<StoredChip>) -> Result<()>,
) -> Result<()> {
    PartFile::open(path)?.read(rows, batch, columns, each)
}

/// An open part file with its footer and page index parsed once, for a reader that reads it
/// many times (`serve`). The open handle keeps the file readable after a writer replaces or
/// removes it, so a search that started on it finishes on the same data.
#[derive(Clone)]
pub struct PartFile {
    path: PathBuf,
    file: Arc<File>,
    meta: ArrowReaderMetadata,
}

impl PartFile {
    /// Opens `path` and parses its footer and page index.
    pub fn open(path: &Path) -> Result<PartFile> {
        let mut file = File::open(path).map_err(|e| AcfError::io(path, "cannot open part file", e))?;
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new().with_page_index(true))
            .map_err(|e| bad(path, e))?;
        // Read position is irrelevant to the Parquet reader (it reads by offset), but keep it
        // at the start for anyone else.
        let _ = std::io::Seek::rewind(&mut file);
        Ok(PartFile { path: path.to_path_buf(), file: Arc::new(file), meta })
    }

    /// The file's path (as opened).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows in the file.
    pub fn num_rows(&self) -> usize {
        self.meta.metadata().file_metadata().num_rows() as usize
    }

    /// Reads `columns` of rows `rows` (sorted, unique; `None` = all), calling `each` with
    /// batches of at most `batch` chips. Fields of columns not read are left empty.
    pub fn read(
        &self,
        rows: Option<&[usize]>,
        batch: usize,
        columns: &[&str],
        mut each: impl FnMut(Vec<StoredChip>) -> Result<()>,
    ) -> Result<()> {
        let path = self.path.as_path();
        let file = self.file.try_clone().map_err(|e| AcfError::io(path, "cannot open part file", e))?;
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone());
        let total = self.num_rows();
        let schema = self.meta.metadata().file_metadata().schema_descr();
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
                builder = builder.with_row_selection(RowSelection::from_consecutive_ranges(
                    ranges(rows).into_iter(),
                    total,
                ));
                rows.to_vec()
            }
            None => (0..total).collect(),
        };
        let reader = builder.build().map_err(|e| bad(path, e))?;
        let mut next = 0usize;
        for batch in reader {
            let batch = batch.map_err(|e| AcfError::Index {
                path: path.to_path_buf(),
                reason: format!("cannot read: {e}"),
            })?;
            let end = (next + batch.num_rows()).min(row_numbers.len());
            let chips = decode(&batch, &row_numbers[next..end], path)?;
            next = end;
            each(chips)?;
        }
        Ok(())
    }
}

impl PartFile {
    /// The `nodes` value of each of `rows` (sorted, unique), read straight from the file:
    /// one positioned read per chip of its value at the end of its data page (a page of r
    /// rows ends with their r values). This holds only for the layout `index` writes
    /// (uncompressed PLAIN fixed-size values, no nulls), which is checked from the metadata;
    /// `None` when the file is stored otherwise (the caller then uses [`PartFile::read`]).
    pub fn read_nodes_direct(&self, rows: &[usize]) -> Result<Option<Vec<Vec<u8>>>> {
        self.read_tail_values(rows, columns::NODES, nodes_layout)
    }

    /// The `global` vector (`dim` floats) of each of `rows` (sorted, unique), read straight
    /// from the file like [`PartFile::read_nodes_direct`]: a page of r rows of the
    /// FixedSizeList column ends with their r × dim floats (every list whole, no nulls: what
    /// `index` writes). `None` when the file is stored otherwise.
    pub fn read_global_direct(&self, rows: &[usize], dim: usize) -> Result<Option<Vec<Vec<f32>>>> {
        use parquet::basic::Type as PhysicalType;
        let leaf = format!("{}.list.item", columns::GLOBAL);
        let values = self.read_tail_values(rows, &leaf, |col, group_rows| {
            // One level per item: whole lists of `dim` items, no null or empty list.
            (col.column_type() == PhysicalType::FLOAT
                && col.column_descr().max_rep_level() == 1
                && col.num_values() == group_rows * dim as i64)
                .then_some(dim as u64 * 4)
        })?;
        Ok(values.map(|all| {
            all.iter()
                .map(|b| b.chunks_exact(4).map(|f| f32::from_le_bytes([f[0], f[1], f[2], f[3]])).collect())
                .collect()
        }))
    }

    /// The bytes each of `rows` holds at the end of its data page in column `leaf_path`,
    /// `value_len` bytes a row as `layout` derives it from the column chunk's metadata and
    /// its row group's row count (None: not laid out so). Uncompressed chunks only.
    fn read_tail_values(
        &self,
        rows: &[usize],
        leaf_path: &str,
        layout: impl Fn(&parquet::file::metadata::ColumnChunkMetaData, i64) -> Option<u64>,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        let Some(places) = self.locate_tail_values(rows, leaf_path, layout) else { return Ok(None) };
        let mut out = Vec::with_capacity(places.len());
        for (at, len) in places {
            let mut value = vec![0u8; len];
            self.read_at(&mut value, at)?;
            out.push(value);
        }
        Ok(Some(out))
    }

    /// Fills `buf` from byte `at` of the file (one positioned read).
    pub fn read_at(&self, buf: &mut [u8], at: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, at).map_err(|e| AcfError::io(&self.path, "cannot read part file", e))
    }

    /// Where each of `rows` (sorted, unique) keeps its `nodes` value in the file: (offset,
    /// length), for callers that read it into their own buffer; `None` when the file is not
    /// laid out for direct reads (see [`PartFile::read_nodes_direct`]).
    pub fn locate_nodes(&self, rows: &[usize]) -> Option<Vec<(u64, usize)>> {
        self.locate_tail_values(rows, columns::NODES, nodes_layout)
    }

    fn locate_tail_values(
        &self,
        rows: &[usize],
        leaf_path: &str,
        layout: impl Fn(&parquet::file::metadata::ColumnChunkMetaData, i64) -> Option<u64>,
    ) -> Option<Vec<(u64, usize)>> {
        use parquet::basic::Compression;
        let meta = self.meta.metadata();
        let offsets = meta.offset_index()?;
        let leaf =
            meta.file_metadata().schema_descr().columns().iter().position(|c| c.path().string() == leaf_path);
        let leaf = leaf?;
        // Row groups: first row of each.
        let mut firsts = Vec::with_capacity(meta.num_row_groups());
        let mut at = 0usize;
        for rg in meta.row_groups() {
            firsts.push(at);
            at += rg.num_rows() as usize;
        }
        let mut out = Vec::with_capacity(rows.len());
        for &row in rows {
            let g = firsts.partition_point(|&f| f <= row).saturating_sub(1);
            let (Some(rg), Some(pages)) =
                (meta.row_groups().get(g), offsets.get(g).and_then(|c| c.get(leaf)))
            else {
                return None;
            };
            let col = rg.column(leaf);
            let value_len =
                layout(col, rg.num_rows()).filter(|_| col.compression() == Compression::UNCOMPRESSED)?;
            let in_group = (row - firsts[g]) as i64;
            let locations = pages.page_locations();
            let p = locations.partition_point(|l| l.first_row_index <= in_group).saturating_sub(1);
            let page = locations.get(p)?;
            let next_first = locations.get(p + 1).map_or(rg.num_rows(), |l| l.first_row_index);
            // A page of r rows ends with their r values, back to back (PLAIN, uncompressed;
            // levels, when the column has them, come first).
            let (r, i) =
                ((next_first - page.first_row_index) as u64, (in_group - page.first_row_index) as u64);
            let size = page.compressed_page_size as u64;
            if r == 0 || i >= r || size <= r * value_len || page.offset < 0 {
                return None;
            }
            out.push((page.offset as u64 + size - (r - i) * value_len, value_len as usize));
        }
        Some(out)
    }

    /// Whole-row reads of `rows` (sorted, unique) without `nodes`: what a hit shows.
    pub fn read_catalog(&self, rows: &[usize]) -> Result<Vec<StoredChip>> {
        let mut chips = Vec::with_capacity(rows.len());
        self.read(Some(rows), 1024, CATALOG_COLUMNS, |batch| {
            chips.extend(batch);
            Ok(())
        })?;
        Ok(chips)
    }

    /// `global` and `nodes` of `rows` (sorted, unique): `nodes` straight from their pages
    /// (see [`PartFile::read_nodes_direct`]), `global` from `known_global` when the caller
    /// holds the vectors (a server) or else by the Arrow reader; a file laid out otherwise
    /// goes through the Arrow reader entirely. Other fields are left empty.
    pub fn read_features(
        &self,
        rows: &[usize],
        dim: usize,
        known_global: Option<&dyn Fn(usize) -> Vec<f32>>,
    ) -> Result<Vec<StoredChip>> {
        let mut chips = Vec::with_capacity(rows.len());
        if let Some(dtype) = self.nodes_dtype()
            && let Some(nodes) = self.read_nodes_direct(rows)?
        {
            match known_global {
                Some(global) => {
                    chips.extend(rows.iter().map(|&row| StoredChip { global: global(row), ..empty(row) }))
                }
                None => match self.read_global_direct(rows, dim)? {
                    Some(globals) => chips.extend(
                        rows.iter().zip(globals).map(|(&row, global)| StoredChip { global, ..empty(row) }),
                    ),
                    None => self.read(Some(rows), 1024, &[columns::GLOBAL], |batch| {
                        chips.extend(batch);
                        Ok(())
                    })?,
                },
            }
            if chips.len() == nodes.len() {
                for (c, n) in chips.iter_mut().zip(nodes) {
                    c.nodes = n;
                    c.nodes_dtype = dtype;
                }
                return Ok(chips);
            }
            chips.clear();
        }
        self.read(Some(rows), 1024, &FEATURE_COLUMNS, |batch| {
            chips.extend(batch);
            Ok(())
        })?;
        Ok(chips)
    }

    /// Every column of rows `rows` (all when `None`) as Arrow batches, for copying rows into
    /// another part file (`compact`).
    pub fn read_batches(
        &self,
        rows: Option<Range<usize>>,
        mut each: impl FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let path = self.path.as_path();
        let file = self.file.try_clone().map_err(|e| AcfError::io(path, "cannot open part file", e))?;
        let total = self.num_rows();
        let mut builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone()).with_batch_size(256);
        if let Some(r) = rows {
            builder = builder.with_row_selection(RowSelection::from_consecutive_ranges(
                std::iter::once(r.start.min(total)..r.end.min(total)),
                total,
            ));
        }
        for batch in builder.build().map_err(|e| bad(path, e))? {
            each(batch.map_err(|e| AcfError::Index {
                path: path.to_path_buf(),
                reason: format!("cannot read: {e}"),
            })?)?;
        }
        Ok(())
    }

    /// The file's `acf_index` metadata (model, config, tool version: JSON).
    pub fn acf_metadata(&self) -> Option<String> {
        self.key_value("acf_index")
    }

    /// The file's GeoParquet bbox, when it has one.
    pub fn geo_bbox(&self) -> Option<[f64; 4]> {
        let geo: serde_json::Value = serde_json::from_str(&self.key_value("geo")?).ok()?;
        let b = geo["columns"]["geometry"]["bbox"].as_array()?;
        Some([b.first()?.as_f64()?, b.get(1)?.as_f64()?, b.get(2)?.as_f64()?, b.get(3)?.as_f64()?])
    }

    fn key_value(&self, key: &str) -> Option<String> {
        self.meta
            .metadata()
            .file_metadata()
            .key_value_metadata()?
            .iter()
            .find(|k| k.key == key)?
            .value
            .clone()
    }

    /// The `acf_index:dtype` of the `nodes` column.
    pub fn nodes_dtype(&self) -> Option<NodesDtype> {
        let schema = self.meta.schema();
        let field = schema.field_with_name(columns::NODES).ok()?;
        NodesDtype::from_numpy(field.metadata().get(NodesDtype::METADATA_KEY)?)
    }
}

/// Every column but `nodes` (the last of [`COLUMNS`]): what a server keeps in memory for
/// each chip.
pub const CATALOG_COLUMNS: &[&str] = COLUMNS.split_at(COLUMNS.len() - 1).0;

/// The columns scoring needs.
pub const FEATURE_COLUMNS: [&str; 2] = [columns::GLOBAL, columns::NODES];

/// A chip with only its row number set.
fn empty(row: usize) -> StoredChip {
    StoredChip {
        row,
        chip_id: String::new(),
        scene: String::new(),
        window: [0; 4],
        bbox: None,
        geometry: None,
        valid_fraction: 0.0,
        acquired_us: None,
        global: Vec::new(),
        nodes: Vec::new(),
        nodes_dtype: NodesDtype::F32,
    }
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
    let global = batch
        .column_by_name(columns::GLOBAL)
        .map(|c| {
            c.as_any().downcast_ref::<FixedSizeListArray>().cloned().ok_or_else(|| wrong(columns::GLOBAL))
        })
        .transpose()?;
    let nodes = batch
        .column_by_name(columns::NODES)
        .map(|c| {
            c.as_any().downcast_ref::<FixedSizeBinaryArray>().cloned().ok_or_else(|| wrong(columns::NODES))
        })
        .transpose()?;
    let schema = batch.schema();
    let nodes_dtype = match &nodes {
        None => NodesDtype::F32,
        Some(_) => {
            let dtype = schema
                .field_with_name(columns::NODES)
                .ok()
                .and_then(|f| f.metadata().get(NodesDtype::METADATA_KEY).cloned())
                .ok_or_else(|| wrong("nodes (no acf_index:dtype)"))?;
            NodesDtype::from_numpy(&dtype).ok_or_else(|| wrong("nodes (acf_index:dtype)"))?
        }
    };
    let mut out = Vec::with_capacity(batch.num_rows());
    for (i, &row) in rows.iter().enumerate().take(batch.num_rows()) {
        let g = match &global {
            Some(global) => global
                .value(i)
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| wrong(columns::GLOBAL))?
                .values()
                .to_vec(),
            None => Vec::new(),
        };
        let nodes_bytes = nodes.as_ref().map_or(Vec::new(), |n| n.value(i).to_vec());
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

/// The byte length of one `nodes` value when the chunk is laid out for direct reads
/// (fixed-size binary, not repeated, no nulls).
fn nodes_layout(col: &parquet::file::metadata::ColumnChunkMetaData, _rows: i64) -> Option<u64> {
    use parquet::basic::Type as PhysicalType;
    let descr = col.column_descr();
    let no_nulls = descr.max_def_level() == 0 || col.statistics().and_then(|s| s.null_count_opt()) == Some(0);
    (col.column_type() == PhysicalType::FIXED_LEN_BYTE_ARRAY
        && descr.max_rep_level() == 0
        && descr.type_length() > 0
        && no_nulls)
        .then_some(descr.type_length() as u64)
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
