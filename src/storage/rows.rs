//! One chip as a row, and a batch of rows as an Arrow `RecordBatch` of the catalog schema.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanArray, FixedSizeBinaryArray, FixedSizeListArray, Float32Array,
    Float64Array, Int32Array, RecordBatch, StringArray, StructArray, TimestampMicrosecondArray,
};
use arrow::buffer::{Buffer, NullBuffer};
use arrow::datatypes::Field;
use half::f16;

use super::schema::{ChipSchema, NodesDtype};
use crate::error::{AcfError, Result};
use crate::raster::Footprint;

/// Everything stored for one chip.
#[derive(Debug, Clone)]
pub struct ChipRow {
    pub chip_id: String,
    pub scene: String,
    pub scene_fingerprint: String,
    /// Pixel window in the scene: column, row, width, height.
    pub window: [i32; 4],
    /// The scene is smaller than a chip in some dimension and the chip was padded.
    pub padded: bool,
    /// The scene's CRS (authority code or WKT); `None` without georeferencing.
    pub crs: Option<String>,
    pub footprint: Option<Footprint>,
    pub valid_fraction: f32,
    /// Acquisition time, microseconds since the Unix epoch (UTC).
    pub acquired_us: Option<i64>,
    /// The STAC item and collection of the scene, when it came from `--stac`.
    pub stac_item: Option<String>,
    pub stac_collection: Option<String>,
    /// Global vector (D floats, unit norm).
    pub global: Vec<f32>,
    /// Region features, row-major k×D.
    pub nodes: Vec<f32>,
}

impl ChipSchema {
    /// Builds a `RecordBatch` of `rows`; fails when a feature vector has the wrong length.
    #[cfg(test)]
    pub fn record_batch(&self, rows: &[ChipRow]) -> Result<RecordBatch> {
        self.record_batch_with(self.arrow_schema(), rows)
    }

    /// [`Self::record_batch`] with a given Arrow schema (the catalog schema plus file metadata).
    pub fn record_batch_with(
        &self,
        arrow_schema: std::sync::Arc<arrow::datatypes::Schema>,
        rows: &[ChipRow],
    ) -> Result<RecordBatch> {
        let (d, k) = (self.embed_dim, self.regions);
        for r in rows {
            if r.global.len() != d || r.nodes.len() != k * d {
                return Err(AcfError::InvalidArgument(format!(
                    "chip {}: features of {} + {} floats, the index stores {} + {}",
                    r.chip_id,
                    r.global.len(),
                    r.nodes.len(),
                    d,
                    k * d
                )));
            }
        }
        let strings = |f: fn(&ChipRow) -> &str| {
            Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>()) as ArrayRef
        };
        let ints = |i: usize| Arc::new(rows.iter().map(|r| r.window[i]).collect::<Int32Array>()) as ArrayRef;
        let mut wkb = BinaryBuilder::new();
        for r in rows {
            wkb.append_option(r.footprint.as_ref().map(|f| &f.wkb));
        }
        let bbox_column = |i: usize| {
            Arc::new(
                rows.iter()
                    .map(|r| r.footprint.as_ref().map_or(0.0, |f| f.bbox[i]))
                    .collect::<Float64Array>(),
            ) as ArrayRef
        };
        let bbox = StructArray::try_new(
            ChipSchema::bbox_fields(),
            (0..4).map(bbox_column).collect(),
            Some(NullBuffer::from(rows.iter().map(|r| r.footprint.is_some()).collect::<Vec<_>>())),
        )?;
        let global_values =
            Float32Array::from(rows.iter().flat_map(|r| r.global.iter().copied()).collect::<Vec<_>>());
        let global = fixed_list(Arc::new(global_values), d)?;
        // Little-endian floats, one fixed-size binary value per chip (see `arrow_schema`).
        let mut bytes = Vec::with_capacity(rows.len() * self.nodes_bytes());
        for r in rows {
            match self.nodes_dtype {
                NodesDtype::F32 => r.nodes.iter().for_each(|x| bytes.extend_from_slice(&x.to_le_bytes())),
                NodesDtype::F16 => {
                    r.nodes.iter().for_each(|&x| bytes.extend_from_slice(&f16::from_f32(x).to_le_bytes()))
                }
            }
        }
        let nodes = FixedSizeBinaryArray::try_new(self.nodes_bytes() as i32, Buffer::from_vec(bytes), None)?;
        let columns: Vec<ArrayRef> = vec![
            strings(|r| &r.chip_id),
            strings(|r| &r.scene),
            strings(|r| &r.scene_fingerprint),
            ints(0),
            ints(1),
            ints(2),
            ints(3),
            Arc::new(rows.iter().map(|r| Some(r.padded)).collect::<BooleanArray>()),
            Arc::new(rows.iter().map(|r| r.crs.as_deref()).collect::<StringArray>()),
            Arc::new(wkb.finish()),
            Arc::new(bbox),
            Arc::new(rows.iter().map(|r| r.valid_fraction).collect::<Float32Array>()),
            Arc::new(
                rows.iter()
                    .map(|r| r.acquired_us)
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone("UTC"),
            ),
            Arc::new(global),
            Arc::new(nodes),
            Arc::new(rows.iter().map(|r| r.stac_item.as_deref()).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| r.stac_collection.as_deref()).collect::<StringArray>()),
        ];
        Ok(RecordBatch::try_new(arrow_schema, columns)?)
    }
}

