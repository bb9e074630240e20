//! Calibration of `--precision int8` bundles: the value ranges each conv reads, measured on real
//! cases.
//!
//! An f32 bundle of the same optimized graph, planned so that every conv's input is whole in the
//! arena when the conv starts (`CompileOptions::observe`: no lagged convs, no streamed
//! upsamplings), runs tiles of the cases as `e2enc segment` cuts them (the model's
//! preprocessing, the sliding window's tiles and padding); before each conv's first step the [`Calibrator`]
//! adds every value of each of its input channels to that channel's histogram
//! ([`e2enc_codegen::quant::Histogram`]). The ranges are the histograms' percentiles
//! ([`e2enc_codegen::quant`] says which and why); a [`Calibration`] holds them with the graph's
//! digest. Not every tile of a large case is needed: [`calibrate_case`] runs a given number,
//! spread evenly over the window's order.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use e2enc_codegen::compile::{compile, CompileOptions, Probe};
use e2enc_codegen::layout::{View, PAD_LEFT, PAD_ROWS};
use e2enc_codegen::precision::Precision;
use e2enc_codegen::quant::{Calibration, ConvRanges, Histogram, HIGH_PERCENTILE, LOW_PERCENTILE};
use e2enc_ir::e2enet::Model;
use e2enc_runtime::bundle::{Bundle, LoadOptions};
use e2enc_runtime::exec::Engine;
use e2enc_segment::preprocess::preprocess_owned;
use e2enc_segment::window;

use crate::segmenting::{
    channel_files, preprocessing, read_case, scan_cases, CaseVolumes, Net, Prep,
};
use crate::SessionError;

/// Adds stored channel `stored` of `view` in `arena` to `hist`: every row. (Every other row
/// halved the time and ruined the ranges: a 2x2x2 transposed conv's output alternates
/// between two sets of taps from row to row, so even rows miss half its distribution; the
/// released network's int8 logits went from 1.0e-1 to 6.7e-1 from f32.)
fn observe_channel(hist: &mut Histogram, v: &View, stored: usize, arena: &[f32]) {
    let [n, _, d, h, w] = v.shape;
    for nn in 0..n {
        for z in 0..d {
            for y in 0..h {
                let at = v.offset
                    + nn * v.n_stride
                    + stored * v.c_stride
                    + z * v.d_stride
                    + (y + PAD_ROWS) * v.row
                    + PAD_LEFT;
                if let Some(row) = arena.get(at..at + w) {
                    hist.add(row);
                }
            }
        }
    }
}

/// Histograms of the input channels of every probed conv.
pub struct Calibrator {
    probes: Vec<Probe>,
    /// Per probe, per logical input channel.
    hists: Vec<Vec<Histogram>>,
    /// The probes read before each step.
    at_step: HashMap<usize, Vec<usize>>,
    /// Tiles observed.
    tiles: usize,
    /// The input of the last observed run.
    last: Vec<f32>,
}

impl Calibrator {
    pub fn new(probes: Vec<Probe>) -> Calibrator {
        let mut at_step: HashMap<usize, Vec<usize>> = HashMap::new();
        for (k, p) in probes.iter().enumerate() {
            at_step.entry(p.step).or_default().push(k);
        }
        let hists = probes
            .iter()
            .map(|p| vec![Histogram::default(); p.channels.len()])
            .collect();
        Calibrator {
            probes,
            hists,
            at_step,
            tiles: 0,
            last: Vec::new(),
        }
    }

