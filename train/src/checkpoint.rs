//! Training checkpoints: one folder that is replaced as a whole, so a crash or Ctrl-C at any
//! moment leaves either the previous checkpoint or the new one, never a mixture.
//!
//! A checkpoint is `OUT/checkpoint/` holding `model.json` (the config, naming `weights.safetensors`
//! and `masks.safetensors`, with the preprocessing plan), the weights, the DSFF masks, the
//! optimizer state (`optimizer.safetensors`) and `state.json` (epoch, iteration, RNG state, the
//! history, the training options). It is also a model: `e2enc compile OUT/checkpoint/model.json`
//! works on it directly.
//!
//! Writing: every file goes into `OUT/checkpoint.new/` (fsynced), then `checkpoint` is renamed to
//! `checkpoint.old`, `checkpoint.new` to `checkpoint`, and `checkpoint.old` is removed. Reading
//! takes `checkpoint`, or `checkpoint.old` when a crash hit between the two renames.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::TrainError;

/// Name of the checkpoint folder inside the output folder.
pub const DIR: &str = "checkpoint";

fn io_err(path: &Path, source: std::io::Error) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `files` (name, bytes) as the checkpoint of `out`, replacing the previous one.
pub fn write(out: &Path, files: &[(&str, Vec<u8>)]) -> Result<PathBuf, TrainError> {
    fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
    let new = out.join(format!("{DIR}.new"));
    let cur = out.join(DIR);
    let old = out.join(format!("{DIR}.old"));
    if new.exists() {
        fs::remove_dir_all(&new).map_err(|e| io_err(&new, e))?;
    }
    fs::create_dir(&new).map_err(|e| io_err(&new, e))?;
    for (name, bytes) in files {
        if name.contains('/') || name.contains("..") {
            return Err(TrainError::Checkpoint(format!(
                "checkpoint file name `{name}` must be a plain name"
            )));
        }
        let p = new.join(name);
        let mut f = fs::File::create(&p).map_err(|e| io_err(&p, e))?;
        f.write_all(bytes).map_err(|e| io_err(&p, e))?;
        f.sync_all().map_err(|e| io_err(&p, e))?;
    }
    if let Ok(d) = fs::File::open(&new) {
        let _ = d.sync_all();
    }
    if cur.exists() {
        if old.exists() {
            fs::remove_dir_all(&old).map_err(|e| io_err(&old, e))?;
        }
        fs::rename(&cur, &old).map_err(|e| io_err(&cur, e))?;
    }
    fs::rename(&new, &cur).map_err(|e| io_err(&new, e))?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| io_err(&old, e))?;
    }
    if let Ok(d) = fs::File::open(out) {
        let _ = d.sync_all();
    }
    Ok(cur)
}

/// Removes what an interrupted [`write()`] left in `out`: `checkpoint.new` (never complete until
/// renamed) and `checkpoint.old` when `checkpoint` is there (the old one was due for removal).
/// Called when a run starts or resumes.
pub fn clean_partial(out: &Path) -> Result<(), TrainError> {
    let new = out.join(format!("{DIR}.new"));
    if new.exists() {
        fs::remove_dir_all(&new).map_err(|e| io_err(&new, e))?;
    }
    let old = out.join(format!("{DIR}.old"));
    if old.exists() && out.join(DIR).join("state.json").is_file() {
        fs::remove_dir_all(&old).map_err(|e| io_err(&old, e))?;
    }
    Ok(())
}

/// The folder of the newest complete checkpoint of `out`, if any.
pub fn find(out: &Path) -> Option<PathBuf> {
    let cur = out.join(DIR);
    let old = out.join(format!("{DIR}.old"));
    if cur.join("state.json").is_file() {
        Some(cur)
    } else if old.join("state.json").is_file() {
        Some(old)
    } else {
        None
    }
}

#[cfg(test)]
mod partial_tests {
    use super::*;

    #[test]
    fn partial_checkpoints_are_cleaned_complete_ones_kept() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path();
        write(out, &[("state.json", b"1".to_vec())]).unwrap();
        fs::create_dir(out.join("checkpoint.new")).unwrap();
        fs::write(out.join("checkpoint.new/state.json"), b"half").unwrap();
        fs::create_dir(out.join("checkpoint.old")).unwrap();
        clean_partial(out).unwrap();
        assert!(!out.join("checkpoint.new").exists());
        assert!(!out.join("checkpoint.old").exists());
        assert_eq!(fs::read(out.join("checkpoint/state.json")).unwrap(), b"1");
        // Between the two renames only checkpoint.old holds the run: it stays.
        fs::rename(out.join("checkpoint"), out.join("checkpoint.old")).unwrap();
        clean_partial(out).unwrap();
        assert_eq!(find(out).unwrap(), out.join("checkpoint.old"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_whole_folder() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            &[("state.json", b"1".to_vec()), ("a", b"x".to_vec())],
        )
        .unwrap();
        let dir = write(t.path(), &[("state.json", b"2".to_vec())]).unwrap();
        assert_eq!(fs::read(dir.join("state.json")).unwrap(), b"2");
        assert!(
            !dir.join("a").exists(),
            "files of the previous checkpoint are gone"
        );
        let names: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![DIR.to_string()]);
        assert_eq!(find(t.path()), Some(dir));
    }

    #[test]
    fn falls_back_to_the_old_folder_after_a_crash_between_renames() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), &[("state.json", b"1".to_vec())]).unwrap();
        fs::rename(t.path().join(DIR), t.path().join("checkpoint.old")).unwrap();
        assert_eq!(find(t.path()), Some(t.path().join("checkpoint.old")));
        assert!(write(t.path(), &[("../x", vec![])]).is_err());
        assert_eq!(find(&t.path().join("nothing")), None);
    }
}
