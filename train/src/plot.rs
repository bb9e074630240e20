//! `training.png`: the loss and the validation Dice per epoch, drawn with `plotters`.
//!
//! Two panels side by side, each with a title, a legend row under it, axes with tick labels and
//! axis titles, and light grid lines at the ticks:
//! - **Loss**: the training loss (blue) and the validation loss (orange) per epoch, on a y range
//!   fitted to the data (5% headroom, "nice" ticks of 1, 2, 2.5 or 5 times a power of ten;
//!   scientific labels for very large or very small values).
//! - **Validation Dice**: the Dice of every foreground class on a fixed 0–1 range, in the
//!   segmentation preview's label colours ([`label_colour`], so class 1 has the colour its label
//!   has in `preview.png`). The preview's 12 colours repeat past class 12; classes 13–24 are
//!   drawn dashed and later ones dotted so they stay apart. A class with no finite Dice at all is
//!   marked "(no data)" in the legend; a value outside 0–1 (not a Dice score) is left out and
//!   counted in the legend.
//!
//! Points carry markers while the run has at most 30 epochs. The legend takes as many rows as its
//! entries need (the picture grows by a row's height for each, up to 12 rows, then "+N more").
//!
//! An epoch whose value is NaN (a class absent from the validation cases) or infinite leaves a gap
//! in that curve instead of being drawn or joined across; a value that stands alone between gaps
//! keeps its marker, so it stays visible. Values larger than 1e300 in magnitude are treated like
//! infinities (a scale that holds them holds nothing else). The legend says how many loss values
//! were left out. The x axis is the epoch number of each record; the numbers themselves are in
//! `training.json` next to the picture.
//!
//! Text is set in **DejaVu Sans** (regular), whose TTF file comes from the `dejavu` crate on
//! crates.io and is embedded in the binary (`include_bytes!` there), rasterised by `ab_glyph`
//! through plotters' `ab_glyph` feature: no system fonts, fontconfig or network are needed at run
//! time. DejaVu's licence (Bitstream Vera's, with the DejaVu changes in the public domain) allows
//! embedding and redistribution; its notice travels inside the font file's own name table.
//!
//! Plotters draws into an RGB buffer (`BitMapBackend::with_buffer`, no `image` crate) and
//! [`write_png`] writes it: to a temporary name in the same folder, then renamed, so a failed
//! write never leaves a half-written PNG.

use std::path::Path;
use std::sync::OnceLock;

use e2enc_segment::preview::{label_colour, write_png, PreviewError, Rgb};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;

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

/// Errors of drawing or writing `training.png`.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The embedded font could not be parsed (a broken build, not bad input).
    #[error("training plot: the embedded DejaVu Sans font could not be loaded")]
    Font,
    /// Plotters failed while drawing (the message names the step).
    #[error("training plot: drawing the {what} failed: {msg}")]
    Draw { what: &'static str, msg: String },
    /// Writing the PNG file.
    #[error(transparent)]
    Write(#[from] PreviewError),
}

/// Width of the picture in pixels (two panels of half this width).
pub const WIDTH: usize = 1280;
/// Height of the picture when each legend fits on one row; every further legend row (many
/// classes) adds [`LEGEND_ROW`] pixels, up to [`MAX_LEGEND_ROWS`] rows.
pub const HEIGHT: usize = 480;
/// Height of one legend row in pixels.
pub const LEGEND_ROW: usize = 22;
/// Legend rows shown at most; entries past them are summarised as "+N more".
pub const MAX_LEGEND_ROWS: usize = 12;

/// Colour of the training loss curve.
pub const TRAIN_COLOUR: [u8; 3] = [31, 119, 180];
/// Colour of the validation loss curve.
pub const VAL_COLOUR: [u8; 3] = [255, 127, 14];

/// Name under which the embedded font is registered with plotters.
const FONT: &str = "e2enc-dejavu-sans";
const TITLE_SIZE: f64 = 22.0;
const LABEL_SIZE: f64 = 15.0;
const DESC_SIZE: f64 = 16.0;
const TEXT: RGBColor = RGBColor(35, 35, 35);
const AXIS: RGBColor = RGBColor(90, 90, 90);
const GRID: RGBColor = RGBColor(228, 228, 228);
const NOTE: RGBColor = RGBColor(110, 110, 110);
/// Magnitudes above this are left out of the loss panel like infinities.
const MAX_PLOTTED: f64 = 1e300;
/// Markers are drawn on every point up to this many epochs (on isolated points always).
const MAX_MARKED_EPOCHS: usize = 30;

/// Registers the embedded font with plotters once per process.
fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    ok.then_some(()).ok_or(PlotError::Font)
}

