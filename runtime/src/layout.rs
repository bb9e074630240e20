//! The activation layout every generated kernel reads and writes: planar NCDHW with zero
//! padding around each (H, W) plane, so 3x3 windows need no bounds checks.
//!
//! A plane has `h + 2` rows (one zero row above and below) of `row` floats: `PAD_LEFT` zero
//! columns, the `w` values, then zero columns up to `row = PAD_LEFT + round_up(w, 8) + 8`. Rows
//! start 32-byte aligned when the view's offset is, and a vector load at `x - 1` or running up to
//! 8 past the last value stays inside the row. **Invariant: the padding of every plane is zero.**
//! A kernel that writes a view writes whole planes (padding included) or keeps the padding it
//! does not touch zero. Channel slices of a view (the parts of a concat) are views too, which is
//! how producers write straight into a concat's buffer.

use serde::{Deserialize, Serialize};

/// Zero columns before the values of each row.
pub const PAD_LEFT: usize = 8;
/// Zero rows above and below each plane.
pub const PAD_ROWS: usize = 1;

/// How the values of a view are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Elem {
    /// 32-bit floats: offsets and strides count f32 elements of the arena.
    #[default]
    F32,
    /// bfloat16 (the upper half of an f32, rounded to nearest even): offsets and strides count
    /// 16-bit elements (an arena offset in f32 elements is half the view's). Only activations
    /// inside a bundle (`--precision bf16`) are stored so; inputs and outputs are always f32.
    Bf16,
}

impl Elem {
    /// Whether this is [`Elem::F32`] (serde: the field is left out then).
    pub fn is_f32(&self) -> bool {
        *self == Elem::F32
    }
}

/// Where an activation `[n, c, d, h, w]` lives in the arena; offsets and strides in elements of
/// its [`Elem`] (f32 elements unless `elem` says otherwise).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct View {
    /// Start of the padded storage of element (0, 0, 0, -1, -PAD_LEFT).
    pub offset: usize,
    pub shape: [usize; 5],
    pub n_stride: usize,
    pub c_stride: usize,
    /// One padded plane: `(h + 2) * row`.
    pub d_stride: usize,
    /// One padded row.
    pub row: usize,
    /// How its values are stored.
    #[serde(default, skip_serializing_if = "Elem::is_f32")]
    pub elem: Elem,
}

/// The padded row length for width `w`.
pub fn row_len(w: usize) -> usize {
    PAD_LEFT + w.div_ceil(8) * 8 + 8
}

impl View {
    /// A dense padded view of `shape` starting at `offset`.
    pub fn padded(offset: usize, shape: [usize; 5]) -> View {
        let row = row_len(shape[4]);
        let d_stride = (shape[3] + 2 * PAD_ROWS) * row;
        let c_stride = shape[2] * d_stride;
        View {
            offset,
            shape,
            n_stride: shape[1] * c_stride,
            c_stride,
            d_stride,
            row,
            elem: Elem::F32,
        }
    }

    /// A dense padded bf16 view of `shape` whose storage starts at arena offset `offset` (in
    /// f32 elements: the view's own offset is twice that).
    pub fn padded_bf16(offset: usize, shape: [usize; 5]) -> View {
        View {
            elem: Elem::Bf16,
            ..View::padded(2 * offset, shape)
        }
    }

    /// Whether its values are stored as bf16.
    pub fn is_bf16(&self) -> bool {
        self.elem == Elem::Bf16
    }

    /// The C type of one stored value (`float`, or `e2h` for bf16: see the bf16 prelude).
    pub fn c_type(&self) -> &'static str {
        match self.elem {
            Elem::F32 => "float",
            Elem::Bf16 => "e2h",
        }
    }

    /// The C expression of the arena base as a pointer to its values (`A`, or `((e2h *)A)`).
    pub fn c_base(&self) -> &'static str {
        match self.elem {
            Elem::F32 => "A",
            Elem::Bf16 => "((e2h *)A)",
        }
    }

    /// Elements a dense padded buffer of `shape` occupies.
    pub fn elems(shape: [usize; 5]) -> usize {
        let v = View::padded(0, shape);
        shape[0] * v.n_stride
    }

    /// Index of value (n, c, z, y, x) (y and x may be -1 / w for the padding).
    pub fn at(&self, n: usize, c: usize, z: usize, y: isize, x: isize) -> usize {
        let base = self.offset + n * self.n_stride + c * self.c_stride + z * self.d_stride;
        (base as isize + (y + PAD_ROWS as isize) * self.row as isize + PAD_LEFT as isize + x)
            as usize
    }

    /// Index of the first value (y = 0, x = 0) of plane (n, c, z).
    pub fn plane(&self, n: usize, c: usize, z: usize) -> usize {
        self.at(n, c, z, 0, 0)
    }

    /// Channels `c0 .. c0 + c` of this view.
    pub fn channels(&self, c0: usize, c: usize) -> View {
        let mut v = self.clone();
        v.offset += c0 * self.c_stride;
        v.shape[1] = c;
        v
    }

    /// One past the last element this view can touch.
    pub fn end(&self) -> usize {
        self.offset + (self.shape[0] - 1) * self.n_stride + self.shape[1] * self.c_stride
    }

    /// [`View::end`] in checked arithmetic, for views read from a manifest: `None` for an empty
    /// batch or an end past `usize::MAX`.
    pub fn checked_end(&self) -> Option<usize> {
        let batches = self.shape[0].checked_sub(1)?.checked_mul(self.n_stride)?;
        let channels = self.shape[1].checked_mul(self.c_stride)?;
        self.offset.checked_add(batches)?.checked_add(channels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_geometry() {
        let v = View::padded(16, [1, 3, 2, 4, 5]);
        assert_eq!(v.row, 8 + 8 + 8);
        assert_eq!(v.d_stride, 6 * 24);
        assert_eq!(v.plane(0, 0, 0), 16 + 24 + 8);
        assert_eq!(v.at(0, 1, 1, -1, -1), 16 + v.c_stride + v.d_stride + 7);
        let s = v.channels(1, 2);
        assert_eq!(s.plane(0, 0, 0), v.plane(0, 1, 0));
        assert_eq!(View::elems([2, 3, 2, 4, 5]), 2 * 3 * 2 * 6 * 24);
    }
}
