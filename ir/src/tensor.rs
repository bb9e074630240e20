//! Host tensors: a static shape and a contiguous row-major buffer (f32 or i32).
//!
//! This is the value type of the interpreter and of the weight store; later backends copy into
//! their own layouts at their edges.

use crate::error::IrError;
use crate::types::{DType, Shape, TensorType};

/// Element storage of a [`Tensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

/// A dense row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Shape,
    data: TensorData,
}

impl Tensor {
    /// An f32 tensor; errors when `data.len()` does not match the shape.
    pub fn from_f32(shape: impl Into<Shape>, data: Vec<f32>) -> Result<Tensor, IrError> {
        Self::new(shape.into(), TensorData::F32(data))
    }

    pub fn from_i32(shape: impl Into<Shape>, data: Vec<i32>) -> Result<Tensor, IrError> {
        Self::new(shape.into(), TensorData::I32(data))
    }

    fn new(shape: Shape, data: TensorData) -> Result<Tensor, IrError> {
        let n: usize = shape.iter().product();
        let len = match &data {
            TensorData::F32(v) => v.len(),
            TensorData::I32(v) => v.len(),
        };
        if n != len {
            return Err(IrError::tensor(
                "<new>",
                format!("shape {shape:?} holds {n} elements, data has {len}"),
            ));
        }
        Ok(Tensor { shape, data })
    }

    pub fn zeros(ty: &TensorType) -> Tensor {
        let n = ty.numel();
        let data = match ty.dtype {
            DType::F32 => TensorData::F32(vec![0.0; n]),
            DType::I32 => TensorData::I32(vec![0; n]),
        };
        Tensor {
            shape: ty.shape.clone(),
            data,
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        match self.data {
            TensorData::F32(_) => DType::F32,
            TensorData::I32(_) => DType::I32,
        }
    }

    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dtype(), self.shape.clone())
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The element storage, by value (lets a caller reuse the buffer).
    pub fn into_data(self) -> TensorData {
        self.data
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The f32 elements, or `None` for an i32 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I32(_) => None,
        }
    }

    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        match &mut self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I32(_) => None,
        }
    }

    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            TensorData::I32(v) => Some(v),
            TensorData::F32(_) => None,
        }
    }

    /// Number of elements that are not exactly zero.
    pub fn count_nonzero(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.iter().filter(|x| **x != 0.0).count(),
            TensorData::I32(v) => v.iter().filter(|x| **x != 0).count(),
        }
    }
}

/// Largest absolute difference divided by the largest absolute reference value (0 when both are
/// all zero): the "relative error" used throughout the tests. `None` if shapes or dtypes differ.
pub fn relative_error(got: &Tensor, want: &Tensor) -> Option<f64> {
    if got.shape() != want.shape() {
        return None;
    }
    let (num, den) = match (got.data(), want.data()) {
        (TensorData::F32(a), TensorData::F32(b)) => {
            a.iter().zip(b).fold((0f64, 0f64), |acc, (x, y)| {
                let d = (*x as f64 - *y as f64).abs();
                let d = if d.is_nan() { f64::INFINITY } else { d };
                (acc.0.max(d), acc.1.max((*y as f64).abs()))
            })
        }
        (TensorData::I32(a), TensorData::I32(b)) => {
            a.iter().zip(b).fold((0f64, 0f64), |acc, (x, y)| {
                (
                    acc.0.max((*x as f64 - *y as f64).abs()),
                    acc.1.max((*y as f64).abs()),
                )
            })
        }
        _ => return None,
    };
    Some(if num == 0.0 {
        0.0
    } else {
        num / den.max(f64::MIN_POSITIVE)
    })
}

/// `||got - want||_2 / ||want||_2` (0 when both are all zero; infinite on NaN). `None` if shapes
/// or dtypes differ. Less sensitive than [`relative_error`] to a few ill-conditioned elements.
pub fn relative_error_l2(got: &Tensor, want: &Tensor) -> Option<f64> {
    if got.shape() != want.shape() {
        return None;
    }
    let (num, den) = match (got.data(), want.data()) {
        (TensorData::F32(a), TensorData::F32(b)) => {
            a.iter().zip(b).fold((0f64, 0f64), |acc, (x, y)| {
                let d = *x as f64 - *y as f64;
                (acc.0 + d * d, acc.1 + (*y as f64) * (*y as f64))
            })
        }
        (TensorData::I32(a), TensorData::I32(b)) => {
            a.iter().zip(b).fold((0f64, 0f64), |acc, (x, y)| {
                let d = *x as f64 - *y as f64;
                (acc.0 + d * d, acc.1 + (*y as f64) * (*y as f64))
            })
        }
        _ => return None,
    };
    if num.is_nan() {
        return Some(f64::INFINITY);
    }
    Some(if num == 0.0 {
        0.0
    } else {
        (num / den.max(f64::MIN_POSITIVE)).sqrt()
    })
}