/// Draws the history and writes it to `path` (atomically).
pub fn write_training_png(history: &[EpochLog], path: &Path) -> Result<(), PlotError> {
    write_png(&render(history)?, path)?;
    Ok(())
}

/// Renders the two panels.
pub fn render(history: &[EpochLog]) -> Result<Rgb, PlotError> {
    register_font()?;
    let loss = loss_series(history);
    let dice = dice_series(history);
    let panel_w = WIDTH / 2;
    let rows = legend_rows(&loss.legend, panel_w)?.max(legend_rows(&dice.legend, panel_w)?);
    let height = HEIGHT + (rows - 1) * LEGEND_ROW;
    let mut data = vec![255u8; WIDTH * height * 3];
    {
        let root = BitMapBackend::with_buffer(&mut data, (WIDTH as u32, height as u32))
            .into_drawing_area();
        root.fill(&WHITE).map_err(draw_err("background"))?;
        let (left, right) = root.split_horizontally(panel_w as u32);
        let x = epoch_axis(history);
        draw_panel(&left, "Loss", "loss", &x, &loss, rows)?;
        draw_panel(&right, "Validation Dice", "Dice", &x, &dice, rows)?;
        root.present().map_err(draw_err("picture"))?;
    }
    Ok(Rgb {
        width: WIDTH,
        height,
        data,
    })
}

fn draw_err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> PlotError {
    move |e| PlotError::Draw {
        what,
        msg: e.to_string(),
    }
}

/// How a curve's line is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Dash {
    Solid,
    Dashed,
    Dotted,
}

/// One curve: its legend text, colour, line style and points (`None` for a gap).
struct Curve {
    label: String,
    colour: RGBColor,
    dash: Dash,
    points: Vec<(f64, Option<f64>)>,
}

/// One legend entry: a curve sample and its text, or a plain note.
#[derive(Clone)]
enum Entry {
    Curve {
        label: String,
        colour: RGBColor,
        dash: Dash,
    },
    Note(String),
}

/// What one panel shows.
struct Series {
    curves: Vec<Curve>,
    legend: Vec<Entry>,
    /// The y range and its ticks.
    y: Axis,
}

