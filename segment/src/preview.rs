//! A quick-look PNG of a segmentation: three orthogonal slices (axial, coronal, sagittal) side by
//! side, the image in grey and the labels blended over it, so a result can be checked by eye
//! without a NIfTI viewer.
//!
//! Volumes are C-ordered `[d0, d1, d2]` (`d2` fastest) with `spacing` in mm along the same axes;
//! for a NIfTI read into that order `d0` is k (axial slices), `d1` is j and `d2` is i. The slices
//! pass through the centroid of the labelled voxels (the volume centre when nothing is labelled).
//! No reorientation happens: the axial panel shows (d1 down, d2 across), the coronal (d0, d2)
//! and the sagittal (d0, d1), each flipped vertically so a growing index points up (superior
//! and anterior up for RAS-stored data, like plots drawn with the origin at the lower left).
//!
//! The image is windowed to its 1st–99th percentile (finite voxels only; NaN shows black).
//! Labels use the fixed [`LABEL_COLOURS`] table (repeating past 12) at opacity [`ALPHA`]. Each
//! panel keeps the physical aspect ratio from `spacing` and is [`PANEL_HEIGHT`] pixels tall
//! (shorter only where that would make it wider than [`MAX_PANEL_WIDTH`]), resampled by nearest
//! neighbour so label edges stay crisp. The file is written to a temporary name in the same
//! folder and renamed, so a failed write never leaves a half-written PNG.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Panel height in pixels.
pub const PANEL_HEIGHT: usize = 256;
/// Panels wider than this are scaled down (keeping their aspect ratio).
pub const MAX_PANEL_WIDTH: usize = 1024;
/// Black columns between panels.
pub const GAP: usize = 4;
/// Label overlay opacity.
pub const ALPHA: f32 = 0.45;
/// Overlay colours of labels 1, 2, ... (label `l` uses entry `(l - 1) % 12`).
pub const LABEL_COLOURS: [[u8; 3]; 12] = [
    [230, 25, 75],   // red
    [60, 180, 75],   // green
    [0, 130, 200],   // blue
    [255, 225, 25],  // yellow
    [245, 130, 48],  // orange
    [145, 30, 180],  // purple
    [70, 240, 240],  // cyan
    [240, 50, 230],  // magenta
    [210, 245, 60],  // lime
    [250, 190, 212], // pink
    [0, 128, 128],   // teal
    [170, 110, 40],  // brown
];

/// Errors of preview rendering and writing.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("{what} has {got} voxels but the shape {shape:?} holds {want}")]
    Length {
        what: &'static str,
        got: usize,
        shape: [usize; 3],
        want: usize,
    },
    #[error("the shape {0:?} is empty")]
    Empty([usize; 3]),
    #[error("the spacing {0:?} must be finite and positive on every axis")]
    Spacing([f64; 3]),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Png {
        path: PathBuf,
        source: png::EncodingError,
    },
}

/// An 8-bit RGB picture, rows top to bottom.
#[derive(Debug, Clone)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// The overlay colour of `label` (≥ 1).
pub fn label_colour(label: u16) -> [u8; 3] {
    LABEL_COLOURS[(label.max(1) as usize - 1) % LABEL_COLOURS.len()]
}

/// Blends `colour` over the grey level `grey` at opacity [`ALPHA`].
pub fn blend(grey: u8, colour: [u8; 3]) -> [u8; 3] {
    colour.map(|c| ((1.0 - ALPHA) * grey as f32 + ALPHA * c as f32).round() as u8)
}

/// Renders the preview of `image` with `labels` over it and writes it to `path` as a PNG.
pub fn preview(
    image: &[f32],
    labels: &[u16],
    shape: [usize; 3],
    spacing: [f64; 3],
    path: &Path,
) -> Result<(), PreviewError> {
    let rgb = render(image, labels, shape, spacing)?;
    write_png(&rgb, path)
}

