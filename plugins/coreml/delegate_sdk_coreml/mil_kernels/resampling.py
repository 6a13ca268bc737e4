"""Resampling MIL ops: bilinear and nearest-neighbour upsample / resize."""

from __future__ import annotations

import math

import numpy as np

from delegate_sdk_coreml.mil_errors import MILError
from delegate_sdk_coreml.mil_kernels.common import widen
from delegate_sdk_coreml.mil_kernels.registry import Args, kernel


def _linear_coords(out_size: int, in_size: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    i = np.arange(out_size, dtype=np.float64)
    if align_corners:
        spacing = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        pos = i * spacing
    elif half_pixel:
        spacing = in_size / out_size
        pos = (i + 0.5) * spacing - 0.5
    else:
        pos = i * (in_size / out_size)
    return np.clip(pos, 0, in_size - 1)


def _interp_axis(x: np.ndarray, axis: int, pos: np.ndarray) -> np.ndarray:
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    frac = (pos - lo).astype(x.dtype)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = frac.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


@kernel("upsample_bilinear")
def _upsample_bilinear(a: Args) -> np.ndarray:
    x = widen(a["x"])
    sh, sw = a.float("scale_factor_height", 1.0), a.float("scale_factor_width", 1.0)
    align = a.bool("align_corners", True)
    half = a.bool("half_pixel_centers", not align)
    h, w = x.shape[-2:]
    oh, ow = math.floor(h * sh), math.floor(w * sw)
    out = _interp_axis(x, x.ndim - 2, _linear_coords(oh, h, align, half))
    return _interp_axis(out, x.ndim - 1, _linear_coords(ow, w, align, half))


_SAMPLING = {"STRICT_ALIGN_CORNERS": (True, False), "ALIGN_CORNERS": (True, False),
             "DEFAULT": (False, False), "OFFSET_CORNERS": (False, True), "UNALIGN_CORNERS": (False, True)}


@kernel("resize_bilinear")
def _resize_bilinear(a: Args) -> np.ndarray:
    x = widen(a["x"])
    h, w = x.shape[-2:]
    oh, ow = a.int("target_size_height", 1), a.int("target_size_width", 1)
    mode = a.str("sampling_mode", "DEFAULT")
    if mode not in _SAMPLING:
        raise MILError(f"resize_bilinear sampling_mode {mode!r} is not supported")
    align, half = _SAMPLING[mode]
    out = _interp_axis(x, x.ndim - 2, _linear_coords(oh, h, align, half))
    return _interp_axis(out, x.ndim - 1, _linear_coords(ow, w, align, half))


def _nearest_index(out_size: int, in_size: int) -> np.ndarray:
    # the source pixel follows the input/output size ratio (coremltools nudges fractional scale factors up
    # so that floor(size * scale) hits the intended output size; dividing by that nudged scale would be off)
    src = np.floor(np.arange(out_size, dtype=np.float64) * (in_size / out_size)).astype(np.int64)
    return np.minimum(src, in_size - 1)


@kernel("upsample_nearest_neighbor")
def _upsample_nearest(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    sh, sw = a.float("scale_factor_height", 1.0), a.float("scale_factor_width", 1.0)
    h, w = x.shape[-2:]
    oh, ow = math.floor(h * sh), math.floor(w * sw)
    out = np.take(x, _nearest_index(oh, h), axis=x.ndim - 2)
    return np.take(out, _nearest_index(ow, w), axis=x.ndim - 1)


@kernel("resize_nearest_neighbor")
def _resize_nearest(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    h, w = x.shape[-2:]
    oh, ow = a.int("target_size_height"), a.int("target_size_width")
    out = np.take(x, _nearest_index(oh, h), axis=x.ndim - 2)
    return np.take(out, _nearest_index(ow, w), axis=x.ndim - 1)
