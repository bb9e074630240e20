//! `e2enc._e2enc`: the Python extension module under the `e2enc` package (`python/e2enc/`). It
//! wraps the library functions the command line uses, so results and error texts are the CLI's:
//! [`bundle`] (a compiled bundle's engine: `Bundle.run` on numpy arrays), [`segment`] (volumes or
//! NIfTI files to label maps through `e2enc::segmenting`) and [`compile`] (model.json to a
//! bundle). Every long call releases the GIL (`Python::detach`) while Rust works.
//!
//! Errors: the library's errors become `e2enc.Error` (a `RuntimeError`) carrying the text the
//! CLI prints after `error: ` (`e2enc::error_text`); a missing file is a `FileNotFoundError`
//! with the same text; wrong array dtypes and shapes are `TypeError` and `ValueError`.

use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError};
use pyo3::prelude::*;

mod bundle;
mod compile;
mod segment;

pyo3::create_exception!(
    e2enc,
    Error,
    PyRuntimeError,
    "An error of e2enc (loading, running, segmenting, compiling): its message is the one the \
     `e2enc` command line prints after `error: `."
);

/// The Python exception for a library error: `e2enc.Error` with the CLI's text, or
/// `FileNotFoundError` (same text) when `missing` names a path that does not exist.
pub(crate) fn to_py(e: &(dyn std::error::Error + 'static), missing: &[&std::path::Path]) -> PyErr {
    let text = e2enc::error_text(e);
    if missing.iter().any(|p| !p.exists()) {
        PyFileNotFoundError::new_err(text)
    } else {
        Error::new_err(text)
    }
}

/// The compiled part of the `e2enc` package; import `e2enc`, not this module.
#[pymodule]
fn _e2enc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Error", m.py().get_type::<Error>())?;
    m.add_class::<bundle::Bundle>()?;
    m.add_function(wrap_pyfunction!(segment::segment_arrays, m)?)?;
    m.add_function(wrap_pyfunction!(segment::segment_files, m)?)?;
    m.add_function(wrap_pyfunction!(compile::compile, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
