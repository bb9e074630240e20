#!/usr/bin/env python3
"""Hostile-input cases against an e2enc binary: each must end in a clean refusal (non-zero exit,
no panic, a message naming the file, field or value) or a correct result, with no crash, hang,
clobbered file or leftover temporary.

    python3 tools/hostile.py [path/to/e2enc]     # default: target/debug/e2enc

Prints one line per case (class, case, exit status, verdict) and a summary. Uses only the
Python standard library; writes NIfTI files itself. Run it against two binaries to compare
(the closing note of 2026-12-03 did: the commit before the hardening and after).
"""
import gzip
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

E2ENC = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/debug/e2enc")
W = tempfile.mkdtemp(prefix="e2enc-hostile-")
env = dict(os.environ, E2ENC_HOME=os.path.join(W, "home"))


def nifti(path, dims=(24, 20, 16), pixdim=(1.5, 1.5, 1.5), srow=None, data=None, gz=None):
    """A little-endian NIfTI-1 float32 file; sform = diag(pixdim) unless `srow` is given."""
    nx, ny, nz = dims
    h = bytearray(348)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, 3, nx, ny, nz, 1, 1, 1, 1)
    struct.pack_into("<hh", h, 70, 16, 32)
    struct.pack_into("<8f", h, 76, 1.0, *pixdim, 1.0, 0, 0, 0)
    struct.pack_into("<f", h, 108, 352.0)
    struct.pack_into("<f", h, 112, 1.0)
    h[123] = 2
    struct.pack_into("<hh", h, 252, 0, 2)
    rows = srow or [
        [pixdim[0], 0, 0, 0],
        [0, pixdim[1], 0, 0],
        [0, 0, pixdim[2], 0],
    ]
    for i, r in enumerate(rows):
        struct.pack_into("<4f", h, 280 + 16 * i, *r)
    h[344:348] = b"n+1\0"
    if data is None:
        data = [
            (200.0 if (x - nx / 2) ** 2 + (y - ny / 2) ** 2 + (z - nz / 2) ** 2 < 30 else 20.0)
            + (x * 31 + y * 17 + z * 7) % 23
            for z in range(nz)
            for y in range(ny)
            for x in range(nx)
        ]
    raw = bytes(h) + b"\0" * 4 + struct.pack("<%df" % len(data), *data)
    if gz if gz is not None else path.endswith(".gz"):
        raw = gzip.compress(raw)
    with open(path, "wb") as f:
        f.write(raw)
    return path


def run(args, timeout=60):
    try:
        p = subprocess.run([E2ENC] + args, capture_output=True, text=True, timeout=timeout,
                           cwd=W, env=env)
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        return None, "timeout"


def digest(path):
    if not os.path.exists(path):
        return None
    if os.path.isdir(path):
        return "dir"
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def leftovers():
    out = []
    for root, dirs, files in os.walk(W):
        for n in dirs + files:
            if n.startswith(".") and ".tmp" in n:
                out.append(os.path.relpath(os.path.join(root, n), W))
    return sorted(out)


results = []


def case(cls, name, args, protect=(), expect="refuse", must_not_exist=(), timeout=60,
         check=None):
    """Runs one case. `protect`: files that must be unchanged; `expect`: "refuse" or "ok"."""
    nifti(os.path.join(W, "img.nii.gz"))  # fresh, whatever an earlier case did to it
    before = {p: digest(p) for p in protect}
    left0 = set(leftovers())
    code, text = run(args, timeout)
    verdict = "ok"
    if code is None:
        verdict = "HANG"
    elif "panicked" in text or code < 0 or code in (101, 134, 139):
        verdict = "CRASH"
    elif any(digest(p) != d for p, d in before.items()):
        verdict = "CLOBBERED"
    elif any(os.path.exists(p) for p in must_not_exist):
        verdict = "PARTIAL OUTPUT"
    elif set(leftovers()) - left0:
        verdict = "LEFTOVER"
    elif expect == "refuse" and code == 0:
        verdict = "WRONG (exit 0)"
    elif expect == "ok" and code != 0:
        verdict = "FAILED"
    elif check is not None and not check(text):
        verdict = "WRONG"
    else:
        verdict = "refused" if code != 0 else "correct"
    last = [l for l in text.strip().splitlines() if l.strip()][-1:] or [""]
    results.append((cls, name, code, verdict, last[0][:110]))
    print("%-14s %-44s %-5s %-14s %s" % (cls, name, code, verdict, last[0][:110]), flush=True)


