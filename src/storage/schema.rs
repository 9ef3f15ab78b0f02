//! The Arrow/Parquet schema of a chip row and the GeoParquet 1.1 `geo` file metadata.
//! The same schema is described for people in `schemas/README.md` and for machines in
//! `schemas/chip-catalog.columns.json`; a test keeps the three in step.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use serde_json::json;

/// Version of the chip-row schema; readers refuse indexes written with a newer one.
pub const SCHEMA_VERSION: u32 = 1;

/// Names of the catalog's columns: the one place that knows them (writer and readers).
pub mod columns {
    pub const CHIP_ID: &str = "chip_id";
    pub const SCENE: &str = "scene";
    pub const SCENE_FINGERPRINT: &str = "scene_fingerprint";
    pub const COL: &str = "col";
    pub const ROW: &str = "row";
    pub const WIDTH: &str = "width";
    pub const HEIGHT: &str = "height";
    pub const PADDED: &str = "padded";
    pub const CRS: &str = "crs";
    pub const GEOMETRY: &str = "geometry";
    pub const BBOX: &str = "bbox";
    pub const VALID_FRACTION: &str = "valid_fraction";
    pub const ACQUIRED: &str = "acquired";
    pub const GLOBAL: &str = "global";
    pub const NODES: &str = "nodes";
    pub const STAC_ITEM: &str = "stac_item";
    pub const STAC_COLLECTION: &str = "stac_collection";
}

/// Storage type of the 49×512 region features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodesDtype {
    /// IEEE half precision (default: half the size, ranking unchanged in our tests).
    F16,
    /// Single precision.
    F32,
}

/// What fixes the shape of the feature columns: the model's dimensions and the node dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChipSchema {
    /// Feature width D (`embed_dim` of the model config).
    pub embed_dim: usize,
    /// Region count k (`region_grid²`).
    pub regions: usize,
    /// Storage type of `nodes`.
    pub nodes_dtype: NodesDtype,
}

impl NodesDtype {
    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            NodesDtype::F16 => 2,
            NodesDtype::F32 => 4,
        }
    }

    /// The numpy dtype string of the stored values (little-endian).
    pub fn numpy(self) -> &'static str {
        match self {
            NodesDtype::F16 => "<f2",
            NodesDtype::F32 => "<f4",
        }
    }

    /// The dtype named by a numpy dtype string ([`NodesDtype::numpy`]).
    pub fn from_numpy(s: &str) -> Option<NodesDtype> {
        [NodesDtype::F16, NodesDtype::F32].into_iter().find(|d| d.numpy() == s)
    }

    /// Field metadata key of the `nodes` column that holds [`NodesDtype::numpy`].
    pub const METADATA_KEY: &'static str = "acf_index:dtype";
}

impl ChipSchema {
    /// Bytes of one chip's `nodes` value: k × D little-endian floats, row-major.
    pub fn nodes_bytes(&self) -> usize {
        self.regions * self.embed_dim * self.nodes_dtype.bytes()
    }

    /// The `bbox` covering struct (GeoParquet 1.1 "covering").
    pub fn bbox_fields() -> Fields {
        Fields::from(
            ["xmin", "ymin", "xmax", "ymax"].map(|n| Field::new(n, DataType::Float64, false)).to_vec(),
        )
    }

