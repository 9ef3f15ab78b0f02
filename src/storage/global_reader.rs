//! Reading the `global` column of a part file for stage 1 of a query: the vectors of every
//! chip in chosen row groups (plus `bbox` and `acquired` when the caller filters on them),
//! and what the row groups' statistics say about their footprints, so the caller can skip
//! groups that cannot match. One open and one footer parse per file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, FixedSizeListArray, Float32Array, Float64Array, StructArray};
use arrow::datatypes::TimestampMicrosecondType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};
use parquet::file::statistics::Statistics;

use super::schema::columns;
use crate::error::{AcfError, Result};

/// One row group as its statistics describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct RowGroupSummary {
    /// Position of the group in the file.
    pub index: usize,
    /// File row number of the group's first chip.
    pub first_row: usize,
    pub rows: usize,
    /// The extent of the group's chip boxes (`[xmin, ymin, xmax, ymax]`), when the
    /// statistics give it.
    pub bbox_extent: Option<[f64; 4]>,
    /// Every chip of the group lacks a footprint (statistics say all `bbox` are null).
    pub no_footprints: bool,
}

/// One chip as stage 1 sees it.
pub struct GlobalRow<'a> {
    /// Row number in the file.
    pub row: usize,
    pub global: &'a [f32],
    /// Present only when filter columns were asked for.
    pub bbox: Option<[f64; 4]>,
    pub acquired_us: Option<i64>,
}

/// An open part file, ready to stream its `global` column.
pub struct GlobalReader {
    path: PathBuf,
    /// The file's footprints cross the antimeridian (its `geo` bbox has xmin > xmax): then
    /// min/max statistics of the bbox columns do not bound its chips, and nothing is pruned.
    crosses_antimeridian: bool,
    file: File,
    builder: ParquetRecordBatchReaderBuilder<File>,
    meta: Arc<ParquetMetaData>,
}

impl GlobalReader {
    /// Opens `path` and parses its footer.
    pub fn open(path: &Path) -> Result<GlobalReader> {
        let file = File::open(path).map_err(|e| AcfError::io(path, "cannot open part file", e))?;
        let clone = file.try_clone().map_err(|e| AcfError::io(path, "cannot open part file", e))?;
        let builder = open_builder(path, clone)?;
        let meta = builder.metadata().clone();
        let crosses_antimeridian = meta
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|k| k.key == "geo").and_then(|k| k.value.clone()))
            .and_then(|geo| serde_json::from_str::<serde_json::Value>(&geo).ok())
            .and_then(|geo| {
                let b = geo["columns"]["geometry"]["bbox"].as_array()?.clone();
                Some(b.first()?.as_f64()? > b.get(2)?.as_f64()?)
            })
            .unwrap_or(false);
        Ok(GlobalReader { path: path.to_path_buf(), crosses_antimeridian, file, builder, meta })
    }

    /// The file's row groups with their statistics.
    pub fn row_groups(&self) -> Vec<RowGroupSummary> {
        let mut first_row = 0;
        self.meta
            .row_groups()
            .iter()
            .enumerate()
            .map(|(index, rg)| {
                let rows = rg.num_rows() as usize;
                let s = RowGroupSummary {
                    index,
                    first_row,
                    rows,
                    bbox_extent: if self.crosses_antimeridian { None } else { bbox_extent(rg) },
                    no_footprints: !self.crosses_antimeridian && all_bbox_null(rg),
                };
                first_row += rows;
                s
            })
            .collect()
    }

    /// Calls `each` for every chip of `groups` (in file order), with `bbox` and
    /// `acquired` read too when `filter_columns` is set. Vectors must hold `dim` floats.
    pub fn for_each(
        self,
        groups: &[RowGroupSummary],
        dim: usize,
        filter_columns: bool,
        mut each: impl FnMut(GlobalRow<'_>),
    ) -> Result<()> {
        if groups.is_empty() {
            return Ok(());
        }
        let groups =
            if filter_columns { groups } else { &groups[self.for_each_page(groups, dim, &mut each)..] };
        if groups.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let mut roots = vec![root_index(&self.meta, columns::GLOBAL, &path)?];
        if filter_columns {
            roots.push(root_index(&self.meta, columns::BBOX, &path)?);
            roots.push(root_index(&self.meta, columns::ACQUIRED, &path)?);
        }
        let mask = ProjectionMask::roots(self.meta.file_metadata().schema_descr(), roots);
        let reader = self
            .builder
            .with_projection(mask)
            .with_row_groups(groups.iter().map(|g| g.index).collect())
            .with_batch_size(4096)
            .build()
            .map_err(|e| bad(&path, e))?;
        // Batches may span row groups: track the group and the row within it.
        let (mut group, mut in_group) = (0usize, 0usize);
        for batch in reader {
            let batch = batch.map_err(|e| AcfError::Index {
                path: path.to_path_buf(),
                reason: format!("cannot read: {e}"),
            })?;
            // A projection keeps the file's column order, whatever order it was asked in.
            let global = batch
                .column_by_name(columns::GLOBAL)
                .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
                .ok_or_else(|| not_global(&path))?;
            let values =
                global.values().as_any().downcast_ref::<Float32Array>().ok_or_else(|| not_global(&path))?;
            if global.value_length() as usize != dim {
                return Err(AcfError::Index {
                    path: path.to_path_buf(),
                    reason: format!(
                        "global vectors of {} floats, the model makes {dim}",
                        global.value_length()
                    ),
                });
            }
            let values = &values.values()[global.offset() * dim..];
            let bbox = batch.column_by_name(columns::BBOX).and_then(|c| c.as_struct_opt().cloned());
            let acquired = batch
                .column_by_name(columns::ACQUIRED)
                .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>().cloned());
            for i in 0..batch.num_rows() {
                while in_group >= groups[group].rows {
                    group += 1;
                    in_group = 0;
                }
                let row = groups[group].first_row + in_group;
                in_group += 1;
                each(GlobalRow {
                    row,
                    global: &values[i * dim..(i + 1) * dim],
                    bbox: bbox.as_ref().and_then(|b| bbox_at(b, i)),
                    acquired_us: acquired.as_ref().and_then(|a| a.is_valid(i).then(|| a.value(i))),
                });
            }
        }
        Ok(())
    }

    /// The unfiltered scan through [`global_column`](super::global_column), group by
    /// group; returns how many leading groups it read (the Arrow reader does the rest, when
    /// a group is not stored as that reader expects).
    fn for_each_page(
        &self,
        groups: &[RowGroupSummary],
        dim: usize,
        each: &mut impl FnMut(GlobalRow<'_>),
    ) -> usize {
        let item = format!("{}.list.item", columns::GLOBAL);
        let Some(column) =
            self.meta.file_metadata().schema_descr().columns().iter().position(|c| c.path().string() == item)
        else {
            return 0;
        };
        for (done, g) in groups.iter().enumerate() {
            let read = super::global_column::scan_row_group(
                &self.file,
                self.meta.row_group(g.index),
                column,
                dim,
                |i, v| each(GlobalRow { row: g.first_row + i, global: v, bbox: None, acquired_us: None }),
            );
            if !read {
                return done;
            }
        }
        groups.len()
    }
}

