"""SVHN (Netzer et al. 2011) from its official MATLAB files, train_32x32.mat and test_32x32.mat.

Each holds X, uint8 [32, 32, 3, n] (height, width, channel, image), and y, [n, 1] with the digit 0
labelled 10. The paper trains on the 73,257 training digits (Appendix B); the "extra" set is unused.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError

from landscape.errors import BadInput


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, 3, 32, 32] and int64 labels [n] in 0..9 from one SVHN .mat file."""
    if not path.is_file():
        raise BadInput(f"missing {path.name} in {path.parent}")
    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
    except (MatReadError, ValueError, TypeError, OSError, EOFError, NotImplementedError,
            zlib.error) as err:
        raise BadInput(f"{path} is not a readable SVHN .mat file: {err}") from None
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None:
        raise BadInput(f"{path} lacks the variables X and y of an SVHN .mat file")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
        raise BadInput(f"{path}: X {x.shape} {x.dtype} and y {y.shape} are not SVHN's "
                       "(expected uint8 [32, 32, 3, n] and [n, 1])")
    labels = y.reshape(-1).astype(np.int64)
    labels[labels == 10] = 0  # SVHN's label for the digit 0
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels  # -> [n, C, H, W]
