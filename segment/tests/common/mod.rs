//! Real NIfTI files for the tests (nibabel's test data and nilearn's MNI templates), fetched
//! through the package registry by `scripts/fetch-test-data.sh` into `target/testdata`.

use std::path::{Path, PathBuf};
use std::sync::Once;

static FETCH: Once = Once::new();

/// Path of one fetched file; runs the fetch script once per test binary when it is missing.
pub fn testdata(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = root.join("target/testdata").join(name);
    if !p.is_file() {
        FETCH.call_once(|| {
            let status = std::process::Command::new("bash")
                .arg(root.join("scripts/fetch-test-data.sh"))
                .status();
            if let Err(e) = status {
                eprintln!("could not run scripts/fetch-test-data.sh: {e}");
            }
        });
    }
    assert!(
        p.is_file(),
        "{} is missing and scripts/fetch-test-data.sh did not provide it (it needs python3 with pip \
         and access to the package registry; it extracts the nibabel and nilearn wheels' NIfTI files \
         into target/testdata)",
        p.display()
    );
    p
}
