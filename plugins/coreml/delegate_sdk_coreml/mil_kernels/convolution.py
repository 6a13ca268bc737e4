"""Convolution MIL ops: conv and conv_transpose (im2col / scatter-add in numpy), crop."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from delegate_sdk_coreml.mil_errors import MILError
from delegate_sdk_coreml.mil_kernels.common import widen
from delegate_sdk_coreml.mil_kernels.registry import Args, kernel


def conv_pads(pad_type: str, spatial: Sequence[int], kernel_shape: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int], custom: Sequence[int]) -> list[tuple[int, int]]:
    n = len(spatial)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        if len(custom) != 2 * n:
            raise MILError(f"custom pad has {len(custom)} entries, expected {2 * n}")
        return [(int(custom[2 * i]), int(custom[2 * i + 1])) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        pads = []
        for i in range(n):
            eff = (kernel_shape[i] - 1) * dilations[i] + 1
            total = max(0, (math.ceil(spatial[i] / strides[i]) - 1) * strides[i] + eff - spatial[i])
            small, big = total // 2, total - total // 2
            pads.append((small, big) if pad_type == "same" else (big, small))
        return pads
    raise MILError(f"pad_type {pad_type!r} is not one of valid, same, same_lower, custom")


def window(xp: np.ndarray, offsets: Sequence[int], out: Sequence[int], strides: Sequence[int]) -> np.ndarray:
    """The strided view of the spatial dims of ``xp`` (N, C, *S) starting at ``offsets``."""
    idx = [slice(None), slice(None)]
    for o, n, s in zip(offsets, out, strides):
        idx.append(slice(o, o + (n - 1) * s + 1, s))
    return xp[tuple(idx)]


def _add_bias(out: np.ndarray, a: Args, nsp: int) -> np.ndarray:
    b = a.get("bias")
    return out if b is None else out + widen(b).reshape((1, -1) + (1,) * nsp)


@kernel("conv")
def _conv(a: Args) -> np.ndarray:
    x, w = widen(a["x"]), widen(a["weight"])
    nsp = x.ndim - 2
    if nsp < 1 or w.ndim != x.ndim:
        raise MILError(f"conv needs x of rank >= 3 and a weight of the same rank, got {x.shape} and {w.shape}")
    strides = a.ints("strides", [1] * nsp)
    dil = a.ints("dilations", [1] * nsp)
    groups = a.int("groups", 1)
    ksz = w.shape[2:]
    pads = conv_pads(a.str("pad_type", "valid"), x.shape[2:], ksz, strides, dil, a.ints("pad", [0] * 2 * nsp))
    xp = np.pad(x, [(0, 0), (0, 0), *pads])
    out_sp = [(xp.shape[2 + i] - ((ksz[i] - 1) * dil[i] + 1)) // strides[i] + 1 for i in range(nsp)]
    if any(o <= 0 for o in out_sp):
        raise MILError(f"conv output would be empty: {out_sp}")
    n, c_in = x.shape[:2]
    c_out = w.shape[0]
    if c_in % groups or c_out % groups or w.shape[1] != c_in // groups:
        raise MILError(f"conv weight {w.shape} does not fit input channels {c_in} with groups={groups}")
    cg, og = c_in // groups, c_out // groups
    # im2col: (N, C, *O, *K) windows of the padded input, then one matrix product per group
    eff = [(ksz[i] - 1) * dil[i] + 1 for i in range(nsp)]
    win = np.lib.stride_tricks.sliding_window_view(xp, eff, axis=tuple(range(2, 2 + nsp)))
    win = win[(slice(None), slice(None), *[slice(0, (o - 1) * st + 1, st) for o, st in zip(out_sp, strides)],
               *[slice(None, None, d) for d in dil])]
    n_pos = int(np.prod(out_sp))
    k_size = int(np.prod(ksz))
    # (N, G, Cg, *O, *K) -> (G, N * O, Cg * K)
    cols = win.reshape(n, groups, cg, n_pos, k_size).transpose(1, 0, 3, 2, 4).reshape(groups, n * n_pos, cg * k_size)
    wm = w.reshape(groups, og, cg * k_size).transpose(0, 2, 1)
    out = np.matmul(cols, wm)  # (G, N * O, Og)
    out = out.reshape(groups, n, n_pos, og).transpose(1, 0, 3, 2).reshape(n, c_out, *out_sp)
    return _add_bias(out, a, nsp)


@kernel("conv_transpose")
def _conv_transpose(a: Args) -> np.ndarray:
    x, w = widen(a["x"]), widen(a["weight"])
    nsp = x.ndim - 2
    strides = a.ints("strides", [1] * nsp)
    dil = a.ints("dilations", [1] * nsp)
    groups = a.int("groups", 1)
    ksz = w.shape[2:]
    n, c_in = x.shape[:2]
    if w.shape[0] != c_in or c_in % groups:
        raise MILError(f"conv_transpose weight {w.shape} does not fit input channels {c_in} with groups={groups}")
    og = w.shape[1]
    cg = c_in // groups
    c_out = og * groups
    in_sp = x.shape[2:]
    full = [(in_sp[i] - 1) * strides[i] + (ksz[i] - 1) * dil[i] + 1 for i in range(nsp)]
    acc = np.zeros((n, groups, og, *full), dtype=np.result_type(x.dtype, np.float32))
    xg = x.reshape(n, groups, cg, *in_sp)
    wg = w.reshape(groups, cg, og, *ksz)
    for k in np.ndindex(*ksz):
        contrib = np.einsum("ngc...,gco->ngo...", xg, wg[(slice(None), slice(None), slice(None), *k)])
        idx = [slice(None)] * 3 + [slice(k[i] * dil[i], k[i] * dil[i] + (in_sp[i] - 1) * strides[i] + 1, strides[i])
                                   for i in range(nsp)]
        acc[tuple(idx)] += contrib
    out = acc.reshape(n, c_out, *full)
    pad_type = a.str("pad_type", "valid")
    out_shape = a.get("output_shape")
    if pad_type == "custom":
        pad = a.ints("pad", [0] * 2 * nsp)
        pads = [(pad[2 * i], pad[2 * i + 1]) for i in range(nsp)]
    elif pad_type == "valid":
        pads = [(0, 0)] * nsp
    elif pad_type in ("same", "same_lower"):
        pads = []
        for i in range(nsp):
            total = max(0, full[i] - in_sp[i] * strides[i])
            small, big = total // 2, total - total // 2
            pads.append((small, big) if pad_type == "same" else (big, small))
    else:
        raise MILError(f"pad_type {pad_type!r} is not one of valid, same, same_lower, custom")
    if out_shape is not None:
        # an explicit output size (torch's output_padding) counts from the leading pad; past the computed
        # full size the output is zero (plus bias)
        target = [int(d) for d in np.asarray(out_shape).reshape(-1)][-nsp:]
        grow = [(0, max(0, p0 + t - f)) for (p0, _), t, f in zip(pads, target, full)]
        out = np.pad(out, [(0, 0), (0, 0), *grow])
        idx = [slice(None), slice(None)] + [slice(p0, p0 + t) for (p0, _), t in zip(pads, target)]
    else:
        idx = [slice(None), slice(None)] + [slice(p0, full[i] - p1) for i, (p0, p1) in enumerate(pads)]
    out = out[tuple(idx)]
    return _add_bias(out, a, nsp)


@kernel("crop")
def _crop(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    ch, cw = a.ints("crop_height"), a.ints("crop_width")
    h, w = x.shape[-2:]
    return x[..., ch[0]:h - ch[1], cw[0]:w - cw[1]]
