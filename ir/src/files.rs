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

/// Bytes of memory this machine can still give a process (`MemAvailable` of /proc/meminfo),
/// when known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

static TEMP_COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The temporary path an e2enc writer fills before renaming it onto `target`:
/// `.NAME.e2enc-PID-N.tmp` next to it (hidden, same file system, unique in the process).
/// [`clean_stale_temps`] recognises the pattern.
pub fn temp_path(target: &Path) -> std::path::PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let n = TEMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    target.with_file_name(format!(".{name}.e2enc-{}-{n}.tmp", std::process::id()))
}

/// The process id a temporary of `name` was made by, if `file` is one: `.NAME.e2enc-PID-N.tmp`,
/// or the forms of earlier versions, `.NAME.PID-N.tmp` and `.NAME.tmpPID`.
fn temp_owner(file: &str, name: &str) -> Option<u32> {
    let rest = file
        .strip_prefix('.')?
        .strip_prefix(name)?
        .strip_prefix('.')?;
    if let Some(pid) = rest.strip_prefix("tmp") {
        return pid.parse().ok();
    }
    let rest = rest.strip_suffix(".tmp")?;
    let rest = rest.strip_prefix("e2enc-").unwrap_or(rest);
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Removes the temporaries of `target` (files or folders, see [`temp_path`]) whose process is no
/// longer running: what a kill, a crash or a full disk left behind. Those of running processes
/// (this one included) are kept. Best effort: errors are ignored. Does nothing where processes
/// cannot be checked (no `/proc`).
pub fn clean_stale_temps(target: &Path) {
    let Some(name) = target.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_owner(&file, &name) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let p = e.path();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir_all(&p);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&p);
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temps_of_dead_processes_are_removed_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let target = d.join("seg.nii.gz");
        // A pid that is not running: above the kernel's pid_max default range is not
        // guaranteed, so find a free one.
        let dead = (400_000u32..4_000_000)
            .find(|p| !Path::new(&format!("/proc/{p}")).exists())
            .unwrap();
        let me = std::process::id();
        let names = [
            format!(".seg.nii.gz.e2enc-{dead}-0.tmp"),
            format!(".seg.nii.gz.{dead}-3.tmp"),
            format!(".seg.nii.gz.tmp{dead}"),
            format!(".seg.nii.gz.e2enc-{me}-1.tmp"),
            format!(".other.nii.gz.e2enc-{dead}-0.tmp"),
            "seg.nii.gz".to_string(),
        ];
        for n in &names {
            std::fs::write(d.join(n), b"x").unwrap();
        }
        std::fs::create_dir(d.join(format!(".seg.nii.gz.tmp{}", dead))).ok();
        clean_stale_temps(&target);
        let left: std::collections::BTreeSet<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let want: std::collections::BTreeSet<String> = [
            format!(".seg.nii.gz.e2enc-{me}-1.tmp"),
            format!(".other.nii.gz.e2enc-{dead}-0.tmp"),
            "seg.nii.gz".to_string(),
        ]
        .into();
        assert_eq!(left, want);
        let p = temp_path(&target);
        assert_eq!(
            temp_owner(&p.file_name().unwrap().to_string_lossy(), "seg.nii.gz"),
            Some(me)
        );
    }
}
