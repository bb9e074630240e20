//! The C ABI (`include/e2enc.h`): load a bundle, query its shapes, run it, free it. Errors are
//! returned as non-zero codes with a message copied into the caller's buffer; no Rust panic
//! crosses the boundary.

use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use crate::bundle::{Bundle, LoadOptions};
use crate::exec::Engine;

/// An opaque loaded bundle.
pub struct E2encModel {
    engine: Engine,
}

fn write_err(err: *mut c_char, len: usize, msg: &str) {
    if err.is_null() || len == 0 {
        return;
    }
    let n = msg.len().min(len - 1);
    // SAFETY: the caller provides `len` writable bytes at `err`.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), err as *mut u8, n);
        *err.add(n) = 0;
    }
}

/// Loads and verifies the bundle folder `dir` to run on `threads` threads (0: all cores).
/// Returns NULL on error, with the message in `err` (at most `err_len` bytes, NUL-terminated).
/// The signature is checked as by the command line with its default options (see
/// [`crate::sign`]): trusted are the local key of `$E2ENC_HOME` (else `$XDG_CONFIG_HOME/e2enc`,
/// else `~/.config/e2enc`) and the keys in `$E2ENC_TRUSTED_KEYS` (else that folder's
/// `trusted_keys`); `E2ENC_TRUST_UNSIGNED=1` accepts bundles without a trusted signature.
///
/// # Safety
/// `dir` must be a NUL-terminated string; `err` must point to `err_len` writable bytes or be NULL.
#[no_mangle]
pub unsafe extern "C" fn e2enc_load(
    dir: *const c_char,
    threads: c_int,
    err: *mut c_char,
    err_len: usize,
) -> *mut E2encModel {
    let r = catch_unwind(AssertUnwindSafe(|| {
        if dir.is_null() {
            return Err("the bundle path is NULL".to_string());
        }
        // SAFETY: the caller passes a NUL-terminated string.
        let dir = unsafe { CStr::from_ptr(dir) }
            .to_str()
            .map_err(|_| "the bundle path is not UTF-8".to_string())?;
        let b = Bundle::load(Path::new(dir), &LoadOptions::default()).map_err(|e| e.to_string())?;
        Engine::try_new(b, threads.max(0) as usize).map_err(|e| e.to_string())
    }));
    match r {
        Ok(Ok(engine)) => Box::into_raw(Box::new(E2encModel { engine })),
        Ok(Err(m)) => {
            write_err(err, err_len, &m);
            std::ptr::null_mut()
        }
        Err(_) => {
            write_err(err, err_len, "internal error while loading the bundle");
            std::ptr::null_mut()
        }
    }
}

/// [`e2enc_load`] onto `device`: `"cpu"` (as `e2enc_load`), `"cuda"` or `"cuda:N"` (NVIDIA GPU
/// N, for a bundle compiled for a CUDA target, in a runtime built with the `cuda` feature), or
/// `"emulate"` (a CUDA bundle's kernels run on this CPU through the host emulation; slow, for
/// checking). NULL on error with the message in `err`: a CUDA bundle on the CPU, a CPU bundle on
/// a GPU, no GPU or driver, a driver too old, a GPU of an older architecture, too little memory.
///
/// # Safety
/// As [`e2enc_load`]; `device` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn e2enc_load_on(
    dir: *const c_char,
    device: *const c_char,
    threads: c_int,
    err: *mut c_char,
    err_len: usize,
) -> *mut E2encModel {
    let r = catch_unwind(AssertUnwindSafe(|| {
        if dir.is_null() || device.is_null() {
            return Err("the bundle path or the device is NULL".to_string());
        }
        // SAFETY: the caller passes NUL-terminated strings.
        let (dir, device) = unsafe { (CStr::from_ptr(dir), CStr::from_ptr(device)) };
        let dir = dir
            .to_str()
            .map_err(|_| "the bundle path is not UTF-8".to_string())?;
        let device = device.to_str().unwrap_or("?");
        let threads = threads.max(0) as usize;
        let gpu = match device {
            "cpu" | "emulate" => None,
            "cuda" => Some(0),
            d => match d.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Some(n),
                _ => {
                    return Err(format!(
                        "unknown device `{d}`: expected cpu, cuda, cuda:N or emulate"
                    ))
                }
            },
        };
        let opts = LoadOptions {
            emulate: device == "emulate",
            ..LoadOptions::default()
        };
        let b = Bundle::load(Path::new(dir), &opts).map_err(|e| e.to_string())?;
        match gpu {
            Some(n) => Engine::cuda(b, n),
            None => Engine::try_new(b, threads),
        }
        .map_err(|e| e.to_string())
    }));
    match r {
        Ok(Ok(engine)) => Box::into_raw(Box::new(E2encModel { engine })),
        Ok(Err(m)) => {
            write_err(err, err_len, &m);
            std::ptr::null_mut()
        }
        Err(_) => {
            write_err(err, err_len, "internal error while loading the bundle");
            std::ptr::null_mut()
        }
    }
}

