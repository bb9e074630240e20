"""Fixtures: the e2enc command line (to make a model and to compare against), a tiny model
compiled once with e2enc.compile, and a synthetic NIfTI volume.

The CLI is $E2ENC_CLI, else the repository's target/debug or target/release e2enc, else e2enc on
PATH; without one the tests are skipped, unless E2ENC_REQUIRE_CLI=1 (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

# Signing keys of this test session stay out of the user's ~/.config/e2enc.
os.environ.setdefault("E2ENC_HOME", tempfile.mkdtemp(prefix="e2enc-pytest-home-"))


def find_cli() -> str | None:
    env = os.environ.get("E2ENC_CLI")
    if env:
        return env
    for p in (REPO / "target" / "debug" / "e2enc", REPO / "target" / "release" / "e2enc"):
        if p.is_file():
            return str(p)
    return shutil.which("e2enc")


@pytest.fixture(scope="session")
def cli():
    """Runs the e2enc binary: cli(*args) -> CompletedProcess (text)."""
    exe = find_cli()
    if exe is None:
        if os.environ.get("E2ENC_REQUIRE_CLI") == "1":
            pytest.fail("no e2enc binary (set E2ENC_CLI or run cargo build)")
        pytest.skip("no e2enc binary (set E2ENC_CLI or run cargo build)")

    def run(*args: object, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([exe, *map(str, args)], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"e2enc {args} failed:\n{r.stderr}")
        return r

    return run


@pytest.fixture(scope="session")
def model_dir(cli, tmp_path_factory) -> Path:
    """A tiny 1-channel, 2-class model (patch 32^3) with a preprocessing section (1.5 mm)."""
    m = tmp_path_factory.mktemp("model")
    cli("init", "-o", m, "--preset", "tiny", "--patch", "32", "--max-width", "16", "--force")
    path = m / "model.json"
    cfg = json.loads(path.read_text())
    cfg["preprocessing"] = {
        "axis_order": [2, 1, 0],
        "target_spacing": [1.5, 1.5, 1.5],
        "normalization": [{"scheme": "z_score", "use_nonzero_mask": False}],
    }
    path.write_text(json.dumps(cfg))
    return m


@pytest.fixture(scope="session")
def bundle_dir(model_dir, tmp_path_factory) -> Path:
    """The tiny model compiled by e2enc.compile (batch 2, to exercise batched tiles)."""
    import e2enc

    out = tmp_path_factory.mktemp("b") / "bundle"
    info = e2enc.compile(model_dir / "model.json", out, batch=2)
    assert Path(info["path"]) == out and info["kernels"] > 0
    return out


@pytest.fixture(scope="session")
def bundle(bundle_dir):
    import e2enc

    return e2enc.Bundle(bundle_dir)


def ball(dims=(40, 36, 24), seed=0) -> np.ndarray:
    """A bright ball in a noisy background, (x, y, z) float32."""
    x, y, z = np.meshgrid(*[np.arange(n) for n in dims], indexing="ij")
    r2 = (x - 20.0) ** 2 + (y - 18.0) ** 2 + (z - 12.0) ** 2
    noise = ((x * 31 + y * 17 + z * 7 + seed * 13) % 23).astype(np.float32)
    return (np.where(r2 < 64.0, 200.0, 20.0) + noise).astype(np.float32)


@pytest.fixture(scope="session")
def nifti_case(tmp_path_factory):
    """A NIfTI file (rotated, shifted affine, 1.2 mm voxels) and its nibabel image."""
    nib = pytest.importorskip("nibabel")
    d = tmp_path_factory.mktemp("case")
    affine = np.array(
        [[0.0, -1.2, 0.0, 30.0], [1.2, 0.0, 0.0, -12.5], [0.0, 0.0, 1.2, 7.0], [0, 0, 0, 1]]
    )
    img = nib.Nifti1Image(ball(), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    path = d / "ball.nii.gz"
    nib.save(img, path)
    return path, nib.load(path)


def write_safetensors(path: Path, tensors: dict) -> None:
    """Writes float32 tensors in the safetensors format."""
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def read_safetensors(path: Path) -> dict:
    """Reads the float32 tensors of a safetensors file."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        assert t["dtype"] == "F32", t
        out[name] = np.frombuffer(raw[8 + n + a : 8 + n + b], "<f4").reshape(t["shape"])
    return out
