"""Indexing MIL ops: gather, scatter (each in its element, axis and nd form) and one_hot."""

from __future__ import annotations

from typing import Any

import numpy as np

from delegate_sdk_coreml.mil_errors import MILError
from delegate_sdk_coreml.mil_kernels.common import resolve_axis, widen
from delegate_sdk_coreml.mil_kernels.registry import Args, kernel


def _check_indices(idx: np.ndarray, size: int, ios: int, op: str) -> np.ndarray:
    idx = np.asarray(idx).astype(np.int64)
    # before iOS17 negative indices count from the end; from iOS17 on they are out of bounds
    low = -size if ios < 17 else 0
    if idx.size and (idx.min() < low or idx.max() >= size):
        raise MILError(f"{op}: index out of bounds for a dimension of size {size} "
                       f"(got {int(idx.min())}..{int(idx.max())})")
    return np.where(idx < 0, idx + size, idx)


@kernel("gather")
def _gather(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    axis = resolve_axis(a.int("axis", 0), x.ndim)
    batch_dims = a.int("batch_dims", 0)
    idx = _check_indices(a["indices"], x.shape[axis], a.ios, "gather")
    if batch_dims == 0:
        return np.take(x, idx, axis=axis)
    # batch_dims: leading dims shared by x and indices, gathered per batch element
    lead = x.shape[:batch_dims]
    outs = [np.take(x[b], idx[b], axis=axis - batch_dims) for b in np.ndindex(*lead)]
    return np.stack(outs).reshape(*lead, *outs[0].shape)


@kernel("gather_along_axis")
def _gather_along_axis(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    axis = resolve_axis(a.int("axis", 0), x.ndim)
    idx = _check_indices(a["indices"], x.shape[axis], a.ios, "gather_along_axis")
    return np.take_along_axis(x, idx, axis=axis)


@kernel("gather_nd")
def _gather_nd(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    idx = np.asarray(a["indices"]).astype(np.int64)
    batch_dims = a.int("batch_dims", 0)
    k = idx.shape[-1]
    lead = x.shape[:batch_dims]
    outs = []
    for b in np.ndindex(*lead) if batch_dims else [()]:
        xb, ib = x[b], idx[b]
        for d in range(k):
            ib[..., d] = _check_indices(ib[..., d], xb.shape[d], a.ios, "gather_nd")
        outs.append(xb[tuple(ib[..., d] for d in range(k))])
    return np.stack(outs).reshape(*lead, *outs[0].shape) if batch_dims else outs[0]


def _scatter_apply(out: np.ndarray, index: tuple[Any, ...], upd: np.ndarray, mode: str) -> None:
    ufuncs = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
              "max": np.maximum, "min": np.minimum}
    if mode == "update":
        out[index] = upd
    elif mode in ufuncs:
        ufuncs[mode].at(out, index, upd)
    else:
        raise MILError(f"scatter mode {mode!r} is not one of update, {', '.join(ufuncs)}")


@kernel("scatter")
def _scatter(a: Args) -> np.ndarray:
    data = np.array(widen(a["data"]), copy=True)
    axis = resolve_axis(a.int("axis", 0), data.ndim)
    idx = _check_indices(a["indices"], data.shape[axis], a.ios, "scatter").reshape(-1)
    upd = widen(a["updates"])
    moved = np.moveaxis(data, axis, 0)
    upd_m = np.moveaxis(upd, axis, 0).reshape(len(idx), *moved.shape[1:])
    _scatter_apply(moved, (idx,), upd_m, a.str("mode", "add"))
    return data


@kernel("scatter_along_axis")
def _scatter_along_axis(a: Args) -> np.ndarray:
    data = np.array(widen(a["data"]), copy=True)
    axis = resolve_axis(a.int("axis", 0), data.ndim)
    idx = _check_indices(a["indices"], data.shape[axis], a.ios, "scatter_along_axis")
    upd = widen(a["updates"])
    grids = list(np.indices(idx.shape, sparse=True))
    grids[axis] = idx
    _scatter_apply(data, tuple(np.broadcast_arrays(*grids)), upd, a.str("mode", "add"))
    return data


@kernel("scatter_nd")
def _scatter_nd(a: Args) -> np.ndarray:
    data = np.array(widen(a["data"]), copy=True)
    idx = np.asarray(a["indices"]).astype(np.int64)
    k = idx.shape[-1]
    cols = tuple(_check_indices(idx[..., d], data.shape[d], a.ios, "scatter_nd") for d in range(k))
    _scatter_apply(data, cols, widen(a["updates"]), a.str("mode", "add"))
    return data


@kernel("one_hot")
def _one_hot(a: Args) -> np.ndarray:
    idx = np.asarray(a["indices"]).astype(np.int64)
    depth = a.int("one_hot_vector_size")
    axis = a.int("axis", -1)
    on, off = a.float("on_value", 1.0), a.float("off_value", 0.0)
    hot = np.where(idx[..., None] == np.arange(depth), on, off)
    return np.moveaxis(hot, -1, resolve_axis(axis, idx.ndim + 1))