/// Writes the shape of input (`output == 0`) or output `index` into `shape[5]`; returns its rank,
/// or -1 if there is no such port.
///
/// # Safety
/// `m` must come from `e2enc_load`; `shape` must point to 5 writable `int64_t`.
#[no_mangle]
pub unsafe extern "C" fn e2enc_shape(
    m: *const E2encModel,
    output: c_int,
    index: c_int,
    shape: *mut i64,
) -> c_int {
    if m.is_null() || shape.is_null() {
        return -1;
    }
    // SAFETY: checked non-null; the caller passes a live model.
    let man = &unsafe { &*m }.engine.bundle.manifest;
    let ports = if output != 0 {
        &man.outputs
    } else {
        &man.inputs
    };
    let Some(p) = usize::try_from(index).ok().and_then(|i| ports.get(i)) else {
        return -1;
    };
    for (k, d) in p.shape.iter().take(5).enumerate() {
        // SAFETY: the caller provides 5 slots.
        unsafe { *shape.add(k) = *d as i64 };
    }
    p.shape.len() as c_int
}

/// Runs the model on `input` (`input_len` floats, the first input's shape, row-major NCDHW) and
/// writes the first output (`logits`) into `output` (`output_len` floats). Returns 0 on success.
///
/// # Safety
/// `m` from `e2enc_load`; `input`/`output` valid for the given lengths; `err` as in `e2enc_load`.
#[no_mangle]
pub unsafe extern "C" fn e2enc_run(
    m: *mut E2encModel,
    input: *const f32,
    input_len: usize,
    output: *mut f32,
    output_len: usize,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    if m.is_null() || input.is_null() || output.is_null() {
        write_err(err, err_len, "NULL argument");
        return 1;
    }
    // SAFETY: checked non-null; exclusive use by contract.
    let model = unsafe { &mut *m };
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        let man = &model.engine.bundle.manifest;
        let ip = man.inputs.first().ok_or("the bundle has no input")?;
        let op = man.outputs.first().ok_or("the bundle has no output")?;
        let n_in: usize = ip.shape.iter().product();
        let n_out: usize = op.shape.iter().product();
        if input_len != n_in {
            return Err(format!(
                "input has {input_len} values, the bundle expects {n_in} ({:?})",
                ip.shape
            ));
        }
        if output_len != n_out {
            return Err(format!(
                "output buffer has {output_len} values, the bundle writes {n_out} ({:?})",
                op.shape
            ));
        }
        // SAFETY: the caller provides `input_len` readable floats.
        let data = unsafe { std::slice::from_raw_parts(input, input_len) };
        let (iname, oname) = (ip.name.clone(), op.name.clone());
        model
            .engine
            .set_input(&iname, data)
            .map_err(|e| e.to_string())?;
        model.engine.execute().map_err(|e| e.to_string())?;
        // SAFETY: the caller provides `output_len` writable floats.
        let dst = unsafe { std::slice::from_raw_parts_mut(output, output_len) };
        let y = model.engine.output(&oname).map_err(|e| e.to_string())?;
        y.copy_to(dst).map_err(|e| e.to_string())
    }));
    match r {
        Ok(Ok(())) => 0,
        Ok(Err(msg)) => {
            write_err(err, err_len, &msg);
            1
        }
        Err(_) => {
            write_err(err, err_len, "internal error while running the bundle");
            2
        }
    }
}

/// Frees a model from `e2enc_load` (NULL is ignored).
///
/// # Safety
/// `m` must come from `e2enc_load` and not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn e2enc_free(m: *mut E2encModel) {
    if !m.is_null() {
        // SAFETY: created by Box::into_raw in e2enc_load.
        drop(unsafe { Box::from_raw(m) });
    }
}
