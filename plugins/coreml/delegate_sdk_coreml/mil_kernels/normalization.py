"""Normalization MIL ops: batch, instance, layer, l2 and local response norm."""

from __future__ import annotations

import numpy as np

from delegate_sdk_coreml.mil_kernels.common import resolve_axes, widen
from delegate_sdk_coreml.mil_kernels.registry import Args, kernel


def _scale_shift(out: np.ndarray, a: Args, shape: tuple[int, ...] | list[int]) -> np.ndarray:
    """The optional affine part every MIL norm shares: ``gamma`` and ``beta`` reshaped to broadcast."""
    g, b = a.get("gamma"), a.get("beta")
    if g is not None:
        out = out * widen(g).reshape(shape)
    if b is not None:
        out = out + widen(b).reshape(shape)
    return out


def _standardise(x: np.ndarray, axes: tuple[int, ...], a: Args) -> np.ndarray:
    mean = x.mean(axis=axes, keepdims=True)
    var = np.square(x - mean).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + a.float("epsilon", 1e-5))


def _per_channel(x: np.ndarray) -> tuple[int, ...]:
    return (1, -1) + (1,) * (x.ndim - 2)


@kernel("batch_norm")
def _batch_norm(a: Args) -> np.ndarray:
    x = widen(a["x"])
    shape = _per_channel(x)
    mean, var = widen(a["mean"]).reshape(shape), widen(a["variance"]).reshape(shape)
    return _scale_shift((x - mean) / np.sqrt(var + a.float("epsilon", 1e-5)), a, shape)


@kernel("instance_norm")
def _instance_norm(a: Args) -> np.ndarray:
    x = widen(a["x"])
    return _scale_shift(_standardise(x, tuple(range(2, x.ndim)), a), a, _per_channel(x))


@kernel("layer_norm")
def _layer_norm(a: Args) -> np.ndarray:
    x = widen(a["x"])
    axes = resolve_axes(a, "axes", x.ndim)
    if axes is None:
        axes = tuple(range(x.ndim))
    # gamma/beta have the shape of x over the normalized axes
    return _scale_shift(_standardise(x, axes, a), a, [x.shape[i] if i in axes else 1 for i in range(x.ndim)])


@kernel("l2_norm")
def _l2_norm(a: Args) -> np.ndarray:
    x = widen(a["x"])
    axes = tuple(range(1, x.ndim)) if x.ndim > 1 else (0,)
    norm = np.sqrt(np.sum(np.square(x), axis=axes, keepdims=True))
    return x / np.maximum(norm, a.float("epsilon", 1e-6))


@kernel("local_response_norm")
def _lrn(a: Args) -> np.ndarray:
    x = widen(a["x"])
    size = a.int("size")
    alpha, beta, k = a.float("alpha", 1e-4), a.float("beta", 0.75), a.float("k", 1.0)
    sq = np.square(x)
    c = x.shape[1]
    acc = np.zeros_like(x)
    for i in range(c):
        lo, hi = max(0, i - (size - 1) // 2), min(c, i + size // 2 + 1)
        acc[:, i] = sq[:, lo:hi].sum(axis=1)
    return x / np.power(k + alpha / size * acc, beta)