# --- setup: a tiny 1-channel model with preprocessing, compiled into a bundle ---
code, text = run(["init", "-o", "m", "--preset", "tiny", "--patch", "32", "--max-width", "16"])
assert code == 0, text
mj = os.path.join(W, "m", "model.json")
cfg = json.load(open(mj))
cfg["preprocessing"] = {
    "axis_order": [2, 1, 0],
    "target_spacing": [1.5, 1.5, 1.5],
    "normalization": [{"scheme": "z_score", "use_nonzero_mask": False}],
}
json.dump(cfg, open(mj, "w"))
code, text = run(["compile", "m", "-o", "bundle"], timeout=300)
assert code == 0, text
img = nifti(os.path.join(W, "img.nii.gz"))
B = "bundle"

# 1. never clobber
case("clobber", "--probabilities = the input (--overwrite)",
     ["segment", B, img, "-o", "s1.nii.gz", "--probabilities", img, "--overwrite"],
     protect=[img])
open(os.path.join(W, "keep.png"), "w").write("keep")
case("clobber", "--preview existing file, no --overwrite",
     ["segment", B, img, "-o", "s2.nii.gz", "--preview", "keep.png"],
     protect=[os.path.join(W, "keep.png")], must_not_exist=[os.path.join(W, "s2.nii.gz")])
case("clobber", "-o equal to --probabilities",
     ["segment", B, img, "-o", "s3.nii.gz", "--probabilities", "s3.nii.gz"],
     must_not_exist=[os.path.join(W, "s3.nii.gz")])
case("clobber", "-o is the input (--overwrite)",
     ["segment", B, img, "-o", img, "--overwrite"], protect=[img])

# 2. geometry
nan_img = nifti(os.path.join(W, "nan_affine.nii.gz"),
                srow=[[1.5, 0, 0, float("nan")], [0, 1.5, 0, 0], [0, 0, 1.5, 0]])
case("geometry", "NaN in the sform", ["segment", B, nan_img, "-o", "g1.nii.gz"],
     must_not_exist=[os.path.join(W, "g1.nii.gz")])
pix0 = nifti(os.path.join(W, "pix0.nii.gz"), pixdim=(0.0, 1.5, 1.5),
             srow=[[2.0, 0, 0, 0], [0, 1.5, 0, 0], [0, 0, 1.5, 0]])
case("geometry", "pixdim[1] = 0, sform says 2 mm", ["segment", B, pix0, "-o", "g2.nii.gz"],
     must_not_exist=[os.path.join(W, "g2.nii.gz")])
pred = nifti(os.path.join(W, "pred.nii.gz"), data=[1.0] * (24 * 20 * 16))
gt_nan = nifti(os.path.join(W, "gt_nan.nii.gz"), data=[1.0] * (24 * 20 * 16),
               srow=[[1.5, 0, 0, 0], [0, float("nan"), 0, 0], [0, 0, 1.5, 0]])
case("geometry", "evaluate against a NaN-affine label", ["evaluate", pred, gt_nan])
gt_2mm = nifti(os.path.join(W, "gt_2mm.nii.gz"), pixdim=(2.0, 2.0, 2.0),
               data=[1.0] * (24 * 20 * 16),
               srow=[[1.5, 0, 0, 0], [0, 1.5, 0, 0], [0, 0, 1.5, 0]])
case("geometry", "label pixdim 2 mm, sform 1.5 mm", ["evaluate", pred, gt_2mm])

# 3. gzip integrity
raw = open(img, "rb").read()
bad = bytearray(raw)
bad[-6] ^= 0x20  # in the CRC32 of the trailer
open(os.path.join(W, "crc.nii.gz"), "wb").write(bytes(bad))
case("gzip", "bit flip in the CRC32", ["segment", B, "crc.nii.gz", "-o", "z1.nii.gz"],
     must_not_exist=[os.path.join(W, "z1.nii.gz")])
bad = bytearray(raw)
bad[-2] ^= 0x01  # in ISIZE
open(os.path.join(W, "isize.nii.gz"), "wb").write(bytes(bad))
case("gzip", "bit flip in ISIZE", ["segment", B, "isize.nii.gz", "-o", "z2.nii.gz"],
     must_not_exist=[os.path.join(W, "z2.nii.gz")])

# 4. bounded resources
wide = nifti(os.path.join(W, "wide.nii.gz"), dims=(64, 64, 48))
case("resources", "--step 1e-9", ["segment", B, wide, "-o", "r1.nii.gz", "--step", "1e-9"],
     timeout=60, must_not_exist=[os.path.join(W, "r1.nii.gz")])