/// Renders the three panels into one picture (see the module doc).
pub fn render(
    image: &[f32],
    labels: &[u16],
    shape: [usize; 3],
    spacing: [f64; 3],
) -> Result<Rgb, PreviewError> {
    let want = shape[0]
        .checked_mul(shape[1])
        .and_then(|v| v.checked_mul(shape[2]))
        .unwrap_or(usize::MAX);
    if want == 0 {
        return Err(PreviewError::Empty(shape));
    }
    for (what, got) in [("the image", image.len()), ("the labels", labels.len())] {
        if got != want {
            return Err(PreviewError::Length {
                what,
                got,
                shape,
                want,
            });
        }
    }
    if spacing.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return Err(PreviewError::Spacing(spacing));
    }
    let (lo, hi) = window(image);
    let c = centre(labels, shape);
    let [_, d1, d2] = shape;
    // (first voxel, rows, row stride, row spacing, cols, col stride, col spacing)
    let panels = [
        Slice::new(c[0] * d1 * d2, shape[1], d2, spacing[1], d2, 1, spacing[2]),
        Slice::new(c[1] * d2, shape[0], d1 * d2, spacing[0], d2, 1, spacing[2]),
        Slice::new(c[2], shape[0], d1 * d2, spacing[0], d1, d2, spacing[1]),
    ];
    let width = panels.iter().map(|p| p.out.0).sum::<usize>() + GAP * (panels.len() - 1);
    let height = panels.iter().map(|p| p.out.1).max().unwrap_or(1);
    let mut data = vec![0u8; width * height * 3];
    let mut x0 = 0;
    for p in &panels {
        let (w, h) = p.out;
        for oy in 0..h {
            let r = p.rows - 1 - ((oy * 2 + 1) * p.rows / (2 * h)).min(p.rows - 1);
            for ox in 0..w {
                let col = ((ox * 2 + 1) * p.cols / (2 * w)).min(p.cols - 1);
                let i = p.base + r * p.row_stride + col * p.col_stride;
                let v = image[i];
                let g = if v.is_finite() {
                    ((v - lo) / (hi - lo) * 255.0).clamp(0.0, 255.0).round() as u8
                } else {
                    0
                };
                let px = match labels[i] {
                    0 => [g; 3],
                    l => blend(g, label_colour(l)),
                };
                let at = ((oy * width) + x0 + ox) * 3;
                data[at..at + 3].copy_from_slice(&px);
            }
        }
        x0 += w + GAP;
    }
    Ok(Rgb {
        width,
        height,
        data,
    })
}

/// One 2-D slice of the volume and its output size in pixels.
struct Slice {
    base: usize,
    rows: usize,
    row_stride: usize,
    cols: usize,
    col_stride: usize,
    out: (usize, usize),
}

impl Slice {
    fn new(
        base: usize,
        rows: usize,
        row_stride: usize,
        row_mm: f64,
        cols: usize,
        col_stride: usize,
        col_mm: f64,
    ) -> Slice {
        let aspect = (cols as f64 * col_mm) / (rows as f64 * row_mm);
        let mut h = PANEL_HEIGHT as f64;
        let mut w = h * aspect;
        if w > MAX_PANEL_WIDTH as f64 {
            w = MAX_PANEL_WIDTH as f64;
            h = w / aspect;
        }
        let out = ((w.round() as usize).max(1), (h.round() as usize).max(1));
        Slice {
            base,
            rows,
            row_stride,
            cols,
            col_stride,
            out,
        }
    }
}

/// The 1st and 99th percentiles of the finite voxels (a unit window when they coincide).
fn window(image: &[f32]) -> (f32, f32) {
    let mut v: Vec<f32> = image.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (0.0, 1.0);
    }
    let mut at = |q: f64| {
        let k = (q * (v.len() - 1) as f64).round() as usize;
        *v.select_nth_unstable_by(k, f32::total_cmp).1
    };
    let (lo, hi) = (at(0.01), at(0.99));
    if hi > lo {
        (lo, hi)
    } else {
        (lo, lo + 1.0)
    }
}

