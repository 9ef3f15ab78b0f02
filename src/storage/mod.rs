//! The chip catalog on disk: a GeoParquet 1.1 dataset plus the small JSON records that make
//! it incremental and crash-safe.
//!
//! ```text
//! INDEX_DIR/
//!   index.json            model fingerprint + config, schema version (written once)
//!   scenes/<scene_id>.json one record per scene: fingerprint, status, its part file, counts
//!   parts/<scene_id>-<key>.parquet   the chips of one scene (GeoParquet 1.1)
//!   .lock, .lock-shard-I-of-N        advisory locks of the writers
//! ```
//!
//! A part file appears only by rename after it is complete, and the scene record that names
//! it is replaced atomically afterwards, so readers never see a half-written file or rows of
//! a scene twice.

pub mod chip_reader;
mod commit;
pub mod compact;
mod global_column;
mod global_reader;
mod index_dir;
mod lock;
mod part;
mod rows;
mod schema;
pub mod snapshot;

pub use chip_reader::{PartFile, StoredChip, read_rows};
pub use commit::{SceneMeta, now_s};
pub use global_reader::{GlobalReader, GlobalRow, RowGroupSummary};
pub use index_dir::{
    ChipOptions, INDEX_FILE, IndexDir, IndexHeader, LiveParts, PARTS_DIR, PartRows, SCENES_DIR,
    SceneFingerprint, SceneRecord, SceneStatus, part_files, row_wanted, scene_id,
};
pub use lock::WriterLock;
pub use part::{PartWriter, PublishedPart};
pub use rows::ChipRow;
pub use schema::{ChipSchema, NodesDtype, SCHEMA_VERSION, columns, geo_metadata};
