"""Shape and layout MIL ops: reshape, transpose, concat, slices, pad, pixel shuffles, fill, shape."""

from __future__ import annotations

from typing import Any

import numpy as np

from delegate_sdk_coreml.mil_errors import MILError
from delegate_sdk_coreml.mil_kernels.common import resolve_axes, resolve_axis, widen
from delegate_sdk_coreml.mil_kernels.registry import Args, kernel


@kernel("reshape")
def _reshape(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    shape = [int(s) for s in np.asarray(a["shape"]).reshape(-1)]
    shape = [x.shape[i] if s == 0 and i < x.ndim else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@kernel("transpose")
def _transpose(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    return np.transpose(x, [resolve_axis(p, x.ndim) for p in a.ints("perm")])


@kernel("expand_dims")
def _expand_dims(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    out_rank = x.ndim + len(a.ints("axes"))
    return np.expand_dims(x, tuple(sorted(resolve_axis(i, out_rank) for i in a.ints("axes"))))


@kernel("squeeze")
def _squeeze(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    axes = resolve_axes(a, "axes", x.ndim)
    return np.squeeze(x, axis=axes) if axes is not None else np.squeeze(x)


@kernel("tile")
def _tile(a: Args) -> np.ndarray:
    return np.tile(np.asarray(a["x"]), a.ints("reps"))


@kernel("reverse")
def _reverse(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    axes = resolve_axes(a, "axes", x.ndim)
    return np.flip(x, axis=axes if axes is not None else tuple(range(x.ndim)))


def _value_list(v: Any) -> list[np.ndarray]:
    return [np.asarray(i) for i in v] if isinstance(v, list) else [np.asarray(v)]


@kernel("concat", tuple_inputs=("values",))
def _concat(a: Args) -> np.ndarray:
    values = _value_list(a["values"])
    axis = resolve_axis(a.int("axis"), values[0].ndim)
    if a.bool("interleave", False):
        stacked = np.stack(values, axis=axis + 1)
        shape = list(values[0].shape)
        shape[axis] = shape[axis] * len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


@kernel("stack", tuple_inputs=("values",))
def _stack(a: Args) -> np.ndarray:
    values = _value_list(a["values"])
    return np.stack(values, axis=resolve_axis(a.int("axis"), values[0].ndim + 1))


@kernel("split")
def _split(a: Args) -> list[np.ndarray]:
    x = np.asarray(a["x"])
    axis = resolve_axis(a.int("axis"), x.ndim)
    sizes = a.get("split_sizes")
    if sizes is not None:
        bounds = np.cumsum([int(s) for s in np.asarray(sizes).reshape(-1)])[:-1]
        return np.split(x, bounds, axis=axis)
    return np.split(x, a.int("num_splits"), axis=axis)


@kernel("slice_by_index")
def _slice_by_index(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    r = x.ndim
    begin, end = a.ints("begin"), a.ints("end")
    stride = a.ints("stride", [1] * r)
    bmask = [bool(b) for b in np.asarray(a.get("begin_mask", [False] * r)).reshape(-1)]
    emask = [bool(b) for b in np.asarray(a.get("end_mask", [False] * r)).reshape(-1)]
    smask = [bool(b) for b in np.asarray(a.get("squeeze_mask", [False] * r)).reshape(-1)]
    idx: list[Any] = []
    for i in range(r):
        if smask[i]:
            idx.append(begin[i])
            continue
        b = None if bmask[i] else begin[i]
        e = None if emask[i] else end[i]
        idx.append(slice(b, e, stride[i]))
    return x[tuple(idx)]


@kernel("slice_by_size")
def _slice_by_size(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    begin, size = a.ints("begin"), a.ints("size")
    idx = []
    for i, (b, s) in enumerate(zip(begin, size)):
        b = b % x.shape[i] if b < 0 else b
        idx.append(slice(b, x.shape[i] if s == -1 else b + s))
    return x[tuple(idx)]


@kernel("slice_update")
def _slice_update(a: Args) -> np.ndarray:
    x = np.array(a["x"], copy=True)
    r = x.ndim
    begin, end = a.ints("begin"), a.ints("end")
    stride = a.ints("stride", [1] * r)
    bmask = [bool(b) for b in np.asarray(a.get("begin_mask", [False] * r)).reshape(-1)]
    emask = [bool(b) for b in np.asarray(a.get("end_mask", [False] * r)).reshape(-1)]
    smask = [bool(b) for b in np.asarray(a.get("squeeze_mask", [False] * r)).reshape(-1)]
    idx: list[Any] = []
    for i in range(r):
        if smask[i]:
            idx.append(begin[i])
        else:
            idx.append(slice(None if bmask[i] else begin[i], None if emask[i] else end[i], stride[i]))
    x[tuple(idx)] = np.asarray(a["update"]).reshape(x[tuple(idx)].shape)
    return x


@kernel("pad")
def _pad(a: Args) -> np.ndarray:
    x = widen(a["x"])
    pad = a.ints("pad")
    n = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    mode = a.str("mode", "constant")
    if mode == "constant":
        return np.pad(x, widths, constant_values=a.float("constant_val", 0.0))
    if mode == "reflect":
        return np.pad(x, widths, mode="reflect")
    if mode == "replicate":
        return np.pad(x, widths, mode="edge")
    if mode == "symmetric":
        return np.pad(x, widths, mode="symmetric")
    raise MILError(f"pad mode {mode!r} is not one of constant, reflect, replicate, symmetric")


@kernel("band_part")
def _band_part(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    lower, upper = a.int("lower", -1), a.int("upper", -1)
    m, n = x.shape[-2:]
    i = np.arange(m)[:, None]
    j = np.arange(n)[None, :]
    keep = ((lower < 0) | (i - j <= lower)) & ((upper < 0) | (j - i <= upper))
    return np.where(keep, x, np.zeros((), dtype=x.dtype))


@kernel("shape")
def _shape(a: Args) -> np.ndarray:
    return np.asarray(np.asarray(a["x"]).shape, dtype=np.int32)


@kernel("fill")
def _fill(a: Args) -> np.ndarray:
    return np.full(a.ints("shape"), a.get("value", 0.0))


@kernel("fill_like")
def _fill_like(a: Args) -> np.ndarray:
    return np.full(np.asarray(a["ref_tensor"]).shape, a.get("value", 0.0))


@kernel("range_1d")
def _range_1d(a: Args) -> np.ndarray:
    start, end, step = (np.asarray(a[k]).reshape(()) for k in ("start", "end", "step"))
    return np.arange(start, end, step)


def _to_space(x: np.ndarray, f: int, channels_first: bool) -> np.ndarray:
    """Move f*f channel blocks into f x f pixels: channel c*f*f + i*f + j (``channels_first``, pixel_shuffle's
    order) or (i*f + j)*C + c (depth_to_space's order) becomes pixel (i, j) of channel c."""
    n, c, h, w = x.shape
    c2 = c // (f * f)
    if channels_first:
        blocks = x.reshape(n, c2, f, f, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        blocks = x.reshape(n, f, f, c2, h, w).transpose(0, 3, 4, 1, 5, 2)
    return blocks.reshape(n, c2, h * f, w * f)


def _to_depth(x: np.ndarray, f: int, channels_first: bool) -> np.ndarray:
    """The inverse of ``_to_space`` in the same channel order."""
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // f, f, w // f, f)
    blocks = blocks.transpose(0, 1, 3, 5, 2, 4) if channels_first else blocks.transpose(0, 3, 5, 1, 2, 4)
    return blocks.reshape(n, c * f * f, h // f, w // f)


@kernel("pixel_shuffle")
def _pixel_shuffle(a: Args) -> np.ndarray:
    return _to_space(np.asarray(a["x"]), a.int("upscale_factor"), channels_first=True)


@kernel("pixel_unshuffle")
def _pixel_unshuffle(a: Args) -> np.ndarray:
    return _to_depth(np.asarray(a["x"]), a.int("downscale_factor"), channels_first=True)


@kernel("space_to_depth")
def _space_to_depth(a: Args) -> np.ndarray:
    return _to_depth(np.asarray(a["x"]), a.int("block_size"), channels_first=False)


@kernel("depth_to_space")
def _depth_to_space(a: Args) -> np.ndarray:
    return _to_space(np.asarray(a["x"]), a.int("block_size"), channels_first=False)
