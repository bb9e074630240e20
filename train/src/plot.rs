//! `training.png`: the loss and the validation Dice per epoch, drawn without a plotting library.
//!
//! Two panels side by side: on the left the training loss (blue) and the validation loss (orange)
//! per epoch, on a y range fitted to the data; on the right the validation Dice of every
//! foreground class (the preview's label colours, so class 1 has the colour its label has in the
//! segmentation preview) on a fixed 0–1 range with grid lines every 0.25. Labels use a built-in
//! 3x5 pixel font scaled 2x (digits, a few letters and punctuation), enough for panel titles and
//! the axis ranges; the numbers themselves are in `training.json` next to the picture.

use std::path::Path;

use e2enc_segment::preview::{label_colour, write_png, PreviewError, Rgb};

/// One epoch's record.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    /// Validation Dice per foreground class (class 1 first); NaN where a class was absent.
    pub val_dice: Vec<f64>,
    pub lr: f64,
    pub seconds: f64,
}

const PANEL_W: usize = 420;
const PANEL_H: usize = 300;
const MARGIN: usize = 44;
const SCALE: usize = 2;

/// Draws the history and writes it to `path` (atomically).
pub fn write_training_png(history: &[EpochLog], path: &Path) -> Result<(), PreviewError> {
    write_png(&render(history), path)
}

/// Renders the two panels.
pub fn render(history: &[EpochLog]) -> Rgb {
    let mut img = Canvas::new(2 * PANEL_W, PANEL_H);
    let epochs = history.len().max(2) - 1;
    // Loss panel.
    let losses: Vec<f64> = history
        .iter()
        .flat_map(|h| [h.train_loss, h.val_loss])
        .filter(|v| v.is_finite())
        .collect();
    let (mut lo, mut hi) = losses
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    let loss_panel = Panel {
        x0: 0,
        lo,
        hi,
        epochs,
    };
    loss_panel.frame(&mut img, "LOSS", &[]);
    img.text(MARGIN, PANEL_H - MARGIN + 8, "EPOCH", GREY);
    img.text(4, MARGIN - 4, &format!("{hi:.2}"), GREY);
    img.text(4, PANEL_H - MARGIN - 10, &format!("{lo:.2}"), GREY);
    let series = |f: &dyn Fn(&EpochLog) -> f64| history.iter().map(f).collect::<Vec<f64>>();
    loss_panel.line(&mut img, &series(&|h| h.train_loss), BLUE);
    loss_panel.line(&mut img, &series(&|h| h.val_loss), ORANGE);
    img.text(PANEL_W - 150, 10, "TRAIN", BLUE);
    img.text(PANEL_W - 80, 10, "VAL", ORANGE);
    // Dice panel.
    let dice_panel = Panel {
        x0: PANEL_W,
        lo: 0.0,
        hi: 1.0,
        epochs,
    };
    dice_panel.frame(&mut img, "VAL DICE", &[0.25, 0.5, 0.75]);
    img.text(PANEL_W + 4, MARGIN - 4, "1.0", GREY);
    img.text(PANEL_W + 4, PANEL_H - MARGIN - 10, "0.0", GREY);
    img.text(
        PANEL_W + MARGIN,
        PANEL_H - MARGIN + 8,
        &format!("EPOCH 0-{epochs}"),
        GREY,
    );
    let classes = history.iter().map(|h| h.val_dice.len()).max().unwrap_or(0);
    for c in 0..classes {
        let colour = label_colour(c as u16 + 1);
        let ys: Vec<f64> = history
            .iter()
            .map(|h| h.val_dice.get(c).copied().unwrap_or(f64::NAN))
            .collect();
        dice_panel.line(&mut img, &ys, colour);
        img.text(
            2 * PANEL_W - 40 - 24 * (classes - c),
            10,
            &format!("{}", c + 1),
            colour,
        );
    }
    img.into_rgb()
}

const WHITE: [u8; 3] = [255, 255, 255];
const GREY: [u8; 3] = [90, 90, 90];
const LIGHT: [u8; 3] = [220, 220, 220];
const BLUE: [u8; 3] = [31, 119, 180];
const ORANGE: [u8; 3] = [255, 127, 14];

struct Panel {
    x0: usize,
    lo: f64,
    hi: f64,
    epochs: usize,
}

impl Panel {
    fn px(&self, epoch: usize) -> f64 {
        let w = (PANEL_W - 2 * MARGIN) as f64;
        (self.x0 + MARGIN) as f64 + w * epoch as f64 / self.epochs as f64
    }

