//! The weight store: named tensors loaded from and saved to safetensors files.
//!
//! Names are the official checkpoint's names (`conv_blocks_context.0.blocks.0.conv.weight`, ...),
//! so a released PyTorch checkpoint converted to safetensors loads unchanged. Loading accepts f32,
//! f64, f16 and bf16 (converted to f32) and i32; saving writes to a temporary file in the same
//! folder and renames it into place, so a failed save never leaves a half-written file.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use safetensors::tensor::{Dtype as StDtype, TensorView};

use crate::error::IrError;
use crate::tensor::{Tensor, TensorData};

/// Named tensors, sorted by name.
#[derive(Clone, Debug, Default)]
pub struct Weights {
    map: BTreeMap<String, Arc<Tensor>>,
}

impl Weights {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        self.map.insert(name.into(), Arc::new(t));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Tensor>> {
        self.map.get(name)
    }

    pub fn remove(&mut self, name: &str) -> Option<Arc<Tensor>> {
        self.map.remove(name)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Tensor>)> {
        self.map.iter()
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.map.keys()
    }

    /// Reads every tensor of a safetensors file.
    pub fn load(path: &Path) -> Result<Weights, IrError> {
        let bytes = crate::files::read_bounded(path, crate::files::MAX_TENSOR_FILE_BYTES)?;
        Self::from_bytes(&bytes).map_err(|msg| IrError::File {
            path: path.to_path_buf(),
            msg,
        })
    }

    /// Parses a safetensors buffer. Errors are messages naming the tensor at fault.
    pub fn from_bytes(bytes: &[u8]) -> Result<Weights, String> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| format!("not a valid safetensors file: {e}"))?;
        let mut w = Weights::new();
        for (name, view) in st.tensors() {
            let t = decode(&view).map_err(|m| format!("tensor `{name}`: {m}"))?;
            w.insert(name, t);
        }
        Ok(w)
    }

    /// Serializes to safetensors bytes (f32 and i32, little endian), optionally with metadata.
    pub fn to_bytes(&self, metadata: Option<BTreeMap<String, String>>) -> Result<Vec<u8>, String> {
        let bufs: Vec<(String, Vec<usize>, StDtype, Vec<u8>)> = self
            .map
            .iter()
            .map(|(n, t)| {
                let (dt, b) = match t.data() {
                    TensorData::F32(v) => (
                        StDtype::F32,
                        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    ),
                    TensorData::I32(v) => (
                        StDtype::I32,
                        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    ),
                };
                (n.clone(), t.shape().to_vec(), dt, b)
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bufs
            .iter()
            .map(|(n, s, dt, b)| {
                TensorView::new(*dt, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| format!("tensor `{n}`: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let md = metadata.map(|m| m.into_iter().collect());
        safetensors::serialize(views, md).map_err(|e| e.to_string())
    }

    /// Writes a safetensors file atomically (temporary file in the same folder, then rename).
    pub fn save(&self, path: &Path) -> Result<(), IrError> {
        let bytes = self.to_bytes(None).map_err(|msg| IrError::File {
            path: path.to_path_buf(),
            msg,
        })?;
        write_atomic(path, &bytes)
    }
}

fn decode(v: &TensorView<'_>) -> Result<Tensor, String> {
    let shape = v.shape().to_vec();
    let b = v.data();
    let f32s =
        |n: usize, f: &dyn Fn(&[u8]) -> f32| -> Vec<f32> { b.chunks_exact(n).map(f).collect() };
    let t = match v.dtype() {
        StDtype::F32 => Tensor::from_f32(
            shape,
            f32s(4, &|c| f32::from_le_bytes(c.try_into().unwrap())),
        ),
        StDtype::F64 => Tensor::from_f32(
            shape,
            f32s(8, &|c| f64::from_le_bytes(c.try_into().unwrap()) as f32),
        ),
        StDtype::F16 => Tensor::from_f32(
            shape,
            f32s(2, &|c| {
                half::f16::from_le_bytes(c.try_into().unwrap()).to_f32()
            }),
        ),
        StDtype::BF16 => Tensor::from_f32(
            shape,
            f32s(2, &|c| {
                half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32()
            }),
        ),
        StDtype::I32 => Tensor::from_i32(
            shape,
            b.chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        other => {
            return Err(format!(
                "unsupported dtype {other:?} (use f32, f64, f16, bf16 or i32)"
            ))
        }
    };
    t.map_err(|e| e.to_string())
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IrError> {
    use std::io::Write;
    if path.file_name().is_none() {
        return Err(IrError::File {
            path: path.to_path_buf(),
            msg: "not a file path".into(),
        });
    }
    crate::files::clean_stale_temps(path);
    let tmp = crate::files::temp_path(path);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(IrError::io(path, e));
    }
    Ok(())
}
