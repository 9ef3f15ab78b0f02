//! Writing one part file: rows stream into a hidden temporary file (row group by row group,
//! so memory does not grow with the scene), and [`PartWriter::publish`] makes it visible
//! under its final name by an atomic rename after an fsync.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use arrow::datatypes::Schema;
use std::path::{Path, PathBuf};

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::rows::ChipRow;
use super::schema::{ChipSchema, SCHEMA_VERSION, geo_metadata};
use crate::error::{AcfError, Result};

/// Rows per row group: about 13 MB of Float16 nodes, small enough that a query reading a
/// few selected chips touches little, large enough that the `global` column reads in bulk.
pub const ROW_GROUP_ROWS: usize = 256;

/// A file that hashes what is written to it: the part's checksum costs no second read.
struct HashingFile {
    file: File,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A published part file: where it is, its size and its sha256 (recorded in the scene
/// record, so damage is detected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPart {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

/// A part file being written.
pub struct PartWriter {
    schema: ChipSchema,
    arrow_schema: Arc<Schema>,
    tmp_path: PathBuf,
    final_path: PathBuf,
    writer: Option<ArrowWriter<HashingFile>>,
    pending: Vec<ChipRow>,
    rows: usize,
}

impl PartWriter {
    /// Starts `final_path` as a hidden temporary file beside it. The file metadata holds
    /// `geo` (GeoParquet 1.1; `bbox` = the footprints' extent when known) and `acf_index`
    /// (JSON: model, config, tool version).
    pub fn create(
        final_path: &Path,
        schema: ChipSchema,
        acf_metadata: &str,
        bbox: Option<[f64; 4]>,
    ) -> Result<PartWriter> {
        let tmp_path = crate::files::temp_beside(final_path);
        let file =
            File::create(&tmp_path).map_err(|e| AcfError::io(&tmp_path, "cannot create part file", e))?;
        let file = HashingFile { file, hasher: Sha256::new(), bytes: 0 };
        let plain = |col: &[&str]| ColumnPath::new(col.iter().map(|s| s.to_string()).collect());
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_size(ROW_GROUP_ROWS)
            .set_dictionary_enabled(false)
            .set_column_dictionary_enabled(plain(&["scene"]), true)
            .set_column_dictionary_enabled(plain(&["scene_fingerprint"]), true)
            .set_column_dictionary_enabled(plain(&["crs"]), true)
            // Min/max of 25,088 floats per row say nothing useful; keep statistics for the
            // filter columns (bbox, window, valid_fraction, acquired).
            .set_column_statistics_enabled(plain(&["nodes"]), EnabledStatistics::None)
            .set_column_statistics_enabled(plain(&["global", "list", "item"]), EnabledStatistics::None)
            // Feature vectors barely compress (measured: zstd keeps 92 % of the bytes), and a
            // query scans `global` of every chip: store them plain and skip decompression.
            .set_column_compression(plain(&["nodes"]), Compression::UNCOMPRESSED)
            .set_column_compression(plain(&["global", "list", "item"]), Compression::UNCOMPRESSED)
            // Small pages: stage 2 of a query fetches `nodes` (50 KB a chip) of ~1,000
            // scattered chips, and with the default 1 MB pages it would read and decode about
            // 20 neighbours of each. 8 KB pages hold one chip's `nodes` at most (the page index
            // lets the reader skip the rest) and a few hundred values of the small columns.
            .set_data_page_size_limit(8 * 1024)
            .set_key_value_metadata(Some(vec![
                KeyValue::new("geo".to_string(), geo_metadata(bbox)),
                KeyValue::new("acf_index".to_string(), acf_metadata.to_string()),
                KeyValue::new("acf_index_schema_version".to_string(), SCHEMA_VERSION.to_string()),
            ]))
            .build();
        // The same entries in the Arrow schema's metadata: pyarrow (and so GeoPandas) takes
        // schema metadata from the embedded Arrow schema, DuckDB and GDAL from the Parquet
        // key-value metadata.
        let metadata = HashMap::from([
            ("geo".to_string(), geo_metadata(bbox)),
            ("acf_index".to_string(), acf_metadata.to_string()),
            ("acf_index_schema_version".to_string(), SCHEMA_VERSION.to_string()),
        ]);
        let arrow_schema = Arc::new(schema.arrow_schema().as_ref().clone().with_metadata(metadata));
        let writer = ArrowWriter::try_new(file, arrow_schema.clone(), Some(props))
            .map_err(|e| parquet_error(&tmp_path, e))?;
        Ok(PartWriter {
            schema,
            arrow_schema,
            tmp_path,
            final_path: final_path.to_path_buf(),
            writer: Some(writer),
            pending: Vec::new(),
            rows: 0,
        })
    }

    /// The hidden temporary file the rows go to until [`PartWriter::publish`].
    pub fn tmp_path(&self) -> &Path {
        &self.tmp_path
    }

    /// The name the file gets when published.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends one chip; full row groups go to disk at once.
    pub fn push(&mut self, row: ChipRow) -> Result<()> {
        self.pending.push(row);
        self.rows += 1;
        if self.pending.len() >= ROW_GROUP_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends whole Arrow batches of another part file of the same schema (`compact`).
    pub fn push_batch(&mut self, batch: &arrow::array::RecordBatch) -> Result<()> {
        self.flush()?;
        let batch = arrow::array::RecordBatch::try_new(self.arrow_schema.clone(), batch.columns().to_vec())
            .map_err(|e| AcfError::Index {
            path: self.tmp_path.clone(),
            reason: format!("rows of another schema cannot be copied in: {e}"),
        })?;
        self.rows += batch.num_rows();
        let writer = self.writer.as_mut().ok_or_else(|| closed(&self.tmp_path))?;
        writer.write(&batch).map_err(|e| parquet_error(&self.tmp_path, e))
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = self.schema.record_batch_with(self.arrow_schema.clone(), &self.pending)?;
        self.pending.clear();
        let writer = self.writer.as_mut().ok_or_else(|| closed(&self.tmp_path))?;
        writer.write(&batch).map_err(|e| parquet_error(&self.tmp_path, e))?;
        writer.flush().map_err(|e| parquet_error(&self.tmp_path, e))
    }

    /// Finishes the file (footer with the `geo` metadata), fsyncs it and renames it to its
    /// final name.
    pub fn publish(mut self) -> Result<PublishedPart> {
        self.flush()?;
        let writer = self.writer.take().ok_or_else(|| closed(&self.tmp_path))?;
        let out = writer.into_inner().map_err(|e| parquet_error(&self.tmp_path, e))?;
        out.file.sync_all().map_err(|e| AcfError::io(&self.tmp_path, "cannot sync part file", e))?;
        let (bytes, sha256) = (out.bytes, crate::files::hex(&out.hasher.finalize()));
        drop(out.file);
        crate::faults::crash_point("part:before-rename");
        std::fs::rename(&self.tmp_path, &self.final_path)
            .map_err(|e| AcfError::io(&self.final_path, "cannot publish part file (rename)", e))?;
        crate::files::sync_dir_of(&self.final_path);
        Ok(PublishedPart { path: self.final_path.clone(), bytes, sha256 })
    }

    /// Deletes the temporary file (a scene that failed half-way leaves nothing behind).
    pub fn abandon(mut self) {
        self.writer = None;
        let _ = std::fs::remove_file(&self.tmp_path);
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if self.writer.is_some() {
            self.writer = None;
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

fn closed(path: &Path) -> AcfError {
    AcfError::Index { path: path.to_path_buf(), reason: "part file already closed".into() }
}

fn parquet_error(path: &Path, e: parquet::errors::ParquetError) -> AcfError {
    AcfError::Index { path: path.to_path_buf(), reason: format!("cannot write Parquet: {e}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::rows::tests::row;
    use crate::storage::schema::NodesDtype;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn a_part_is_invisible_until_published_and_carries_geo_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.parquet");
        let schema = ChipSchema { embed_dim: 4, regions: 2, nodes_dtype: NodesDtype::F16 };
        let mut w = PartWriter::create(&path, schema, "{}", Some([0.0, 1.0, 2.0, 3.0])).unwrap();
        for i in 0..300 {
            w.push(row(i, 4, 2, i % 2 == 0)).unwrap();
        }
        assert!(!path.exists(), "visible before publish");
        let published = w.publish().unwrap();
        assert_eq!(published.path, path);
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(published.bytes, on_disk.len() as u64);
        assert_eq!(published.sha256, crate::files::sha256_hex(&on_disk), "checksum of what was written");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.parquet")], "temporary file left behind");
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.file_metadata().num_rows(), 300);
        assert_eq!(meta.num_row_groups(), 2);
        let kv = meta.file_metadata().key_value_metadata().unwrap();
        let geo = kv.iter().find(|k| k.key == "geo").and_then(|k| k.value.clone()).unwrap();
        let geo: serde_json::Value = serde_json::from_str(&geo).unwrap();
        assert_eq!(geo["columns"]["geometry"]["bbox"], serde_json::json!([0.0, 1.0, 2.0, 3.0]));
    }

    #[test]
    fn an_abandoned_part_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let schema = ChipSchema { embed_dim: 4, regions: 2, nodes_dtype: NodesDtype::F32 };
        let mut w = PartWriter::create(&dir.path().join("b.parquet"), schema, "{}", None).unwrap();
        w.push(row(0, 4, 2, true)).unwrap();
        w.abandon();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
