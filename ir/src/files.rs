//! Reading input files with bounds: only regular files (a FIFO would block, `/dev/zero` never
//! ends), and no more than a stated number of bytes, checked from the file's size before any is
//! read. Every e2enc reader of model.json, IR text, safetensors and JSON state goes through here.

use std::io::{self, Read};
use std::path::Path;

use crate::error::IrError;

/// Most bytes of a JSON or text file (model.json, IR text, dataset and state files): 64 MiB.
pub const MAX_TEXT_BYTES: u64 = 64 << 20;

/// Most bytes of a safetensors file (weights, optimizer state): 16 GiB, four times the largest
/// network `e2enet::build` accepts.
pub const MAX_TENSOR_FILE_BYTES: u64 = 16 << 30;

fn refuse(path: &Path, msg: String) -> IrError {
    IrError::io(path, io::Error::new(io::ErrorKind::InvalidInput, msg))
}

/// What kind of non-regular file `m` is, `None` for a regular one.
pub fn non_regular_kind(m: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a folder")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_char_device() || t.is_block_device() {
        Some("a device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// The bytes of the regular file `path`, refusing anything else and files over `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, IrError> {
    // Checked before opening: opening a FIFO blocks until a writer comes.
    let meta = std::fs::metadata(path).map_err(|e| IrError::io(path, e))?;
    if let Some(kind) = non_regular_kind(&meta) {
        return Err(refuse(path, format!("is {kind}, not a regular file")));
    }
    let file = std::fs::File::open(path).map_err(|e| IrError::io(path, e))?;
    let len = file.metadata().map_err(|e| IrError::io(path, e))?.len();
    if len > limit {
        return Err(refuse(
            path,
            format!("is {len} bytes, more than the limit of {limit} for this kind of file"),
        ));
    }
    let mut out = Vec::with_capacity(len as usize);
    file.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| IrError::io(path, e))?;
    if out.len() as u64 > limit {
        return Err(refuse(
            path,
            format!("grew past the limit of {limit} bytes while read"),
        ));
    }
    Ok(out)
}

/// [`read_bounded`] with [`MAX_TEXT_BYTES`], as UTF-8 text.
pub fn read_text(path: &Path) -> Result<String, IrError> {
    let bytes = read_bounded(path, MAX_TEXT_BYTES)?;
    String::from_utf8(bytes).map_err(|e| refuse(path, format!("is not UTF-8 text: {e}")))
}