/// A linear axis: its range and the tick values with their labels (plotters draws its grid
/// lines and tick labels at exactly these values).
#[derive(Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<(f64, String)>,
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, (p0, p1): (i32, i32)) -> i32 {
        let t = (v - self.lo) / (self.hi - self.lo);
        // Far-off values (never drawn here) saturate instead of wrapping.
        (p0 as f64 + t * (p1 - p0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.iter().map(|t| t.0).collect()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

fn rgb(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

fn curve(
    label: String,
    colour: RGBColor,
    dash: Dash,
    history: &[EpochLog],
    f: impl Fn(&EpochLog) -> f64,
    drawable: impl Fn(f64) -> bool,
) -> Curve {
    let points = history
        .iter()
        .map(|h| {
            let v = f(h);
            (h.epoch as f64, drawable(v).then_some(v))
        })
        .collect();
    Curve {
        label,
        colour,
        dash,
        points,
    }
}

/// Losses that fit a linear scale with the others.
fn drawable_loss(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_PLOTTED
}

/// Dice scores (NaN marks an absent class; anything outside 0–1 is not a Dice score).
fn drawable_dice(v: f64) -> bool {
    (0.0..=1.0).contains(&v)
}

fn loss_series(history: &[EpochLog]) -> Series {
    let curves = vec![
        curve(
            "training".into(),
            rgb(TRAIN_COLOUR),
            Dash::Solid,
            history,
            |h| h.train_loss,
            drawable_loss,
        ),
        curve(
            "validation".into(),
            rgb(VAL_COLOUR),
            Dash::Solid,
            history,
            |h| h.val_loss,
            drawable_loss,
        ),
    ];
    let values: Vec<f64> = curves
        .iter()
        .flat_map(|c| c.points.iter().filter_map(|p| p.1))
        .collect();
    let left_out = 2 * history.len() - values.len();
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let y = if lo.is_finite() {
        fitted_axis(lo, hi)
    } else {
        fitted_axis(0.0, 1.0)
    };
    let mut legend = legend_of(&curves);
    if left_out > 0 {
        let s = if left_out == 1 { "" } else { "s" };
        legend.push(Entry::Note(format!(
            "{left_out} value{s} not drawn (NaN, ±inf, |v| > 1e300)"
        )));
    }
    Series { curves, legend, y }
}

fn dice_series(history: &[EpochLog]) -> Series {
    let classes = history.iter().map(|h| h.val_dice.len()).max().unwrap_or(0);
    let curves: Vec<Curve> = (0..classes)
        .map(|c| {
            let dash = match c / 12 {
                0 => Dash::Solid,
                1 => Dash::Dashed,
                _ => Dash::Dotted,
            };
            let colour = rgb(label_colour((c + 1).min(u16::MAX as usize) as u16));
            let dice = |h: &EpochLog| h.val_dice.get(c).copied().unwrap_or(f64::NAN);
            let label = format!("class {}", c + 1);
            let mut k = curve(label, colour, dash, history, dice, drawable_dice);
            if k.points.iter().all(|p| p.1.is_none()) {
                k.label.push_str(" (no data)");
            }
            k
        })
        .collect();
    let mut legend = legend_of(&curves);
    let bad = history
        .iter()
        .flat_map(|h| &h.val_dice)
        .filter(|v| !v.is_nan() && !drawable_dice(**v))
        .count();
    if bad > 0 {
        let s = if bad == 1 { "" } else { "s" };
        legend.push(Entry::Note(format!("{bad} value{s} outside 0–1 not drawn")));
    }
    if classes == 0 {
        legend.push(Entry::Note("no foreground classes yet".into()));
    }
    let ticks = (0..=10)
        .map(|i| {
            let v = i as f64 / 10.0;
            (v, format!("{v:.1}"))
        })
        .collect();
    Series {
        curves,
        legend,
        y: Axis {
            lo: -0.03,
            hi: 1.03,
            ticks,
        },
    }
}

fn legend_of(curves: &[Curve]) -> Vec<Entry> {
    curves
        .iter()
        .map(|c| Entry::Curve {
            label: c.label.clone(),
            colour: c.colour,
            dash: c.dash,
        })
        .collect()
}

/// The x axis: the epochs of the history, a little room on either side, whole-number ticks;
/// none without epochs.
fn epoch_axis(history: &[EpochLog]) -> Axis {
    if history.is_empty() {
        // No epochs, no ticks (the panels say so).
        return Axis {
            lo: 0.0,
            hi: 1.0,
            ticks: Vec::new(),
        };
    }
    let first = history.iter().map(|h| h.epoch).min().unwrap_or(0) as f64;
    let last = history.iter().map(|h| h.epoch).max().unwrap_or(1) as f64;
    if first == last {
        // One epoch: it alone, in the middle.
        return Axis {
            lo: first - 0.5,
            hi: first + 0.5,
            ticks: vec![(first, format!("{first}"))],
        };
    }
    let pad = ((last - first) * 0.03).max(0.5);
    let step = nice_step((last - first) / 10.0, EPOCH_STEPS)
        .max(1.0)
        .round();
    let ticks = ticks_between(first, last, step)
        .into_iter()
        .map(|v| (v, format!("{}", v.round() as i64)))
        .collect();
    Axis {
        lo: first - pad,
        hi: last + pad,
        ticks,
    }
}

/// A y axis around `[lo, hi]` (finite, |v| ≤ 1e300) with about six nice ticks and 5% headroom.
fn fitted_axis(lo: f64, hi: f64) -> Axis {
    let scale = lo.abs().max(hi.abs()).max(1e-300);
    let (lo, hi) = if hi - lo <= scale * 1e-9 {
        // A constant curve: a small window around it.
        let c = 0.5 * (lo + hi);
        let half = (c.abs() * 0.1).max(1e-3);
        (c - half, c + half)
    } else {
        let pad = 0.05 * (hi - lo);
        (lo - pad, hi + pad)
    };
    let step = nice_step((hi - lo) / 6.0, LOSS_STEPS);
    let values = ticks_between(lo, hi, step);
    let big = values.iter().fold(0f64, |m, v| m.max(v.abs()));
    let ticks = values
        .iter()
        .map(|&v| (v, tick_label(v, step, big)))
        .collect();
    Axis { lo, hi, ticks }
}

/// Tick steps of loss values: 1, 2, 2.5 or 5 times a power of ten.
const LOSS_STEPS: &[f64] = &[1.0, 2.0, 2.5, 5.0];
/// Tick steps of epochs: 1, 2 or 5 times a power of ten (whole numbers from 1 up).
const EPOCH_STEPS: &[f64] = &[1.0, 2.0, 5.0];

/// The smallest of `mantissas` times a power of ten that is at least `raw` (> 0).
fn nice_step(raw: f64, mantissas: &[f64]) -> f64 {
    let raw = raw.max(1e-300);
    let mag = 10f64.powf(raw.log10().floor());
    mantissas
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag)
}

/// Multiples of `step` in `[lo, hi]`.
fn ticks_between(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step).ceil();
    let last = (hi / step).floor();
    if !(first.is_finite() && last.is_finite()) || last < first || last - first > 100.0 {
        return vec![lo, hi];
    }
    (0..=(last - first) as usize)
        .map(|i| (first + i as f64) * step)
        .collect()
}

/// A tick label with as many decimals as the step needs; scientific for very large or small.
fn tick_label(v: f64, step: f64, big: f64) -> String {
    // Digits after the step's leading one: 2.5 needs one more than 2 or 5.
    let mantissa = step / 10f64.powf(step.log10().floor());
    let extra = i32::from((mantissa - 2.5).abs() < 1e-6);
    let step_exp = step.log10().floor() as i32 - extra;
    if !(1e-3..1e5).contains(&big) {
        if v == 0.0 {
            return "0".into();
        }
        let v_exp = big.log10().floor() as i32;
        let digits = (v_exp - step_exp).clamp(0, 6) as usize;
        return format!("{v:.digits$e}");
    }
    let digits = (-step_exp).max(0) as usize;
    format!("{v:.digits$}")
}

/// The legend's entries as (width in pixels, entry), each entry measured in the label font.
fn measured(entries: &[Entry]) -> Result<Vec<(u32, &Entry)>, PlotError> {
    let font = (FONT, LABEL_SIZE).into_font();
    entries
        .iter()
        .map(|e| {
            let (text, sample) = match e {
                Entry::Curve { label, .. } => (label.as_str(), SAMPLE_W + 6),
                Entry::Note(s) => (s.as_str(), 0),
            };
            let (w, _) = font.box_size(text).map_err(draw_err("legend text"))?;
            Ok((sample + w + ENTRY_GAP, e))
        })
        .collect()
}

const SAMPLE_W: u32 = 26;
const ENTRY_GAP: u32 = 20;
const LEGEND_INSET: u32 = 70;

/// Lays the legend out in rows no wider than the panel allows; returns the rows.
fn legend_layout(entries: &[Entry], panel_w: usize) -> Result<Vec<Vec<(u32, &Entry)>>, PlotError> {
    let avail = (panel_w as u32).saturating_sub(LEGEND_INSET + 20).max(1);
    let mut rows: Vec<Vec<(u32, &Entry)>> = vec![vec![]];
    let mut used = 0;
    for (w, e) in measured(entries)? {
        if used > 0 && used + w > avail {
            rows.push(vec![]);
            used = 0;
        }
        used += w;
        rows.last_mut().expect("one row at least").push((w, e));
    }
    Ok(rows)
}

/// Legend rows the panel needs (1 to [`MAX_LEGEND_ROWS`]).
fn legend_rows(entries: &[Entry], panel_w: usize) -> Result<usize, PlotError> {
    Ok(legend_layout(entries, panel_w)?
        .len()
        .clamp(1, MAX_LEGEND_ROWS))
}

fn line_style(colour: RGBColor) -> ShapeStyle {
    colour.stroke_width(2)
}

/// Draws `points` as a polyline in the curve's dash pattern.
fn draw_line<DB: DrawingBackend, C>(
    area: &DrawingArea<DB, C>,
    points: Vec<C::From>,
    colour: RGBColor,
    dash: Dash,
) -> Result<(), PlotError>
where
    C: plotters::coord::CoordTranslate,
    C::From: Clone + 'static,
{
    let style = line_style(colour);
    let res = match dash {
        Dash::Solid => area.draw(&PathElement::new(points, style)),
        Dash::Dashed => DashedLineSeries::new(points, 9, 6, style)
            .into_iter()
            .try_for_each(|e| area.draw(&e)),
        Dash::Dotted => DashedLineSeries::new(points, 2, 5, style)
            .into_iter()
            .try_for_each(|e| area.draw(&e)),
    };
    res.map_err(draw_err("curves"))
}

/// One panel: title, legend rows, and the chart.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    x: &Axis,
    s: &Series,
    rows: usize,
) -> Result<(), PlotError> {
    let title_style = (FONT, TITLE_SIZE).into_font().color(&TEXT);
    let label_style = (FONT, LABEL_SIZE).into_font().color(&TEXT);
    let desc_style = (FONT, DESC_SIZE).into_font().color(&TEXT);
    let (head, body) = area.split_vertically(40 + rows as u32 * LEGEND_ROW as u32);
    head.draw(&Text::new(
        title.to_string(),
        (LEGEND_INSET as i32, 10),
        title_style,
    ))
    .map_err(draw_err("panel title"))?;
    let epochs = s.curves.first().map_or(0, |c| c.points.len());
    let marked = epochs <= MAX_MARKED_EPOCHS;
    draw_legend(&head, &s.legend, rows, marked, &label_style)?;

    // Room for the y tick labels: the widest label plus the tick and the axis title.
    let font = (FONT, LABEL_SIZE).into_font();
    let mut widest = 0;
    for (_, t) in &s.y.ticks {
        widest = widest.max(font.box_size(t).map_err(draw_err("tick labels"))?.0);
    }
    let y_area = (widest + 42).max(LEGEND_INSET - 10);
    let mut chart = ChartBuilder::on(&body)
        .margin_right(24)
        .margin_bottom(6)
        .margin_left(10)
        .x_label_area_size(46)
        .y_label_area_size(y_area)
        .build_cartesian_2d(x.clone(), s.y.clone())
        .map_err(draw_err("axes"))?;
    let x_label = |v: &f64| label_of(&x.ticks, *v);
    let y_label = |v: &f64| label_of(&s.y.ticks, *v);
    chart
        .configure_mesh()
        .bold_line_style(GRID.stroke_width(1))
        .axis_style(AXIS.stroke_width(1))
        .label_style(label_style.clone())
        .axis_desc_style(desc_style)
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .set_all_tick_mark_size(5)
        .draw()
        .map_err(draw_err("axes"))?;
    let plot = chart.plotting_area();
    for c in &s.curves {
        // Runs of consecutive finite values; a gap breaks the line.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![vec![]];
        for &(e, v) in &c.points {
            match v {
                Some(v) => runs.last_mut().expect("a run").push((e, v)),
                None if !runs.last().expect("a run").is_empty() => runs.push(vec![]),
                None => {}
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            if run.len() > 1 {
                draw_line(plot, run.clone(), c.colour, c.dash)?;
            }
            if run.len() == 1 || marked {
                for &p in run {
                    plot.draw(&Circle::new(p, 3, c.colour.filled()))
                        .map_err(draw_err("markers"))?;
                }
            }
        }
    }
    if x.ticks.is_empty() {
        // An empty history (the only x axis without ticks).
        let (w, h) = plot.dim_in_pixel();
        plot.strip_coord_spec()
            .draw(&Text::new(
                "no epochs yet",
                (w as i32 / 2 - 45, h as i32 / 2 - 8),
                (FONT, DESC_SIZE).into_font().color(&NOTE),
            ))
            .map_err(draw_err("note"))?;
    }
    Ok(())
}

/// The label of the tick at `v` (ticks are the only values plotters asks for).
fn label_of(ticks: &[(f64, String)], v: f64) -> String {
    ticks
        .iter()
        .find(|t| t.0 == v)
        .map_or_else(|| format!("{v}"), |t| t.1.clone())
}

/// The legend rows under the title: a line sample (with a marker if the curves have them) and
/// the text per entry.
fn draw_legend<DB: DrawingBackend>(
    head: &DrawingArea<DB, Shift>,
    entries: &[Entry],
    max_rows: usize,
    marked: bool,
    style: &TextStyle,
) -> Result<(), PlotError> {
    let layout = legend_layout(entries, head.dim_in_pixel().0 as usize)?;
    let shown: usize = layout.iter().take(max_rows).map(Vec::len).sum();
    let hidden = entries.len() - shown;
    let note_style = style.color(&NOTE);
    for (r, row) in layout.iter().take(max_rows).enumerate() {
        let y = 44 + (r * LEGEND_ROW) as i32;
        let mut xpos = LEGEND_INSET as i32;
        let last_row = r + 1 == max_rows.min(layout.len());
        for (i, (w, e)) in row.iter().enumerate() {
            let mid = y + LEGEND_ROW as i32 / 2 - 2;
            match e {
                Entry::Curve {
                    label,
                    colour,
                    dash,
                } => {
                    let sample = vec![(xpos, mid), (xpos + SAMPLE_W as i32, mid)];
                    draw_line(head, sample, *colour, *dash)?;
                    if marked {
                        head.draw(&Circle::new(
                            (xpos + SAMPLE_W as i32 / 2, mid),
                            3,
                            colour.filled(),
                        ))
                        .map_err(draw_err("legend"))?;
                    }
                    head.draw(&Text::new(
                        label.clone(),
                        (xpos + SAMPLE_W as i32 + 6, y + 2),
                        style.clone(),
                    ))
                    .map_err(draw_err("legend"))?;
                }
                Entry::Note(s) => {
                    head.draw(&Text::new(s.clone(), (xpos, y + 2), note_style.clone()))
                        .map_err(draw_err("legend"))?;
                }
            }
            xpos += *w as i32;
            if hidden > 0 && last_row && i + 1 == row.len() {
                head.draw(&Text::new(
                    format!("+{hidden} more"),
                    (xpos, y + 2),
                    note_style.clone(),
                ))
                .map_err(draw_err("legend"))?;
            }
        }
    }
    Ok(())
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

    /// A made-up run: falling losses, three classes learning at different speeds, class 2
    /// absent from validation every 7th epoch.
    fn run(epochs: usize) -> Vec<EpochLog> {
        (0..epochs)
            .map(|e| {
                let t = e as f64;
                let rise = |tau: f64, top: f64| top * (1.0 - (-t / tau).exp());
                let c2 = if e % 7 == 3 {
                    f64::NAN
                } else {
                    rise(15.0, 0.7)
                };
                let mut l = log(e, 1.2 * (-t / 12.0).exp() + 0.2, vec![rise(8.0, 0.9), c2]);
                l.val_dice.push(rise(25.0, 0.5));
                l
            })
            .collect()
    }

    fn decode(path: &Path) -> Rgb {
        let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
        let mut r = png::Decoder::new(file).read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        Rgb {
            width: info.width as usize,
            height: info.height as usize,
            data: buf,
        }
    }

    /// Pixels of exactly `c` in columns `x0..x1` and rows `y0..y1`.
    fn count(img: &Rgb, c: [u8; 3], (x0, x1): (usize, usize), (y0, y1): (usize, usize)) -> usize {
        (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let i = 3 * (y * img.width + x);
                img.data[i..i + 3] == c
            })
            .count()
    }

    /// Pixels darker than 100 in every channel (text) in the given rectangle.
    fn dark(img: &Rgb, (x0, x1): (usize, usize), (y0, y1): (usize, usize)) -> usize {
        (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let i = 3 * (y * img.width + x);
                img.data[i..i + 3].iter().all(|&v| v < 100)
            })
            .count()
    }

    #[test]
    fn the_png_decodes_with_both_panels_in_their_colours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("training.png");
        write_training_png(&run(25), &path).unwrap();
        let img = decode(&path);
        assert_eq!((img.width, img.height), (WIDTH, HEIGHT));
        let (left, right, all) = ((0, WIDTH / 2), (WIDTH / 2, WIDTH), (0, HEIGHT));
        // Loss curves on the left only, Dice curves on the right only; each drawn with many
        // pixels (a line across the panel, markers, the legend sample).
        for c in [TRAIN_COLOUR, VAL_COLOUR] {
            assert!(count(&img, c, left, all) > 500, "{c:?}");
            assert_eq!(count(&img, c, right, all), 0, "{c:?}");
        }
        for class in 1..=3 {
            let c = label_colour(class);
            assert!(count(&img, c, right, all) > 500, "class {class}");
            assert_eq!(count(&img, c, left, all), 0, "class {class}");
        }
        // No fourth class is drawn.
        assert_eq!(count(&img, label_colour(4), (0, WIDTH), all), 0);
        // Text: the panel titles (top 40 rows), the tick labels and axis titles (bottom rows).
        for panel in [left, right] {
            assert!(dark(&img, panel, (0, 40)) > 50, "title in {panel:?}");
            assert!(
                dark(&img, panel, (HEIGHT - 50, HEIGHT)) > 50,
                "x axis in {panel:?}"
            );
        }
    }

    #[test]
    fn text_is_anti_aliased_glyphs_not_blocks() {
        // A real font rasterised with coverage: the title area holds many grey levels, not just
        // the text colour and white as a bitmap font would.
        let img = render(&run(3)).unwrap();
        let mut levels = std::collections::BTreeSet::new();
        for y in 0..40 {
            for x in 0..WIDTH / 2 {
                let i = 3 * (y * img.width + x);
                levels.insert(img.data[i]);
            }
        }
        assert!(levels.len() > 20, "{} grey levels", levels.len());
    }

    #[test]
    fn a_nan_epoch_leaves_a_gap_and_isolated_points_keep_their_marker() {
        // Class 1 is known at the first and the last epoch only: two markers, no line between.
        let mut h: Vec<EpochLog> = (0..=10).map(|e| log(e, 1.0, vec![f64::NAN])).collect();
        h[0].val_dice[0] = 0.5;
        h[10].val_dice[0] = 0.5;
        let gap = render(&h).unwrap();
        // The same with every epoch known: a line across the panel.
        let full: Vec<EpochLog> = (0..=10).map(|e| log(e, 1.0, vec![0.5])).collect();
        let full = render(&full).unwrap();
        let right = (WIDTH / 2, WIDTH);
        // Below the legend rows, so the legend sample is not counted.
        let plot = (70, HEIGHT);
        let c = label_colour(1);
        let (g, f) = (count(&gap, c, right, plot), count(&full, c, right, plot));
        assert!(g > 20, "the two markers: {g} pixels");
        assert!(f > 3 * g, "a line has {f} pixels, two markers {g}");
    }

    #[test]
    fn odd_histories_draw_without_error() {
        let huge = vec![
            log(0, 1e200, vec![0.1]),
            log(1, 3e250, vec![0.2]),
            log(2, 1e299, vec![0.3]),
        ];
        let extremes = vec![
            log(0, f64::MAX, vec![]),
            log(1, -f64::MAX, vec![]),
            log(2, 1.0, vec![]),
        ];
        let non_finite = vec![
            log(0, f64::NAN, vec![f64::NAN, f64::INFINITY]),
            log(1, f64::INFINITY, vec![0.5, f64::NEG_INFINITY]),
        ];
        let tiny = vec![log(0, 1e-12, vec![0.0]), log(1, 3e-12, vec![1.0])];
        let negative = vec![
            log(0, -5.0, vec![-0.5, 1e300]),
            log(1, -7.0, vec![1.5, -1e300]),
            log(2, -6.0, vec![0.5, 0.5]),
        ];
        let late_start = vec![log(1000, 0.5, vec![0.4]), log(1001, 0.4, vec![0.5])];
        let cases: Vec<(&str, Vec<EpochLog>)> = vec![
            ("empty", vec![]),
            ("one epoch", vec![log(0, 1.0, vec![0.5])]),
            ("constant", vec![log(0, 1.0, vec![]), log(1, 1.0, vec![])]),
            ("huge", huge),
            ("extremes", extremes),
            ("non-finite", non_finite),
            ("tiny", tiny),
            ("negative and out of 0-1", negative),
            ("late start", late_start),
            ("many epochs", run(2000)),
        ];
        for (name, h) in cases {
            let img = render(&h).unwrap_or_else(|e| panic!("{name}: {e}"));
            // A legend note may take a second row.
            assert_eq!(img.width, WIDTH, "{name}");
            assert!(
                [HEIGHT, HEIGHT + LEGEND_ROW].contains(&img.height),
                "{name}"
            );
            assert_eq!(img.data.len(), WIDTH * img.height * 3, "{name}");
        }
    }

    #[test]
    fn only_an_empty_history_says_no_epochs() {
        // The note's grey text sits in the middle of each plot, where otherwise only the light
        // grid lines are (one epoch and no classes: the Dice panel has no curve either).
        let note = |img: &Rgb, (x0, x1): (usize, usize)| -> usize {
            let mid = (x0 + x1) / 2;
            (HEIGHT / 2 - 30..HEIGHT / 2 + 30)
                .flat_map(|y| (mid - 80..mid + 80).map(move |x| (x, y)))
                .filter(|&(x, y)| {
                    let i = 3 * (y * img.width + x);
                    img.data[i..i + 3].iter().all(|&v| v < 200)
                })
                .count()
        };
        let empty = render(&[]).unwrap();
        let one = render(&[log(0, 1.0, vec![])]).unwrap();
        let right = (WIDTH / 2, WIDTH);
        assert!(note(&empty, right) > 30, "{}", note(&empty, right));
        assert_eq!(note(&one, right), 0);
    }

    #[test]
    fn many_classes_grow_the_legend_within_its_limit() {
        let h = |classes: usize| -> Vec<EpochLog> {
            (0..5)
                .map(|e| {
                    log(
                        e,
                        1.0,
                        (0..classes).map(|c| (c + e) as f64 / 200.0).collect(),
                    )
                })
                .collect()
        };
        let some = render(&h(15)).unwrap();
        assert!(some.height > HEIGHT, "15 classes need a second legend row");
        // Classes 13+ reuse the preview's colours (dashed), so colour 1 appears in the panel.
        assert!(
            count(
                &some,
                label_colour(13),
                (WIDTH / 2, WIDTH),
                (0, some.height)
            ) > 0
        );
        let lots = render(&h(500)).unwrap();
        assert_eq!(lots.height, HEIGHT + (MAX_LEGEND_ROWS - 1) * LEGEND_ROW);
        let series = dice_series(&h(500));
        assert!(legend_layout(&series.legend, WIDTH / 2).unwrap().len() > MAX_LEGEND_ROWS);
    }

    #[test]
    fn the_legend_names_curves_and_counts_what_was_left_out() {
        let h = vec![
            log(0, f64::NAN, vec![f64::NAN, 0.3]),
            log(1, 0.5, vec![f64::NAN, 0.4]),
            log(2, f64::INFINITY, vec![f64::NAN, 0.5]),
        ];
        let text = |s: &Series| -> Vec<String> {
            s.legend
                .iter()
                .map(|e| match e {
                    Entry::Curve { label, .. } => label.clone(),
                    Entry::Note(n) => n.clone(),
                })
                .collect()
        };
        // Two epochs lose both losses (val_loss = train_loss + 0.1 is NaN or infinite too).
        assert_eq!(
            text(&loss_series(&h)),
            [
                "training",
                "validation",
                "4 values not drawn (NaN, ±inf, |v| > 1e300)"
            ]
        );
        assert_eq!(text(&dice_series(&h)), ["class 1 (no data)", "class 2"]);
        let odd = [
            log(0, 1.0, vec![1.5, f64::INFINITY]),
            log(1, 1.0, vec![-0.1, 0.5]),
        ];
        assert_eq!(
            text(&dice_series(&odd)),
            [
                "class 1 (no data)",
                "class 2",
                "3 values outside 0–1 not drawn"
            ]
        );
        assert_eq!(
            text(&dice_series(&[log(0, 1.0, vec![])])),
            ["no foreground classes yet"]
        );
    }

    #[test]
    fn ticks_are_round_numbers_with_matching_labels() {
        let labels = |lo: f64, hi: f64| -> Vec<String> {
            fitted_axis(lo, hi).ticks.into_iter().map(|t| t.1).collect()
        };
        assert_eq!(
            labels(0.2, 1.5),
            ["0.25", "0.50", "0.75", "1.00", "1.25", "1.50"]
        );
        assert_eq!(labels(0.0, 10.0), ["0", "2", "4", "6", "8", "10"]);
        assert_eq!(labels(1e6, 2e6)[0], "1.0e6");
        assert_eq!(labels(1e-5, 2e-5)[1], "1.2e-5");
        // Every tick inside the axis range, a handful of them.
        for (lo, hi) in [(0.3, 0.31), (-2.0, 7.0), (1e200, 1e299), (-1e300, 1e300)] {
            let a = fitted_axis(lo, hi);
            assert!(a.lo <= lo && a.hi >= hi && a.lo < a.hi, "{lo} {hi}");
            assert!(
                (2..=12).contains(&a.ticks.len()),
                "{lo} {hi}: {:?}",
                a.ticks
            );
            assert!(a.ticks.iter().all(|t| a.lo <= t.0 && t.0 <= a.hi));
        }
        // Epoch ticks are whole numbers.
        let e = epoch_axis(&(0..37).map(|e| log(e, 1.0, vec![])).collect::<Vec<_>>());
        let want: Vec<String> = (0..=35).step_by(5).map(|v: usize| v.to_string()).collect();
        assert_eq!(
            e.ticks.iter().map(|t| t.1.clone()).collect::<Vec<_>>(),
            want
        );
    }

    #[test]
    fn a_failed_write_says_where_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("training.png");
        let err = write_training_png(&run(3), &path).unwrap_err();
        assert!(matches!(err, PlotError::Write(_)), "{err:?}");
        assert!(err.to_string().contains("missing"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // An existing picture is replaced whole.
        let path = dir.path().join("training.png");
        write_training_png(&[], &path).unwrap();
        write_training_png(&run(4), &path).unwrap();
        assert_eq!(decode(&path).width, WIDTH);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