/// The rounded centroid of the labelled voxels, or the volume centre when there are none.
fn centre(labels: &[u16], shape: [usize; 3]) -> [usize; 3] {
    let (mut sum, mut n) = ([0f64; 3], 0u64);
    let mut i = 0;
    for z in 0..shape[0] {
        for y in 0..shape[1] {
            for x in 0..shape[2] {
                if labels[i] != 0 {
                    sum[0] += z as f64;
                    sum[1] += y as f64;
                    sum[2] += x as f64;
                    n += 1;
                }
                i += 1;
            }
        }
    }
    if n == 0 {
        return shape.map(|d| d / 2);
    }
    [0, 1, 2].map(|a| ((sum[a] / n as f64).round() as usize).min(shape[a] - 1))
}

/// Writes `rgb` as a PNG to a temporary file beside `path`, then renames it into place.
pub fn write_png(rgb: &Rgb, path: &Path) -> Result<(), PreviewError> {
    let io = |source| PreviewError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.file_name().is_none() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file name",
        )));
    }
    e2enc_ir::files::clean_stale_temps(path);
    let tmp = e2enc_ir::files::temp_path(path);
    let written = (|| {
        let mut buf = BufWriter::new(File::create(&tmp).map_err(io)?);
        let png_err = |source| PreviewError::Png {
            path: path.to_path_buf(),
            source,
        };
        let mut enc = png::Encoder::new(&mut buf, rgb.width as u32, rgb.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(png_err)?;
        w.write_image_data(&rgb.data).map_err(png_err)?;
        w.finish().map_err(png_err)?;
        buf.flush().map_err(io)?;
        buf.get_ref().sync_all().map_err(io)?;
        drop(buf);
        std::fs::rename(&tmp, path).map_err(io)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ramp image with a bright 4-cube labelled 1 in the middle and voxel 0 labelled 3.
    fn synthetic(shape: [usize; 3]) -> (Vec<f32>, Vec<u16>) {
        let n = shape.iter().product();
        let (mut img, mut lab) = (vec![0f32; n], vec![0u16; n]);
        let c = shape.map(|d| d / 2);
        for z in 0..shape[0] {
            for y in 0..shape[1] {
                for x in 0..shape[2] {
                    let i = (z * shape[1] + y) * shape[2] + x;
                    img[i] = (z + y + x) as f32;
                    let inside = [z, y, x]
                        .iter()
                        .zip(c)
                        .all(|(&p, m)| p + 2 >= m && p < m + 2);
                    if inside {
                        img[i] = 1000.0;
                        lab[i] = 1;
                    }
                    if z + y + x == 0 {
                        lab[i] = 3;
                    }
                }
            }
        }
        (img, lab)
    }

    fn decode(path: &Path) -> (u32, u32, png::ColorType, Vec<u8>) {
        let file = std::io::BufReader::new(File::open(path).unwrap());
        let mut r = png::Decoder::new(file).read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.width, info.height, info.color_type, buf)
    }

    #[test]
    fn writes_a_png_with_three_panels_and_the_overlay() {
        let shape = [20, 30, 40];
        let spacing = [2.0, 1.0, 0.5];
        let (img, lab) = synthetic(shape);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("preview.png");
        preview(&img, &lab, shape, spacing, &path).unwrap();
        let (w, h, ct, px) = decode(&path);
        // Axial 30 mm x 20 mm, coronal 40 x 20, sagittal 40 x 30, all 256 px tall.
        let widths = [171, 128, 192];
        assert_eq!((w as usize, h as usize), (171 + 128 + 192 + 2 * GAP, 256));
        assert_eq!(ct, png::ColorType::Rgb);
        let pixel = |x: usize, y: usize| {
            let at = (y * w as usize + x) * 3;
            [px[at], px[at + 1], px[at + 2]]
        };
        // The label sits at the centre of every panel, over a saturated (white) image.
        let want = blend(255, label_colour(1));
        let mut x0 = 0;
        for pw in widths {
            assert_eq!(pixel(x0 + pw / 2, 128), want, "panel at x {x0}");
            x0 += pw + GAP;
        }
        assert_eq!(pixel(171 + 1, 100), [0; 3], "gap");
        // Unlabelled pixels are grey (the voxel labelled 3 is off the centre slices).
        let [r, g, b] = pixel(5, 5);
        assert!(r == g && g == b, "{:?}", [r, g, b]);
        // Exactly one file in the folder: no temporary left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn unlabelled_constant_volume_renders() {
        let shape = [3, 4, 5];
        let n = 60;
        let rgb = render(&vec![7.0; n], &vec![0; n], shape, [1.0; 3]).unwrap();
        assert_eq!(rgb.height, PANEL_HEIGHT);
        assert!(rgb.data.iter().all(|&v| v == 0));
        assert_eq!(centre(&vec![0; n], shape), [1, 2, 2]);
    }

    #[test]
    fn elongated_panels_are_capped() {
        // 2 slices of 5 mm under a 300 x 300 mm plane: the coronal panel would be 7680 px wide.
        let shape = [2, 300, 300];
        let n = 2 * 300 * 300;
        let rgb = render(&vec![0.0; n], &vec![0; n], shape, [5.0, 1.0, 1.0]).unwrap();
        assert_eq!(rgb.height, 256);
        assert_eq!(rgb.width, 256 + 1024 + 1024 + 2 * GAP);
    }

    #[test]
    fn bad_inputs_are_errors_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        let e = preview(&[0.0; 6], &[0; 5], [1, 2, 3], [1.0; 3], &path).unwrap_err();
        assert!(e.to_string().contains("the labels has 5 voxels"), "{e}");
        assert!(matches!(
            preview(&[0.0; 6], &[0; 6], [1, 2, 3], [1.0, f64::NAN, 1.0], &path),
            Err(PreviewError::Spacing(_))
        ));
        let e = preview(&[0.0; 6], &[0; 6], [1, 2, 3], [1.0; 3], dir.path()).unwrap_err();
        assert!(matches!(e, PreviewError::Io { .. }), "{e}");
        let missing = dir.path().join("no/such/dir/p.png");
        assert!(preview(&[0.0; 6], &[0; 6], [1, 2, 3], [1.0; 3], &missing).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Writes a preview of a head-like phantom (an ellipsoid with a two-label lesion) to
    /// $E2ENC_PREVIEW_OUT for looking at by eye.
    #[test]
    #[ignore]
    fn write_for_inspection() {
        let out = std::env::var("E2ENC_PREVIEW_OUT").unwrap_or("/tmp/e2enc-preview.png".into());
        let shape = [80, 120, 100];
        let spacing = [2.0, 1.0, 1.2];
        let n = shape.iter().product();
        let (mut img, mut lab) = (vec![0f32; n], vec![0u16; n]);
        let mut i = 0;
        for z in 0..shape[0] {
            for y in 0..shape[1] {
                for x in 0..shape[2] {
                    let p = [z, y, x].map(|v| v as f64);
                    let e = ((p[0] - 40.0) / 35.0).powi(2)
                        + ((p[1] - 60.0) / 55.0).powi(2)
                        + ((p[2] - 50.0) / 42.0).powi(2);
                    if e < 1.0 {
                        img[i] = (300.0 + 200.0 * (p[1] / 7.0).sin() * (p[2] / 9.0).cos()) as f32;
                    }
                    let l = ((p[0] - 50.0) / 8.0).powi(2)
                        + ((p[1] - 70.0) / 14.0).powi(2)
                        + ((p[2] - 35.0) / 10.0).powi(2);
                    if l < 1.0 {
                        lab[i] = if l < 0.3 { 2 } else { 1 };
                    }
                    i += 1;
                }
            }
        }
        preview(&img, &lab, shape, spacing, Path::new(&out)).unwrap();
    }
}
