"""Type stubs of the compiled module e2enc._e2enc (re-exported by e2enc)."""

import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

_Path = Union[str, "os.PathLike[str]"]
_Grid = Tuple[int, int, int]

__version__: str

class Error(RuntimeError):
    """An error of e2enc; its message is the one the e2enc command line prints."""

class Bundle:
    """A compiled e2enc bundle, verified, loaded and ready to run."""

    def __init__(
        self,
        path: _Path,
        *,
        threads: int = 0,
        device: str = "cpu",
        trusted_keys: Optional[_Path] = None,
        trust_unsigned: bool = False,
        rebuild: bool = False,
        emulate: bool = False,
    ) -> None: ...
    def run(self, x: npt.NDArray[np.float32], /) -> Dict[str, np.ndarray]:
        """Runs the bundle on x [N, C, D, H, W] float32; returns every output by name."""
    @property
    def path(self) -> str: ...
    @property
    def inputs(self) -> List[Tuple[str, Tuple[int, ...]]]: ...
    @property
    def outputs(self) -> List[Tuple[str, Tuple[int, ...]]]: ...
    @property
    def target(self) -> Optional[str]: ...
    @property
    def device(self) -> str: ...
    @property
    def threads(self) -> int: ...
    @property
    def batch(self) -> int: ...
    @property
    def channels(self) -> int: ...
    @property
    def classes(self) -> int: ...
    @property
    def patch(self) -> Tuple[int, int, int]: ...

def compile(
    model_json: _Path,
    out: _Path,
    *,
    target: str = "native",
    batch: int = 1,
    patch: Optional[Tuple[int, int, int]] = None,
    deep_supervision: bool = False,
    force: bool = False,
    precision: Optional[str] = None,
    standalone: bool = False,
    cc: Optional[str] = None,
    sign: Optional[_Path] = None,
    calibrate: Optional[_Path] = None,
    calibration_tiles: int = 8,
    preprocessing: Optional[_Path] = None,
    spacing_as_is: bool = False,
    activations: Optional[str] = None,
) -> Dict[str, object]:
    """Compiles a model.json into a bundle folder; returns a summary."""

def segment_arrays(
    bundle: Bundle,
    channels: Sequence[npt.NDArray[np.float32]],
    spacing: Tuple[float, float, float],
    *,
    tta: bool,
    step: float,
    probabilities: bool,
    preprocessing: Optional[str],
    spacing_as_is: bool,
    accumulator_memory: Optional[int] = None,
    scratch_dir: Optional[str] = None,
) -> Tuple[np.ndarray, Optional[npt.NDArray[np.float32]], _Grid]: ...
def segment_files(
    bundle: Bundle,
    paths: Sequence[str],
    *,
    frame: Optional[int],
    tta: bool,
    step: float,
    probabilities: bool,
    preprocessing: Optional[str],
    spacing_as_is: bool,
    accumulator_memory: Optional[int] = None,
    scratch_dir: Optional[str] = None,
) -> Tuple[Tuple[np.ndarray, Optional[npt.NDArray[np.float32]], _Grid], List[List[float]]]: ...
