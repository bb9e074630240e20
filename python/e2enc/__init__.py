"""e2enc from Python: run compiled E2ENet bundles, segment volumes, compile models.

The same library as the ``e2enc`` command line, so results and error messages are the CLI's:

- ``Bundle(path)``: a verified, loaded bundle; ``Bundle.run(x)`` on a float32 numpy array
  [N, C, D, H, W] returns a dict of output arrays.
- ``segment(bundle, image, ...)``: a whole volume (numpy arrays or NIfTI files) to a label map,
  as ``e2enc segment`` does (nnU-Net preprocessing, sliding window, optional mirroring TTA).
- ``compile(model_json, out, target=...)``: a model.json to a signed bundle folder.
- ``Error``: what e2enc raises for refused input (a ``RuntimeError``); missing files raise
  ``FileNotFoundError``, wrong array dtypes ``TypeError``, wrong shapes ``ValueError``.

Every call that runs kernels, segments or compiles releases the GIL while Rust works.

Example::

    import e2enc, nibabel as nib
    bundle = e2enc.Bundle("my-bundle")
    img = nib.load("ct.nii.gz")
    labels = e2enc.segment(bundle, img.get_fdata(dtype="float32"), affine=img.affine)
    nib.save(nib.Nifti1Image(labels, img.affine), "labels.nii.gz")
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ._e2enc import Bundle, Error, __version__, compile
from ._e2enc import segment_arrays as _segment_arrays
from ._e2enc import segment_files as _segment_files

__all__ = ["Bundle", "Error", "compile", "segment", "__version__"]

PathLike = Union[str, "os.PathLike[str]"]


def _is_path(x: object) -> bool:
    return isinstance(x, (str, os.PathLike))


def _spacing_of(
    spacing: Optional[Sequence[float]], affine: Optional[np.ndarray]
) -> Tuple[float, float, float]:
    """The voxel size (x, y, z) from ``spacing``, else from the affine's column lengths."""
    if spacing is not None:
        s = tuple(float(v) for v in spacing)
        if len(s) != 3:
            raise ValueError(f"spacing must be 3 numbers (x, y, z in mm), got {spacing!r}")
    elif affine is not None:
        a = np.asarray(affine, dtype=np.float64)
        if a.shape not in ((4, 4), (3, 4), (3, 3)):
            raise ValueError(f"affine must be a 4x4 matrix, got shape {a.shape}")
        s = tuple(float(v) for v in np.linalg.norm(a[:3, :3], axis=0))
    else:
        raise ValueError(
            "give the voxel size: spacing=(x, y, z) in mm (nibabel: img.header.get_zooms()[:3]) "
            "or affine=img.affine"
        )
    if not all(np.isfinite(v) and v > 0 for v in s):
        raise ValueError(f"spacing {s} must be finite and positive")
    if spacing is not None and affine is not None:
        cols = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
        if not np.allclose(cols, s, rtol=1e-2):
            raise ValueError(
                f"spacing {s} disagrees with the affine's voxel size {tuple(cols)}: give one"
            )
    return s  # type: ignore[return-value]