case("resources", "--threads 100000", ["segment", B, img, "-o", "r2.nii.gz", "--threads",
                                        "100000"])
case("resources", "init --base-width 2000 --max-width 4000",
     ["init", "-o", "wide", "--preset", "amos-ct", "--base-width", "2000", "--max-width",
      "4000"], must_not_exist=[os.path.join(W, "wide")], timeout=60)
case("resources", "compile --patch 4096", ["compile", "m", "-o", "b4096", "--patch", "4096"],
     must_not_exist=[os.path.join(W, "b4096")], timeout=60)
case("resources", "run --input /dev/zero",
     ["run", "m", "--input", "/dev/zero", "--output", "y.safetensors"], timeout=30,
     must_not_exist=[os.path.join(W, "y.safetensors")])
os.mkfifo(os.path.join(W, "fifo.nii"))
case("resources", "segment a FIFO", ["segment", B, "fifo.nii", "-o", "r3.nii.gz"], timeout=20)
fine = json.load(open(mj))
fine["preprocessing"]["target_spacing"] = [0.001, 0.001, 0.001]
os.makedirs(os.path.join(W, "fine"), exist_ok=True)
json.dump(fine, open(os.path.join(W, "fine", "prep.json"), "w"))
case("resources", "target spacing 0.001 mm",
     ["segment", B, img, "-o", "r4.nii.gz", "--preprocessing", "fine/prep.json"], timeout=60)
big = nifti(os.path.join(W, "hundred.nii.gz"), dims=(8, 8, 8), pixdim=(100.0, 100.0, 100.0))
case("resources", "a consistent 100 mm header", ["segment", B, big, "-o", "r5.nii.gz"],
     timeout=120)

# 5. tampering
so = os.path.join(W, B, "kernels.so")
man = os.path.join(W, B, "manifest.json")
m = json.load(open(man))
open(so, "ab").write(b"\0tampered")
m["files"]["kernels.so"] = hashlib.sha256(open(so, "rb").read()).hexdigest()
json.dump(m, open(man, "w"), indent=2)
case("tampering", "kernels.so replaced, sha256 fixed up",
     ["segment", B, img, "-o", "t1.nii.gz"], must_not_exist=[os.path.join(W, "t1.nii.gz")])
code, text = run(["compile", "m", "-o", "bundle", "--force"], timeout=300)

# 7. leftovers
open(os.path.join(W, "afile"), "w").write("mine")
case("leftovers", "compile -o FILE --force", ["compile", "m", "-o", "afile", "--force"],
     protect=[os.path.join(W, "afile")], timeout=300)

# 8. configs that zero the network
z = json.load(open(mj))
z["shift_groups"] = 200
os.makedirs(os.path.join(W, "zero"), exist_ok=True)
json.dump(z, open(os.path.join(W, "zero", "model.json"), "w"))
for f in os.listdir(os.path.join(W, "m")):
    if f.endswith(".safetensors"):
        with open(os.path.join(W, "m", f), "rb") as src:
            open(os.path.join(W, "zero", f), "wb").write(src.read())
case("zeroing", "shift_groups 200", ["compile", "zero/model.json", "-o", "bz"],
     must_not_exist=[os.path.join(W, "bz")], timeout=300)
allnan = nifti(os.path.join(W, "allnan.nii.gz"), data=[float("nan")] * (24 * 20 * 16))
case("zeroing", "an all-NaN image", ["segment", B, allnan, "-o", "n1.nii.gz"],
     must_not_exist=[os.path.join(W, "n1.nii.gz")])
tiny = json.load(open(mj))
tiny["preprocessing"]["target_spacing"] = [1000.0, 1000.0, 1000.0]
os.makedirs(os.path.join(W, "coarse"), exist_ok=True)
json.dump(tiny, open(os.path.join(W, "coarse", "prep.json"), "w"))
case("zeroing", "target spacing 1000 mm (1x1x1 grid)",
     ["segment", B, img, "-o", "n2.nii.gz", "--preprocessing", "coarse/prep.json"],
     must_not_exist=[os.path.join(W, "n2.nii.gz")])

# a correct run still works
case("control", "a normal segmentation", ["segment", B, img, "-o", "ok.nii.gz"], expect="ok")

bad = [r for r in results if r[3] not in ("refused", "correct")]
print("\n%d cases: %d refused cleanly or correct, %d not" % (len(results), len(results) - len(bad),
                                                          len(bad)))
print("workspace:", W)