    /// The Arrow schema of one chip row.
    pub fn arrow_schema(&self) -> Arc<Schema> {
        let list = |item: DataType, n: usize| {
            DataType::FixedSizeList(Arc::new(Field::new("item", item, false)), n as i32)
        };
        Arc::new(Schema::new(vec![
            Field::new(columns::CHIP_ID, DataType::Utf8, false),
            Field::new(columns::SCENE, DataType::Utf8, false),
            Field::new(columns::SCENE_FINGERPRINT, DataType::Utf8, false),
            Field::new(columns::COL, DataType::Int32, false),
            Field::new(columns::ROW, DataType::Int32, false),
            Field::new(columns::WIDTH, DataType::Int32, false),
            Field::new(columns::HEIGHT, DataType::Int32, false),
            Field::new(columns::PADDED, DataType::Boolean, false),
            Field::new(columns::CRS, DataType::Utf8, true),
            Field::new(columns::GEOMETRY, DataType::Binary, true),
            Field::new(columns::BBOX, DataType::Struct(Self::bbox_fields()), true),
            Field::new(columns::VALID_FRACTION, DataType::Float32, false),
            Field::new(
                columns::ACQUIRED,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new(columns::GLOBAL, list(DataType::Float32, self.embed_dim), false),
            Field::new(columns::NODES, DataType::FixedSizeBinary(self.nodes_bytes() as i32), false)
                .with_metadata(std::collections::HashMap::from([
                    (NodesDtype::METADATA_KEY.to_string(), self.nodes_dtype.numpy().to_string()),
                    ("acf_index:shape".to_string(), format!("{},{}", self.regions, self.embed_dim)),
                ])),
            Field::new(columns::STAC_ITEM, DataType::Utf8, true),
            Field::new(columns::STAC_COLLECTION, DataType::Utf8, true),
        ]))
    }
}

/// The GeoParquet 1.1 `geo` metadata for a file whose footprints span `bbox`
/// (`[xmin, ymin, xmax, ymax]` in CRS84; `None` when no chip is georeferenced).
///
/// Written with serde_json rather than a GeoParquet crate: the geoarrow crates pin other
/// arrow/parquet versions than ours, and the metadata is one small, fixed JSON object.
pub fn geo_metadata(bbox: Option<[f64; 4]>) -> String {
    // A footprint across the antimeridian is a MultiPolygon (its two sides); the file's
    // bbox then crosses too (xmin > xmax).
    let types = if bbox.is_some_and(|b| b[0] > b[2]) {
        json!(["Polygon", "MultiPolygon"])
    } else {
        json!(["Polygon"])
    };
    let mut column = json!({
        "encoding": "WKB",
        "geometry_types": types,
        "edges": "planar",
        "orientation": "counterclockwise",
        "covering": {"bbox": {
            "xmin": ["bbox", "xmin"], "ymin": ["bbox", "ymin"],
            "xmax": ["bbox", "xmax"], "ymax": ["bbox", "ymax"],
        }},
    });
    if let Some(b) = bbox {
        column["bbox"] = json!(b);
    }
    json!({"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_columns_follow_the_model_dimensions() {
        let s = ChipSchema { embed_dim: 8, regions: 4, nodes_dtype: NodesDtype::F16 }.arrow_schema();
        let nodes = s.field_with_name("nodes").unwrap();
        assert_eq!(nodes.data_type(), &DataType::FixedSizeBinary(64));
        assert_eq!(nodes.metadata()["acf_index:shape"], "4,8");
        assert_eq!(nodes.metadata()["acf_index:dtype"], "<f2");
        let DataType::FixedSizeList(_, n) = s.field_with_name("global").unwrap().data_type() else {
            panic!("global is not a fixed-size list");
        };
        assert_eq!(*n, 8);
    }

    #[test]
    fn geo_metadata_declares_geoparquet_1_1_with_a_bbox_covering() {
        let geo: serde_json::Value = serde_json::from_str(&geo_metadata(Some([1.0, 2.0, 3.0, 4.0]))).unwrap();
        assert_eq!(geo["version"], "1.1.0");
        assert_eq!(geo["primary_column"], "geometry");
        assert_eq!(geo["columns"]["geometry"]["encoding"], "WKB");
        assert_eq!(geo["columns"]["geometry"]["orientation"], "counterclockwise");
        assert_eq!(geo["columns"]["geometry"]["bbox"], json!([1.0, 2.0, 3.0, 4.0]));
        assert_eq!(geo["columns"]["geometry"]["covering"]["bbox"]["xmax"], json!(["bbox", "xmax"]));
        assert!(geo["columns"]["geometry"].get("crs").is_none(), "absent crs means OGC:CRS84");
    }
}

#[cfg(test)]
mod documented {
    use super::*;

    /// `schemas/chip-catalog.columns.json` lists every column of the default model's catalog
    /// with its Arrow type and nullability, in order.
    #[test]
    fn the_documented_schema_is_the_written_schema() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/chip-catalog.columns.json");
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let documented: Vec<(String, String, bool)> = doc["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().into(),
                    c["arrow_type"].as_str().unwrap().into(),
                    c["nullable"].as_bool().unwrap(),
                )
            })
            .collect();
        let schema = ChipSchema { embed_dim: 512, regions: 49, nodes_dtype: NodesDtype::F16 }.arrow_schema();
        let written: Vec<(String, String, bool)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string(), f.is_nullable()))
            .collect();
        assert_eq!(documented, written);
        assert_eq!(doc["schema_version"], SCHEMA_VERSION);
    }
}