    /// Reads the inputs of the convs whose first step is `step` from `arena` (as it is just
    /// before that step runs), the channels spread over the machine's cores.
    pub fn observe(&mut self, step: usize, arena: &[f32]) {
        let Some(ks) = self.at_step.get(&step) else {
            return;
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        for &k in ks {
            let p = &self.probes[k];
            let hists = &mut self.hists[k];
            let per = p.channels.len().div_ceil(threads).max(1);
            std::thread::scope(|sc| {
                for (chunk, hs) in hists.chunks_mut(per).enumerate() {
                    let chans = &p.channels[chunk * per..];
                    sc.spawn(move || {
                        for (hist, &stored) in hs.iter_mut().zip(chans) {
                            observe_channel(hist, &p.view, stored, arena);
                        }
                    });
                }
            });
        }
    }

    /// Counts one more observed run of `tiles` tiles on `input`.
    pub fn ran(&mut self, input: &[f32], tiles: usize) {
        self.tiles += tiles;
        self.last.clear();
        self.last.extend_from_slice(input);
    }

    /// The input of the last observed run.
    pub fn last_input(&self) -> &[f32] {
        &self.last
    }

    /// Tiles observed so far.
    pub fn tiles(&self) -> usize {
        self.tiles
    }

    /// The calibration of the graph with digest `graph`; `sources` names what ran.
    pub fn finish(self, graph: String, sources: Vec<String>) -> Calibration {
        let convs = self
            .probes
            .iter()
            .zip(&self.hists)
            .map(|(p, hs)| {
                (
                    p.node,
                    ConvRanges {
                        label: p.label.clone(),
                        ranges: hs.iter().map(Histogram::range).collect(),
                    },
                )
            })
            .collect();
        Calibration {
            graph,
            percentiles: [LOW_PERCENTILE, HIGH_PERCENTILE],
            sources,
            convs,
        }
    }
}

/// Runs up to `tiles` tiles of one case (spread evenly over the sliding window's tiles at step
/// 0.5; every tile when the case has no more) through `engine` (the calibration bundle, of
/// shapes `net`), preprocessed as `prep` says and padded as the window pads, observed by `cal`.
/// Returns the tiles run and the window's tile count.
pub fn calibrate_case(
    engine: &mut Engine,
    net: &Net,
    prep: &Prep,
    case: CaseVolumes,
    tiles: usize,
    cal: &mut Calibrator,
) -> Result<(usize, usize), SessionError> {
    if case.channels.len() != net.channels {
        return Err(SessionError::Invalid {
            msg: format!(
                "the network takes {} channel(s) but {} image(s) were given",
                net.channels,
                case.channels.len()
            ),
        });
    }
    let cfg = prep.config(case.spacing, net.channels);
    let pre = preprocess_owned(case.channels, case.shape, case.spacing, &cfg)?;
    let shape = pre.resampled_shape;
    let patch = net.patch;
    let pad = window::padding(shape, patch);
    let padded: [usize; 3] = std::array::from_fn(|a| shape[a] + pad[a].0 + pad[a].1);
    let starts = window::tiles(padded, patch, 0.5);
    let all = starts.len();
    let chosen: Vec<[usize; 3]> = starts
        .iter()
        .enumerate()
        .filter(|(k, _)| all <= tiles || (k + 1) * tiles / all > k * tiles / all)
        .map(|(_, s)| *s)
        .collect();
    let pvox: usize = patch.iter().product();
    let mut x = vec![0f32; net.batch * net.channels * pvox];
    let mut ran = 0;
    for group in chosen.chunks(net.batch) {
        x.fill(0.0);
        for (b, start) in group.iter().enumerate() {
            for (c, data) in pre.data.iter().enumerate() {
                let dst = &mut x[(b * net.channels + c) * pvox..][..pvox];
                copy_tile(data, shape, pad, *start, patch, dst);
            }
        }
        engine.set_input(&net.input, &x)?;
        engine.execute_observed(&mut |step, arena| cal.observe(step, arena))?;
        cal.ran(&x, group.len());
        ran += group.len();
    }
    Ok((ran, all))
}

/// Copies the tile at `start` (padded coordinates) of a volume of `shape` padded by `pad` into
/// `dst` (`patch`, C order); the padding reads as zero.
fn copy_tile(
    data: &[f32],
    shape: [usize; 3],
    pad: [(usize, usize); 3],
    start: [usize; 3],
    patch: [usize; 3],
    dst: &mut [f32],
) {
    for z in 0..patch[0] {
        let Some(iz) = (start[0] + z)
            .checked_sub(pad[0].0)
            .filter(|&v| v < shape[0])
        else {
            continue;
        };
        for y in 0..patch[1] {
            let Some(iy) = (start[1] + y)
                .checked_sub(pad[1].0)
                .filter(|&v| v < shape[1])
            else {
                continue;
            };
            let row = &data[(iz * shape[1] + iy) * shape[2]..][..shape[2]];
            let out = &mut dst[(z * patch[1] + y) * patch[2]..][..patch[2]];
            for (xx, o) in out.iter_mut().enumerate() {
                if let Some(ix) = (start[2] + xx)
                    .checked_sub(pad[2].0)
                    .filter(|&v| v < shape[2])
                {
                    *o = row[ix];
                }
            }
        }
    }
}

/// Where [`calibrate_folder`] gets its values.
pub struct Sources<'a> {
    /// A folder of cases, nnU-Net naming (`CASE_0000.nii.gz`, ...).
    pub dir: &'a Path,
    /// Tiles per case ([`calibrate_case`]).
    pub tiles: usize,
    /// A preprocessing config to use instead of the model's (as `e2enc segment
    /// --preprocessing`).
    pub preprocessing: Option<&'a Path>,
    /// Each image on its own grid with per-image z-score when the model carries no
    /// preprocessing.
    pub spacing_as_is: bool,
}