def segment(
    bundle: Union[Bundle, PathLike],
    image: Union[PathLike, np.ndarray, Sequence[PathLike], Sequence[np.ndarray]],
    *,
    spacing: Optional[Sequence[float]] = None,
    affine: Optional[np.ndarray] = None,
    tta: bool = False,
    step: float = 0.5,
    probabilities: bool = False,
    preprocessing: Optional[PathLike] = None,
    spacing_as_is: bool = False,
    frame: Optional[int] = None,
    accumulator_memory: Optional[int] = None,
    scratch_dir: Optional[PathLike] = None,
) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """Segments one case with a compiled bundle, as ``e2enc segment`` does.

    ``bundle``: a ``Bundle`` (reuse it across cases) or a bundle folder (loaded for this call).

    ``image``: one channel or a list of channels, in the model's channel order, each either

    - a NIfTI file path (.nii or .nii.gz), read by e2enc exactly as the CLI reads it (``frame``
      picks a volume of 4-D files); the voxel size comes from the header, or
    - a 3-D numpy array in NIfTI (x, y, z) indexing, as nibabel's ``img.get_fdata()`` or
      ``img.dataobj`` gives it, with the voxel size from ``spacing=(x, y, z)`` (mm) or
      ``affine=`` (4x4, its column lengths); any real dtype is converted to float32. A float32
      F-contiguous array (nibabel's layout) is read without a reordering copy.

    The case is preprocessed as the bundle's model.json says (``preprocessing=FILE.json``
    replaces it; ``spacing_as_is=True`` segments a bundle without one on the image's own grid
    with per-image z-score), predicted tile by tile (``step`` of the patch, Gaussian weighting;
    ``tta=True``: all 8 mirrorings) and taken back to the input's grid.

    ``accumulator_memory``: bytes of the sliding window's probability accumulators to keep in
    memory (at least one tile's blocks are kept; the rest waits in an unnamed scratch file in
    ``scratch_dir``, default the system's temporary folder, which should not be a tmpfs); the
    results are the same whatever it is. ``None`` (the default) keeps them all in memory: 2 GiB
    for a 512x512 CT with 16 classes and a 128^3 patch. The CLI's ``--accumulator-memory``.

    Returns the label map, shape (x, y, z) like the input, uint8 (uint16 past 255 classes), an
    F-ordered array over e2enc's own buffer (no copy). With ``probabilities=True`` returns
    ``(labels, probabilities)``, the probabilities float32 of shape (x, y, z, classes), as
    nibabel loads the CLI's ``--probabilities`` file. Save with nibabel and the input's affine.

    The GIL is released while the case is read, preprocessed and predicted. Raises
    ``e2enc.Error`` (the CLI's message) for input the pipeline refuses, ``FileNotFoundError`` for
    missing files, ``ValueError``/``TypeError`` for arguments of the wrong shape or type.
    """
    if not (0.0 < step <= 1.0):
        raise ValueError(f"step {step} must be in (0, 1]")
    if accumulator_memory is not None and (
        isinstance(accumulator_memory, bool)
        or not isinstance(accumulator_memory, int)
        or accumulator_memory < 0
    ):
        raise ValueError(
            f"accumulator_memory {accumulator_memory!r} must be a number of bytes (0 or more) or None"
        )
    if not isinstance(bundle, Bundle):
        if not _is_path(bundle):
            raise TypeError(f"bundle must be an e2enc.Bundle or a folder path, got {type(bundle)}")
        bundle = Bundle(bundle)
    channels = list(image) if isinstance(image, (list, tuple)) else [image]
    if not channels:
        raise ValueError("image: no channel given")
    prep = os.fspath(preprocessing) if preprocessing is not None else None
    opts = dict(
        tta=bool(tta),
        step=float(step),
        probabilities=bool(probabilities),
        preprocessing=prep,
        spacing_as_is=bool(spacing_as_is),
        accumulator_memory=accumulator_memory,
        scratch_dir=os.fspath(scratch_dir) if scratch_dir is not None else None,
    )
    if all(_is_path(c) for c in channels):
        if spacing is not None or affine is not None:
            raise ValueError(
                "spacing= and affine= are for numpy volumes: a NIfTI file's header gives them"
            )
        if frame is not None and frame < 0:
            raise ValueError(f"frame {frame} must be 0 or more")
        (labels, probs, _grid), _affine = _segment_files(
            bundle, [os.fspath(c) for c in channels], frame=frame, **opts
        )
    elif any(_is_path(c) for c in channels):
        raise TypeError("image: give all channels as file paths or all as numpy arrays")
    else:
        if frame is not None:
            raise ValueError("frame= picks a volume of a 4-D NIfTI file; slice the array instead")
        arrays = []
        for k, c in enumerate(channels):
            a = np.asarray(c)
            if a.ndim != 3:
                raise ValueError(
                    f"channel {k} has shape {a.shape}: each channel must be a 3-D (x, y, z) "
                    "volume (give several channels as a list)"
                )
            if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
                raise TypeError(f"channel {k} has dtype {a.dtype}: expected real numbers")
            # order="K" keeps nibabel's F order, so a float32 volume is not copied here.
            arrays.append(a.astype(np.float32, order="K", copy=False))
        labels, probs, _grid = _segment_arrays(
            bundle, arrays, _spacing_of(spacing, affine), **opts
        )
    if probabilities:
        return labels, probs
    return labels
