"""Helpers every kernel family uses: the compute precision, axis arguments, MIL dtype names."""

from __future__ import annotations

from typing import Any

import numpy as np

from delegate_sdk_coreml.mil_errors import MILError
from delegate_sdk_coreml.mil_kernels.registry import Args

#: the dtype strings of MIL ``cast`` (and ``output_dtype`` inputs)
CAST_DTYPES: dict[str, Any] = {
    "fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "int8": np.int8, "uint8": np.uint8,
    "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
    "bool": np.bool_,
}


def widen(a: Any) -> np.ndarray:
    """Float arrays in the precision kernels compute in (fp16 is widened to fp32, fp64 kept)."""
    a = np.asarray(a)
    if a.dtype == np.float16:
        return a.astype(np.float32)
    return a


def resolve_axis(axis: int, rank: int) -> int:
    """A MIL axis (negative counts from the end) as an index in ``range(rank)``."""
    if not -max(rank, 1) <= axis < max(rank, 1):
        raise MILError(f"axis {axis} out of range for rank {rank}")
    return axis % max(rank, 1)


def resolve_axes(a: Args, key: str, rank: int) -> tuple[int, ...] | None:
    """The sorted, de-duplicated axes of input ``key``; None when the op omits it (all axes)."""
    v = a.values.get(key)
    if v is None:
        return None
    return tuple(sorted({resolve_axis(int(i), rank) for i in np.asarray(v).reshape(-1)}))
