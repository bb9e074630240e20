#!/usr/bin/env bash
# Fetches NCCL (NVIDIA's collectives library: the gradients' all-reduce of GPU ranks in
# `mpirun -n N e2enc train --device cuda ...`) from the PyPI wheel nvidia-nccl-cu12 (pinned below).
# No CUDA toolkit, driver or GPU is needed to fetch it or to load it (the tests load it and make
# a communicator id here); only its library is kept, libnccl.so.2 (about 470 MB).
# Destination: $E2ENC_NCCL_DIR, default ~/.cache/e2enc/nccl (where e2enc looks when E2ENC_NCCL is
# unset, before Python environments and the system). Idempotent: quiet apart from one line when
# the library is present. Needs python3 with pip; set PYTHON to pick an interpreter.
# A Python environment with `pip install nvidia-nccl-cu12` (or PyTorch from PyPI) needs none of
# this: e2enc finds nvidia/nccl/lib/libnccl.so.2 in its site-packages.
set -euo pipefail

version="2.32.3"
dest="${E2ENC_NCCL_DIR:-$HOME/.cache/e2enc/nccl}"
stamp="$dest/.fetched-nvidia-nccl-cu12-$version"
if [[ -f "$stamp" && -e "$dest/libnccl.so.2" ]]; then
    echo "fetch-nccl: $dest already present"
    exit 0
fi

py="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "fetch-nccl: downloading nvidia-nccl-cu12==$version"
"$py" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" \
    "nvidia-nccl-cu12==$version"

mkdir -p "$dest"
"$py" "$(dirname "$0")/wheel-extract.py" "$tmp" "$dest" nvidia/nccl/lib/libnccl.so.2
touch "$stamp"
echo "fetch-nccl: NCCL $version in $dest"
if [[ "$(cd "$dest" && pwd -P)" != "$(cd "$HOME/.cache/e2enc/nccl" 2>/dev/null && pwd -P)" ]]; then
    echo "fetch-nccl: not the default folder; for e2enc to find it: export E2ENC_NCCL=$(cd "$dest" && pwd -P)"
fi
