#!/usr/bin/env bash
# Fetches real NIfTI files for the runtime's NIfTI tests into target/testdata/.
#
# The files come from two PyPI wheels (no download at test time, no extra data host):
#   - nibabel (MIT): nibabel/tests/data/*.nii* (big-endian, 4-D, NaN, NIfTI-2, scaled files)
#   - nilearn (BSD): nilearn/datasets/data/mni_icbm152_*_09a_*.nii.gz (MNI ICBM152 2009a, 197x233x189)
# Versions are pinned: the tests hold values derived from these files with nibabel 5.4.2.
# Idempotent: returns at once when the files are already there (a stamp file records completion).
# Needs python3 with pip; set PYTHON to pick an interpreter. `e2enc demo` runs this script (it is
# embedded in the binary) with E2ENC_DATA_DIR set to its own cache folder.
set -euo pipefail

if [[ -n "${E2ENC_DATA_DIR:-}" ]]; then
    dest="$E2ENC_DATA_DIR"
else
    cd "$(dirname "$0")/.."
    dest="target/testdata"
fi
stamp="$dest/.fetched-nibabel-5.4.2-nilearn-0.14.1"
if [[ -f "$stamp" ]]; then
    echo "fetch-test-data: $dest already present"
    exit 0
fi

py="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "fetch-test-data: downloading the nibabel and nilearn wheels"
"$py" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" nibabel==5.4.2 nilearn==0.14.1

mkdir -p "$dest"
"$py" - "$tmp" "$dest" <<'PY'
import fnmatch, glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
patterns = ["nibabel/tests/data/*.nii", "nibabel/tests/data/*.nii.gz",
            "nilearn/datasets/data/mni_icbm152_*_09a_*.nii.gz"]
n = 0
for whl in sorted(glob.glob(os.path.join(tmp, "*.whl"))):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if any(fnmatch.fnmatchcase(name, p) for p in patterns):
                out = os.path.join(dest, os.path.basename(name))
                part = out + ".part"
                with z.open(name) as src, open(part, "wb") as dst:
                    dst.write(src.read())
                os.replace(part, out)
                n += 1
if n == 0:
    sys.exit("fetch-test-data: no NIfTI files found in the wheels")
print(f"fetch-test-data: extracted {n} files into {dest}")
PY
touch "$stamp"