fn fixed_list(values: ArrayRef, n: usize) -> Result<FixedSizeListArray> {
    let field = Arc::new(Field::new("item", values.data_type().clone(), false));
    Ok(FixedSizeListArray::try_new(field, n as i32, values, None)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow::array::Array;

    pub(crate) fn row(i: i32, d: usize, k: usize, georeferenced: bool) -> ChipRow {
        ChipRow {
            chip_id: format!("s_{i}_0"),
            scene: "scene.tif".into(),
            scene_fingerprint: "fp".into(),
            window: [i * 224, 0, 224, 224],
            padded: false,
            crs: georeferenced.then(|| "EPSG:32618".to_string()),
            footprint: georeferenced
                .then(|| Footprint { wkb: vec![1, 3, 0, 0, 0], bbox: [i as f64, 1.0, 2.0, 3.0] }),
            valid_fraction: 1.0,
            acquired_us: None,
            stac_item: None,
            stac_collection: None,
            global: (0..d).map(|x| x as f32 + i as f32).collect(),
            nodes: (0..k * d).map(|x| x as f32 * 0.5).collect(),
        }
    }

    #[test]
    fn rows_become_a_batch_with_nulls_where_there_is_no_georeferencing() {
        let schema = ChipSchema { embed_dim: 4, regions: 2, nodes_dtype: NodesDtype::F16 };
        let batch = schema.record_batch(&[row(0, 4, 2, true), row(1, 4, 2, false)]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert!(batch.column_by_name("geometry").unwrap().is_null(1));
        assert!(batch.column_by_name("bbox").unwrap().is_valid(0));
        assert!(batch.column_by_name("bbox").unwrap().is_null(1));
        let nodes =
            batch.column_by_name("nodes").unwrap().as_any().downcast_ref::<FixedSizeBinaryArray>().unwrap();
        let value = nodes.value(0);
        assert_eq!(value.len(), 2 * 4 * 2);
        assert_eq!(f16::from_le_bytes([value[6], value[7]]).to_f32(), 1.5);
    }

    #[test]
    fn a_feature_vector_of_the_wrong_length_is_refused() {
        let schema = ChipSchema { embed_dim: 4, regions: 2, nodes_dtype: NodesDtype::F32 };
        let err = schema.record_batch(&[row(0, 5, 2, true)]).unwrap_err().to_string();
        assert!(err.contains("s_0_0"), "{err}");
    }
}