/// A calibration, and one calibration tile with the f32 logits for it (to check the int8
/// bundle on).
pub struct Calibrated {
    pub calibration: Calibration,
    pub check: Check,
}

/// One input and the f32 calibration bundle's logits for it.
pub struct Check {
    pub input: Vec<f32>,
    pub logits: Vec<f32>,
}

/// Compiles an f32 bundle of `model` (with `opts`' target, compiler and optimizer options)
/// planned for observation into a temporary folder, runs tiles of every case of `src.dir`
/// through it and returns the measured ranges. `log` gets a line per step.
pub fn calibrate_folder(
    model: &Model,
    opts: &CompileOptions,
    src: &Sources,
    log: &mut dyn FnMut(&str),
) -> Result<Calibrated, SessionError> {
    let found = scan_cases(src.dir)?;
    let tmp = tempfile::tempdir().map_err(|e| SessionError::Invalid {
        msg: format!("creating a temporary folder for calibration: {e}"),
    })?;
    let bdir = tmp.path().join("bundle");
    let copts = CompileOptions {
        precision: Some(Precision::F32),
        observe: true,
        calibration: None,
        standalone: false,
        sign: None,
        force: false,
        ..opts.clone()
    };
    log(&format!(
        "calibrating on {} case(s) of {}: compiling an f32 bundle of the same graph",
        found.len(),
        src.dir.display()
    ));
    let r = compile(model, &bdir, &copts)?;
    let b = Bundle::load(&bdir, &LoadOptions::default())?;
    let net = Net::of(&b)?;
    let prep = preprocessing(
        &bdir,
        &b.manifest.model,
        src.preprocessing,
        src.spacing_as_is,
        net.channels,
    )?;
    let mut engine = Engine::try_new(b, 0)?;
    let mut cal = Calibrator::new(r.probes);
    let mut sources = Vec::new();
    let n = found.len();
    let mut check = None;
    let t_all = Instant::now();
    for (k, (name, chans)) in found.into_iter().enumerate() {
        let images = channel_files(&name, chans, net.channels)?;
        let mut vols = read_case(&images, None)?;
        let case = CaseVolumes::take(&mut vols);
        let t0 = Instant::now();
        let (ran, all) = calibrate_case(&mut engine, &net, &prep, case, src.tiles, &mut cal)
            .map_err(|e| SessionError::Invalid {
                msg: format!("calibrating on case {name}: {}", crate::error_text(&e)),
            })?;
        if check.is_none() {
            // The last tile run, and the f32 logits it gave.
            let y = engine.output(&net.output)?;
            let mut logits = vec![0f32; y.shape().iter().product()];
            y.copy_to(&mut logits)?;
            check = Some(Check {
                input: cal.last_input().to_vec(),
                logits,
            });
        }
        log(&format!(
            "[{}/{n}] {name}: {ran} of {all} tiles ({:.1} s)",
            k + 1,
            t0.elapsed().as_secs_f64()
        ));
        sources.push(format!("{name}: {ran} of {all} tiles"));
    }
    log(&format!(
        "calibration: {} tiles in {:.1} s",
        cal.tiles(),
        t_all.elapsed().as_secs_f64()
    ));
    let check = check.ok_or_else(|| SessionError::Invalid {
        msg: format!("{}: no case to calibrate on", src.dir.display()),
    })?;
    Ok(Calibrated {
        calibration: cal.finish(r.graph_digest, sources),
        check,
    })
}
