#!/usr/bin/env python3
"""Writes a synthetic abdominal CT as NIfTI-1 (int16 Hounsfield units), AMOS-sized by default:
512x512x300 voxels at 0.8x0.8x1.5 mm. For memory and speed checks of `e2enc segment` on whole
volumes, not for accuracy: an elliptic body (fat rim, soft tissue) in air with a table, a spine,
liver, kidneys, spleen, aorta, bowel gas, and Gaussian noise, all seeded. Needs numpy only.

    python3 scripts/synthetic-ct.py ct.nii.gz [--shape 512 512 300] [--spacing 0.8 0.8 1.5] [--seed 0]
"""
import argparse
import gzip
import os
import struct
import sys

import numpy as np


def header(shape, spacing):
    """The 352 bytes of a NIfTI-1 single file: int16, scl_slope 1, qform and sform the scaled
    grid centred on the origin (LPS-free RAS: x right-to-left flipped as scanners write)."""
    h = bytearray(352)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, 3, *shape, 1, 1, 1, 1)
    struct.pack_into("<hh", h, 70, 4, 16)  # datatype int16, bitpix
    struct.pack_into("<8f", h, 76, 1.0, *spacing, 0, 0, 0, 0)
    struct.pack_into("<f", h, 108, 352.0)  # vox_offset
    struct.pack_into("<ff", h, 112, 1.0, 0.0)  # scl_slope, scl_inter
    h[123] = 2 | 8  # mm, s
    h[148:148 + 24] = b"e2enc synthetic CT".ljust(24, b"\0")
    struct.pack_into("<hh", h, 252, 1, 1)  # qform_code, sform_code: scanner
    off = [-(n - 1) * s / 2 for n, s in zip(shape, spacing)]
    struct.pack_into("<6f", h, 256, 0, 0, 0, *off)  # identity quaternion, offsets
    for r in range(3):
        row = [0.0] * 4
        row[r] = spacing[r]
        row[3] = off[r]
        struct.pack_into("<4f", h, 280 + 16 * r, *row)
    h[344:348] = b"n+1\0"
    return bytes(h)


def slab(z, shape, spacing, rng):
    """One axial slice (y, x) in HU."""
    nx, ny, nz = shape
    sx, sy, sz = spacing
    x = (np.arange(nx) - nx / 2) * sx
    y = (np.arange(ny) - ny / 2) * sy
    X, Y = np.meshgrid(x, y)  # (ny, nx)
    zz = (z - nz / 2) * sz
    img = np.full((ny, nx), -1000.0)
    body = (X / 170) ** 2 + (Y / 120) ** 2 <= 1
    img[body] = -100.0  # fat
    inner = (X / 155) ** 2 + (Y / 105) ** 2 <= 1
    img[inner] = 40.0  # soft tissue
    img[(Y > 135) & (Y < 150) & (np.abs(X) < 220)] = 200.0  # table
    organs = [
        # (centre x, y, z in mm, radii, HU)
        ((-60, -10, 40), (70, 55, 90), 60.0),  # liver
        ((70, 20, 60), (35, 45, 55), 45.0),  # spleen
        ((-55, 55, -20), (25, 30, 50), 30.0),  # right kidney
        ((55, 55, -20), (25, 30, 50), 30.0),  # left kidney
        ((0, 30, 0), (12, 12, 400), 150.0),  # aorta (contrast)
        ((10, -40, -80), (40, 25, 60), -600.0),  # bowel gas
    ]
    for (cx, cy, cz), (rx, ry, rz), hu in organs:
        m = ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2 + ((zz - cz) / rz) ** 2 <= 1
        img[m & inner] = hu
    spine = ((X / 22) ** 2 + ((Y - 80) / 20) ** 2 <= 1) & inner
    img[spine] = 700.0
    img[body] += rng.normal(0, 15, size=int(body.sum()))
    return np.clip(np.round(img), -1024, 3071).astype("<i2")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output .nii or .nii.gz")
    p.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300], metavar=("X", "Y", "Z"))
    p.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.8, 1.5], metavar=("SX", "SY", "SZ"))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if not (a.out.endswith(".nii") or a.out.endswith(".nii.gz")):
        sys.exit("error: the output must end in .nii or .nii.gz")
    if min(a.shape) < 1 or max(a.shape) > 32767 or min(a.spacing) <= 0:
        sys.exit("error: each of --shape must be in 1..32767 and each --spacing positive")
    rng = np.random.default_rng(a.seed)
    tmp = a.out + ".part"
    opener = gzip.open if a.out.endswith(".gz") else open
    with opener(tmp, "wb") as f:
        f.write(header(a.shape, a.spacing))
        for z in range(a.shape[2]):
            f.write(slab(z, a.shape, a.spacing, rng).tobytes())
    os.replace(tmp, a.out)
    print(f"{a.out}: {a.shape[0]}x{a.shape[1]}x{a.shape[2]} int16 at {a.spacing} mm")


if __name__ == "__main__":
    main()
