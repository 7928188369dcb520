"""Array types of the learning math, by element type (`numpy.typing.NDArray` over any shape)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
# Indices arrive as int64 or intp (np.repeat, np.where, np.arange); any integer type indexes alike.
IndexArray = npt.NDArray[np.integer[Any]]