fn open_builder(path: &Path, file: File) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| AcfError::Index {
        path: path.to_path_buf(),
        reason: format!("not a readable Parquet file: {e}"),
    })
}

/// Index of a top-level column by name.
pub fn root_index(meta: &ParquetMetaData, name: &str, path: &Path) -> Result<usize> {
    let schema = meta.file_metadata().schema_descr();
    schema.root_schema().get_fields().iter().position(|f| f.name() == name).ok_or_else(|| AcfError::Index {
        path: path.to_path_buf(),
        reason: format!("no '{name}' column: not an acf-index part file"),
    })
}

/// The `[xmin, ymin, xmax, ymax]` of row `i` of a `bbox` struct column (None when null).
pub fn bbox_at(b: &StructArray, i: usize) -> Option<[f64; 4]> {
    if b.is_null(i) {
        return None;
    }
    let f = |k: usize| b.column(k).as_any().downcast_ref::<Float64Array>().map(|a| a.value(i));
    Some([f(0)?, f(1)?, f(2)?, f(3)?])
}

/// The smallest xmin / ymin and largest xmax / ymax of the group: they bound all its boxes.
fn bbox_extent(rg: &RowGroupMetaData) -> Option<[f64; 4]> {
    let stat = |name: &str, max: bool| -> Option<f64> {
        let path = format!("{}.{name}", columns::BBOX);
        let col = rg.columns().iter().find(|c| c.column_path().string() == path)?;
        match col.statistics()? {
            Statistics::Double(s) => {
                if max {
                    s.max_opt().copied()
                } else {
                    s.min_opt().copied()
                }
            }
            _ => None,
        }
    };
    Some([stat("xmin", false)?, stat("ymin", false)?, stat("xmax", true)?, stat("ymax", true)?])
}

fn all_bbox_null(rg: &RowGroupMetaData) -> bool {
    let path = format!("{}.xmin", columns::BBOX);
    rg.columns()
        .iter()
        .find(|c| c.column_path().string() == path)
        .and_then(|c| c.statistics())
        .and_then(|s| s.null_count_opt())
        .is_some_and(|nulls| nulls as i64 == rg.num_rows())
}

fn not_global(path: &Path) -> AcfError {
    AcfError::Index {
        path: path.to_path_buf(),
        reason: format!("the '{}' column is not a list of float32", columns::GLOBAL),
    }
}

fn bad(path: &Path, e: parquet::errors::ParquetError) -> AcfError {
    AcfError::Index { path: path.to_path_buf(), reason: format!("cannot read Parquet: {e}") }
}
