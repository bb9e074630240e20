#!/usr/bin/env python3
"""Segment the MNI ICBM152 T1 template with an e2enc bundle, nibabel doing the file I/O.

The volume is loaded with nibabel, segmented in memory with e2enc.segment (the same pipeline as
`e2enc segment`: the bundle's preprocessing, sliding window, back to the input's grid), and the
labels are written with nibabel on the input's affine. With --reference, Dice per class against
a label file on the same grid.

    cargo run --release -- demo                  # makes e2enc-demo/bundle and e2enc-demo/data
    pip install ./python nibabel
    python python/examples/segment_mni.py e2enc-demo/bundle
    python python/examples/segment_mni.py e2enc-demo/bundle \
        e2enc-demo/dataset/imagesTs/mni_right_0000.nii.gz \
        --reference e2enc-demo/dataset/labelsTs/mni_right.nii.gz -o right.nii.gz
"""

from __future__ import annotations

import argparse
import sys
import time

import nibabel as nib
import numpy as np

import e2enc

T1 = "e2enc-demo/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="compiled bundle folder (e.g. e2enc-demo/bundle)")
    p.add_argument("image", nargs="?", default=T1, help=f"NIfTI image (default: {T1})")
    p.add_argument("-o", "--output", default="mni_labels.nii.gz", help="labels to write")
    p.add_argument("--reference", help="reference labels on the image's grid: print Dice per class")
    p.add_argument("--tta", action="store_true", help="average over the 8 mirrorings")
    p.add_argument("--threads", type=int, default=0, help="worker threads (0: all cores)")
    a = p.parse_args()

    img = nib.load(a.image)
    # (x, y, z) float32, F-ordered as nibabel keeps it: e2enc reads it without reordering.
    data = img.get_fdata(dtype=np.float32)
    if data.ndim != 3:
        print(f"{a.image}: expected a 3-D image, got shape {data.shape}", file=sys.stderr)
        return 1
    bundle = e2enc.Bundle(a.bundle, threads=a.threads)
    print(f"{bundle!r}: {bundle.classes} classes, patch {bundle.patch}")
    t0 = time.perf_counter()
    try:
        # The voxel size the CLI uses is the header's (pixdim); the affine places the output.
        labels = e2enc.segment(bundle, data, spacing=img.header.get_zooms()[:3], tta=a.tta)
    except e2enc.Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    secs = time.perf_counter() - t0
    print(f"segmented {a.image} {data.shape} in {secs:.1f} s; label voxels:",
          {int(k): int(n) for k, n in zip(*np.unique(labels, return_counts=True))})

    out = nib.Nifti1Image(labels, img.affine)
    out.set_qform(img.get_qform(), code=int(img.header["qform_code"]))
    out.set_sform(img.get_sform(), code=int(img.header["sform_code"]))
    nib.save(out, a.output)
    print(f"wrote {a.output}")

    if a.reference:
        ref = np.asanyarray(nib.load(a.reference).dataobj)
        if ref.shape != labels.shape:
            print(f"{a.reference}: shape {ref.shape} is not the image's {labels.shape}", file=sys.stderr)
            return 1
        for k in range(1, bundle.classes):
            print(f"class {k}: Dice {dice(labels == k, ref == k):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
