//! Named `f32` tensors of `model.safetensors`, read without libtorch from the file mapped
//! into memory (no copy: safetensors keeps tensor data 8-byte aligned), shape-checked
//! against what the config and vocabulary expect.
//!
//! The mapping is only read; `save` replaces weights files by rename, never in place, so a
//! mapped file does not change under a running search. A long-running process (`serve`)
//! copies the arrays out ([`Array::resident`]): an operator's in-place `cp` over the file
//! must not change or break a server's weights.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{AcfError, Result};
use crate::model::model_dir::WEIGHTS_FILE;

/// A dense row-major `f32` array and its shape, held in the mapped file or, when its bytes
/// are not 4-byte aligned there, copied out.
#[derive(Debug, Clone)]
pub struct Array {
    pub shape: Vec<usize>,
    data: Data,
}

#[derive(Debug, Clone)]
enum Data {
    Mapped(Arc<Mmap>, Range<usize>),
    Owned(Vec<f32>),
}

impl Array {
    /// The same array copied out of the mapped file, so that it no longer depends on it.
    pub fn resident(&self) -> Array {
        Array { shape: self.shape.clone(), data: Data::Owned(self.data().to_vec()) }
    }

    /// The values, row-major.
    pub fn data(&self) -> &[f32] {
        match &self.data {
            // Alignment and length were checked when the array was made.
            Data::Mapped(map, range) => bytemuck::try_cast_slice(&map[range.clone()]).unwrap_or(&[]),
            Data::Owned(v) => v,
        }
    }
}

/// The weights file, mapped and parsed.
pub struct Weights {
    map: Arc<Mmap>,
    path: std::path::PathBuf,
}

impl Weights {
    /// Maps `path` read-only.
    pub fn open(path: &Path) -> Result<Weights> {
        let file = std::fs::File::open(path).map_err(|e| AcfError::io(path, "cannot read weights", e))?;
        // SAFETY: the mapping is read-only and weights files are replaced by rename, never
        // rewritten in place (see the module docs).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| AcfError::io(path, "cannot map weights", e))?;
        let weights = Weights { map: Arc::new(map), path: path.to_path_buf() };
        weights.parse()?;
        Ok(weights)
    }

    /// The file's bytes (for the fingerprint).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    fn parse(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.map)
            .map_err(|e| AcfError::Safetensors { path: self.path.clone(), reason: e.to_string() })
    }

    /// Tensor `name`, which must exist, be F32 and have `shape`; `hint` is added to a shape
    /// error (e.g. the vocabulary size for the embedding).
    pub fn get(&self, name: &str, shape: &[usize], hint: &str) -> Result<Array> {
        let mismatch = |reason: String| AcfError::ModelMismatch { path: self.path.clone(), reason };
        let st = self.parse()?;
        let view = st.tensor(name).map_err(|_| {
            mismatch(format!(
                "tensor '{name}' the config expects is not in {WEIGHTS_FILE} (was it trained with another config?)"
            ))
        })?;
        if view.shape() != shape {
            return Err(mismatch(format!(
                "tensor '{name}' has shape {:?} in {WEIGHTS_FILE} but config/vocab expect {shape:?}{hint}",
                view.shape()
            )));
        }
        if view.dtype() != Dtype::F32 {
            return Err(mismatch(format!("tensor '{name}' is {:?}, expected F32", view.dtype())));
        }
        let bytes = view.data();
        let start = bytes.as_ptr() as usize - self.map.as_ptr() as usize;
        let data = if bytemuck::try_cast_slice::<u8, f32>(bytes).is_ok() {
            Data::Mapped(self.map.clone(), start..start + bytes.len())
        } else {
            Data::Owned(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        };
        Ok(Array { shape: shape.to_vec(), data })
    }

    /// Whether the file holds a tensor called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.parse().is_ok_and(|st| st.tensor(name).is_ok())
    }
}