    fn py(&self, v: f64) -> f64 {
        let h = (PANEL_H - 2 * MARGIN) as f64;
        let t = ((v - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0);
        (PANEL_H - MARGIN) as f64 - h * t
    }

    fn frame(&self, img: &mut Canvas, title: &str, grid: &[f64]) {
        let (l, r) = (self.x0 + MARGIN, self.x0 + PANEL_W - MARGIN);
        let (t, b) = (MARGIN, PANEL_H - MARGIN);
        for &g in grid {
            let y = self.py(g).round() as usize;
            img.hline(l, r, y, LIGHT);
        }
        img.hline(l, r, b, GREY);
        img.hline(l, r, t, GREY);
        img.vline(l, t, b, GREY);
        img.vline(r, t, b, GREY);
        img.text(self.x0 + MARGIN, 10, title, GREY);
    }

    /// A polyline through the finite points; a single point is drawn as a dot.
    fn line(&self, img: &mut Canvas, ys: &[f64], colour: [u8; 3]) {
        let pts: Vec<(f64, f64)> = ys
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(e, &v)| (self.px(e), self.py(v)))
            .collect();
        for p in &pts {
            img.dot(p.0, p.1, colour);
        }
        for w in pts.windows(2) {
            img.segment(w[0], w[1], colour);
        }
    }
}

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<[u8; 3]>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            px: vec![WHITE; w * h],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            self.px[y as usize * self.w + x as usize] = c;
        }
    }

    fn hline(&mut self, x0: usize, x1: usize, y: usize, c: [u8; 3]) {
        for x in x0..=x1 {
            self.set(x as i64, y as i64, c);
        }
    }

    fn vline(&mut self, x: usize, y0: usize, y1: usize, c: [u8; 3]) {
        for y in y0..=y1 {
            self.set(x as i64, y as i64, c);
        }
    }

    fn dot(&mut self, x: f64, y: f64, c: [u8; 3]) {
        let (x, y) = (x.round() as i64, y.round() as i64);
        for dy in -1..=1 {
            for dx in -1..=1 {
                self.set(x + dx, y + dy, c);
            }
        }
    }

    /// A two-pixel-wide segment (sampled at half-pixel steps).
    fn segment(&mut self, a: (f64, f64), b: (f64, f64), c: [u8; 3]) {
        let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) * 2.0)
            .ceil()
            .max(1.0) as usize;
        for i in 0..=n {
            let t = i as f64 / n as f64;
            let x = (a.0 + t * (b.0 - a.0)).round() as i64;
            let y = (a.1 + t * (b.1 - a.1)).round() as i64;
            self.set(x, y, c);
            self.set(x, y + 1, c);
        }
    }

    /// Text in the 3x5 font at `SCALE`; unknown characters are left blank.
    fn text(&mut self, x: usize, y: usize, s: &str, c: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            let rows = glyph(ch.to_ascii_uppercase());
            let gx = x + i * 4 * SCALE;
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        for sy in 0..SCALE {
                            for sx in 0..SCALE {
                                self.set(
                                    (gx + col * SCALE + sx) as i64,
                                    (y + r * SCALE + sy) as i64,
                                    c,
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    fn into_rgb(self) -> Rgb {
        Rgb {
            width: self.w,
            height: self.h,
            data: self.px.into_iter().flatten().collect(),
        }
    }
}

/// Rows (top to bottom, 3 bits each, MSB left) of the glyph of `c`.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'A' => [2, 5, 7, 5, 5],
        'C' => [7, 4, 4, 4, 7],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'L' => [4, 4, 4, 4, 7],
        'N' => [5, 7, 7, 7, 5],
        'O' => [7, 5, 5, 5, 7],
        'P' => [7, 5, 7, 4, 4],
        'R' => [6, 5, 6, 5, 5],
        'S' => [7, 4, 7, 1, 7],
        'T' => [7, 2, 2, 2, 2],
        'V' => [5, 5, 5, 5, 2],
        _ => [0; 5],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(epoch: usize, loss: f64, dice: Vec<f64>) -> EpochLog {
        EpochLog {
            epoch,
            train_loss: loss,
            val_loss: loss + 0.1,
            val_dice: dice,
            lr: 0.01,
            seconds: 1.0,
        }
    }

    #[test]
    fn draws_both_panels_with_class_colours() {
        let h = vec![log(0, 1.0, vec![0.2, 0.1]), log(1, 0.5, vec![0.6, 0.5])];
        let img = render(&h);
        assert_eq!(img.width, 2 * PANEL_W);
        assert_eq!(img.data.len(), img.width * img.height * 3);
        let has = |c: [u8; 3]| img.data.chunks_exact(3).any(|p| p == c);
        assert!(has(BLUE) && has(ORANGE));
        assert!(has(label_colour(1)) && has(label_colour(2)));
        // The Dice line of class 1 runs in the right panel only.
        let c1 = label_colour(1);
        let xs: Vec<usize> = img
            .data
            .chunks_exact(3)
            .enumerate()
            .filter(|(_, p)| *p == c1)
            .map(|(i, _)| i % img.width)
            .collect();
        assert!(xs.iter().all(|&x| x >= PANEL_W));
    }

    #[test]
    fn empty_and_constant_histories_do_not_fail() {
        let _ = render(&[]);
        let _ = render(&[log(0, 1.0, vec![f64::NAN])]);
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("training.png");
        write_training_png(&[log(0, 1.0, vec![0.5])], &p).unwrap();
        assert!(p.metadata().unwrap().len() > 100);
    }
}
