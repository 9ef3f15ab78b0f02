//! Named `f32` tensors of `model.safetensors`, read without libtorch from the file mapped
//! into memory (no copy: safetensors keeps tensor data 8-byte aligned), shape-checked
//! against what the config and vocabulary expect.
//!
//! The mapping is only read; `save` replaces weights files by rename, never in place, so a
//! mapped file does not change under a running search. A long-running process (`serve`)
//! copies the arrays out ([`Array::resident`]): an operator's in-place `cp` over the file
//! must not change or break a server's weights.

use std::collections::HashMap;
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

/// The weights file, mapped, with its header parsed once: each tensor's dtype, shape and
/// byte range in the file.
pub struct Weights {
    map: Arc<Mmap>,
    path: std::path::PathBuf,
    tensors: HashMap<String, (Dtype, Vec<usize>, Range<usize>)>,
}

impl Weights {
    /// Maps `path` read-only.
    pub fn open(path: &Path) -> Result<Weights> {
        let file = std::fs::File::open(path).map_err(|e| AcfError::io(path, "cannot read weights", e))?;
        // SAFETY: the mapping is read-only and weights files are replaced by rename, never
        // rewritten in place (see the module docs).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| AcfError::io(path, "cannot map weights", e))?;
        let st = SafeTensors::deserialize(&map)
            .map_err(|e| AcfError::Safetensors { path: path.to_path_buf(), reason: e.to_string() })?;
        let base = map.as_ptr() as usize;
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let start = view.data().as_ptr() as usize - base;
                (name, (view.dtype(), view.shape().to_vec(), start..start + view.data().len()))
            })
            .collect();
        Ok(Weights { map: Arc::new(map), path: path.to_path_buf(), tensors })
    }

    /// The file's bytes (for the fingerprint).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Tensor `name`, which must exist, be F32 and have `shape`; `hint` is added to a shape
    /// error (e.g. the vocabulary size for the embedding).
    pub fn get(&self, name: &str, shape: &[usize], hint: &str) -> Result<Array> {
        let mismatch = |reason: String| AcfError::ModelMismatch { path: self.path.clone(), reason };
        let (dtype, found, range) = self.tensors.get(name).ok_or_else(|| {
            mismatch(format!(
                "tensor '{name}' the config expects is not in {WEIGHTS_FILE} (was it trained with another config?)"
            ))
        })?;
        if found != shape {
            return Err(mismatch(format!(
                "tensor '{name}' has shape {found:?} in {WEIGHTS_FILE} but config/vocab expect {shape:?}{hint}"
            )));
        }
        if *dtype != Dtype::F32 {
            return Err(mismatch(format!("tensor '{name}' is {dtype:?}, expected F32")));
        }
        let bytes = &self.map[range.clone()];
        let data = if bytemuck::try_cast_slice::<u8, f32>(bytes).is_ok() {
            Data::Mapped(self.map.clone(), range.clone())
        } else {
            Data::Owned(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        };
        Ok(Array { shape: shape.to_vec(), data })
    }

    /// Whether the file holds a tensor called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}
