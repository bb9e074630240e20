"""Writes the NIfTI-1 pair fixtures of segment/tests/nifti.rs with nibabel (run once; the files are
committed): the same int16 image, scaled, with a rotated sform and a qform, as a plain pair
(pair_i16.hdr + .img), a big-endian gzipped pair (pair_i16_be.hdr.gz + .img.gz) and a single file
(pair_i16_single.nii) to compare with. Also prints nibabel's affine and scaled values the test
checks. nibabel 5.4.2, numpy 2."""
import sys
import numpy as np
import nibabel as nib

out = sys.argv[1] if len(sys.argv) > 1 else "."
shape = (5, 4, 3)
x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
raw = (x + 10 * y + 100 * z - 50).astype(np.int16)
c, s = np.cos(0.3), np.sin(0.3)
affine = np.array([
    [0.8 * c, -1.5 * s, 0.0, -20.0],
    [0.8 * s, 1.5 * c, 0.0, 31.5],
    [0.0, 0.0, 3.0, -7.25],
    [0.0, 0.0, 0.0, 1.0],
])
for name, endian in [("pair_i16.hdr", "<"), ("pair_i16_be.hdr.gz", ">"), ("pair_i16_single.nii", "<")]:
    cls = nib.Nifti1Image if name.endswith(".nii") else nib.Nifti1Pair
    hdr = cls.header_class(endianness=endian)
    img = cls(raw, affine, header=hdr)
    img.header.set_data_dtype(np.int16)
    img.header.set_slope_inter(2.0, -3.0)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    # The scaling must not be recomputed on save: write the raw integers as they are.
    img = cls(raw, affine, header=img.header)
    img.header.set_slope_inter(2.0, -3.0)
    nib.save(img, f"{out}/{name}")
for name in ["pair_i16.hdr", "pair_i16.img", "pair_i16_be.hdr.gz", "pair_i16_single.nii"]:
    back = nib.load(f"{out}/{name}")
    data = np.asanyarray(back.dataobj)
    print(name, back.header["magic"], back.header.endianness, back.header["vox_offset"],
          back.header.get_slope_inter(), data.dtype, data[0, 0, 0], data[4, 3, 2], data[2, 1, 1],
          float(data.sum()))
    print(repr(back.affine.tolist()))
