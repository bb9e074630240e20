#!/usr/bin/env bash
# Fetches NVRTC 12.9 (NVIDIA's runtime CUDA compiler) for the CUDA backend's compile step and tests.
#
# NVRTC comes from the PyPI wheel nvidia-cuda-nvrtc-cu12==12.9.86; no CUDA toolkit, driver or GPU
# is needed. Only two libraries are kept (about 109 MB): libnvrtc.so.12 and the
# libnvrtc-builtins.so.12.9 it loads from its own folder; a libnvrtc.so symlink is added because
# cudarc opens NVRTC by that name. The version is pinned: NVRTC 12.9 output loads on drivers
# >= 12.9 (our GPU machine runs 13.0); PTX from NVRTC 13.x would not load there.
# Destination: $E2ENC_NVRTC_DIR, default ~/.cache/e2enc/nvrtc-12.9 (where e2enc-codegen looks when
# E2ENC_NVRTC is unset). Idempotent: quiet apart from one line when the libraries are present.
# Needs python3 with pip; set PYTHON to pick an interpreter.
set -euo pipefail

version="12.9.86"
dest="${E2ENC_NVRTC_DIR:-$HOME/.cache/e2enc/nvrtc-12.9}"
stamp="$dest/.fetched-nvidia-cuda-nvrtc-cu12-$version"
if [[ -f "$stamp" && -e "$dest/libnvrtc.so" && -e "$dest/libnvrtc-builtins.so.12.9" ]]; then
    echo "fetch-nvrtc: $dest already present"
    exit 0
fi

py="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "fetch-nvrtc: downloading nvidia-cuda-nvrtc-cu12==$version"
"$py" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" \
    "nvidia-cuda-nvrtc-cu12==$version"

mkdir -p "$dest"
"$py" "$(dirname "$0")/wheel-extract.py" "$tmp" "$dest" \
    nvidia/cuda_nvrtc/lib/libnvrtc.so.12 nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.9
ln -sfn libnvrtc.so.12 "$dest/libnvrtc.so"
touch "$stamp"
echo "fetch-nvrtc: NVRTC $version in $dest"
if [[ "$(cd "$dest" && pwd -P)" != "$(cd "$HOME/.cache/e2enc/nvrtc-12.9" 2>/dev/null && pwd -P)" ]]; then
    echo "fetch-nvrtc: not the default folder; for e2enc to find it: export E2ENC_NVRTC=$(cd "$dest" && pwd -P)"
fi
