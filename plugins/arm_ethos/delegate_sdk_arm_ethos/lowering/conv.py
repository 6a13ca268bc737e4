"""Lowerings of convolution, fully connected, matrix multiplication and eval batch norm.

Constant weights become CONV2D / DEPTHWISE_CONV2D / TRANSPOSE_CONV2D (int32
accumulator, int48 with int16 activations) + RESCALE; two activations become
MATMUL + RESCALE. Weights are int8 symmetric per output channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from delegate_sdk_arm_ethos.lowering.registry import lowers
from delegate_sdk_arm_ethos.lowering.values import (
    NCHW,
    NHWC,
    LoweringError,
    Val,
    per_dim,
    shape_of,
)
from delegate_sdk_arm_ethos.quant import (
    QParams,
    quantize_bias,
    quantize_weights,
    symmetric_weight_scales,
    to_fraction,
)
from delegate_sdk_arm_ethos.refgraph import QuantWeight

if TYPE_CHECKING:
    from delegate_sdk_arm_ethos.lowering.driver import Lowerer


@lowers("aten.convolution.default")
def convolution(lw: Lowerer, node: torch.fx.Node) -> Val:
    x_arg, w_arg, b_arg, stride, padding, dilation, transposed, out_pad, groups = node.args[:9]
    x = lw.val(x_arg)
    # ATen allows one value for every spatial dim ([1]: what F.conv2d(padding="valid") and some exporters
    # give); the TOSA emitters index each dim
    stride, padding, dilation, out_pad = (per_dim(v, x.rank - 2) for v in (stride, padding, dilation, out_pad))
    w = lw.const_arg(w_arg, "convolution weight")
    bias = lw.const_arg(b_arg, "convolution bias")
    out_shape = shape_of(node)
    out_q = lw.out_q(node)
    _record_weight(lw, w_arg, 1 if transposed else 0)
    if transposed:
        return _transpose_conv(lw, node, x, w, bias, stride, padding, dilation, out_pad, groups, out_q)
    if x.rank == 3:  # conv1d as conv2d with H = 1
        x4 = Val((x.shape[0], x.shape[1], 1, x.shape[2]), x.dtype, x.q,
                 {"std": lw.b.reshape(lw.std(x), (x.shape[0], x.shape[1], 1, x.shape[2]))})
        w4 = w[:, :, None, :]
        stride, padding, dilation = [1, stride[0]], [0, padding[0]], [1, dilation[0]]
        o4 = (out_shape[0], out_shape[1], 1, out_shape[2])
        y4 = _conv2d(lw, x4, w4, bias, stride, padding, dilation, groups, o4, out_q)
        return lw.new_val(out_shape, out_q, "std", lw.b.reshape(lw.std(y4), out_shape))
    return _conv2d(lw, x, w, bias, stride, padding, dilation, groups, out_shape, out_q)


def _conv2d(lw: Lowerer, x: Val, w: np.ndarray, bias: np.ndarray | None, stride: Sequence[int],
            padding: Sequence[int], dilation: Sequence[int], groups: int, out_shape: Sequence[int],
            out_q: QParams) -> Val:
    n, cin, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    xq = x.q
    assert xq is not None
    xn = lw.nhwc(x)
    pad = [padding[0], padding[0], padding[1], padding[1]]
    xn, pad = lw.fit_window(xn, h, wd, (kh, kw), stride, dilation, pad, out_shape[2:])
    out_nhwc = [out_shape[0], out_shape[2], out_shape[3], out_shape[1]]
    if groups == 1:
        wq, ws = _weight_quant(lw, w, 0)
        acc = lw.b.conv2d(xn, wq.transpose(0, 2, 3, 1), _bias_q(lw, bias, cout, xq, ws), xq.zero_point,
                          pad, stride, dilation, out_nhwc, lw.acc)
        y = _acc_rescale(lw, acc, xq, ws, out_q)
    elif groups == cin and cin_g == 1:
        mult = cout // cin
        wq, ws = _weight_quant(lw, w, 0)
        wd_ = wq.reshape(cin, mult, kh, kw).transpose(2, 3, 0, 1)  # [KH, KW, C, M]
        acc = lw.b.depthwise_conv2d(xn, wd_, _bias_q(lw, bias, cout, xq, ws), xq.zero_point, pad,
                                    stride, dilation, out_nhwc, lw.acc)
        y = _acc_rescale(lw, acc, xq, ws, out_q)
    else:
        parts = []
        cout_g = cout // groups
        info = lw.b.info[xn]
        for g in range(groups):
            xs = lw.b.slice(xn, [0, 0, 0, g * cin_g], [info.shape[0], info.shape[1], info.shape[2], cin_g])
            wg = w[g * cout_g:(g + 1) * cout_g]
            bg = None if bias is None else bias[g * cout_g:(g + 1) * cout_g]
            wq, ws = _weight_quant(lw, wg, 0)
            acc = lw.b.conv2d(xs, wq.transpose(0, 2, 3, 1), _bias_q(lw, bg, cout_g, xq, ws),
                              xq.zero_point, pad, stride, dilation, out_nhwc[:3] + [cout_g], lw.acc)
            parts.append(_acc_rescale(lw, acc, xq, ws, out_q))
        y = lw.b.concat(parts, 3)
    return lw.new_val(out_shape, out_q, "nhwc", y)


def _transpose_conv(lw: Lowerer, node: torch.fx.Node, x: Val, w: np.ndarray, bias: np.ndarray | None,
                    stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                    out_pad: Sequence[int], groups: int, out_q: QParams) -> Val:
    if groups != 1 or any(d != 1 for d in dilation) or x.rank != 4:
        raise LoweringError("transposed convolution needs groups=1, dilation=1 and a 4-D input")
    out_shape = shape_of(node)
    xq = x.q
    assert xq is not None
    cin, cout, kh, kw = w.shape  # torch: [IC, OC, KH, KW]
    wt = w.transpose(1, 2, 3, 0)  # [OC, KH, KW, IC]
    wq, ws = _weight_quant(lw, wt, 0)
    # TOSA out_pad adds to the full transposed-conv output; torch crops `padding` on each side
    # and appends `output_padding` at the end.
    tpad = [-padding[0], -padding[0] + out_pad[0], -padding[1], -padding[1] + out_pad[1]]
    out_nhwc = [out_shape[0], out_shape[2], out_shape[3], out_shape[1]]
    acc = lw.b.transpose_conv2d(lw.nhwc(x), wq, _bias_q(lw, bias, cout, xq, ws), xq.zero_point, tpad,
                                stride, out_nhwc, lw.acc)
    return lw.new_val(out_shape, out_q, "nhwc", _acc_rescale(lw, acc, xq, ws, out_q))


def _fully_connected(lw: Lowerer, node: torch.fx.Node, x: Val, w: np.ndarray, bias: np.ndarray | None) -> Val:
    """x [..., K] @ w[OC, K].T + bias as a 1x1 CONV2D over a [1, M, 1, K] NHWC tensor."""
    out_shape = shape_of(node)
    out_q = lw.out_q(node)
    xq = x.q
    assert xq is not None
    k = x.shape[-1]
    m = int(np.prod(x.shape[:-1])) if x.rank > 1 else 1
    oc = w.shape[0]
    xr = lw.b.reshape(lw.std(x), (1, m, 1, k))
    wq, ws = _weight_quant(lw, w, 0)
    acc = lw.b.conv2d(xr, wq.reshape(oc, 1, 1, k), _bias_q(lw, bias, oc, xq, ws), xq.zero_point,
                      [0, 0, 0, 0], [1, 1], [1, 1], [1, m, 1, oc], lw.acc)
    y = _acc_rescale(lw, acc, xq, ws, out_q)
    return lw.new_val(out_shape, out_q, "std", lw.b.reshape(y, out_shape))


@lowers("aten.linear.default")
def linear(lw: Lowerer, node: torch.fx.Node) -> Val:
    x = lw.val(node.args[0])
    w = lw.const_arg(node.args[1], "linear weight")
    bias = lw.const_arg(node.args[2] if len(node.args) > 2 else node.kwargs.get("bias"), "linear bias")
    assert w is not None
    _record_weight(lw, node.args[1], 0)
    return _fully_connected(lw, node, x, w, bias)


@lowers("aten.addmm.default")
def addmm(lw: Lowerer, node: torch.fx.Node) -> Val:
    bias_arg, a_arg, b_arg = node.args[:3]
    beta = node.kwargs.get("beta", 1)
    alpha = node.kwargs.get("alpha", 1)
    b = lw.val(b_arg)
    if beta != 1 or alpha != 1:
        raise LoweringError("addmm needs beta=1 and alpha=1")
    bias = lw.const_arg(bias_arg, "addmm bias")
    assert bias is not None
    a = lw.val(a_arg)
    if b.const is not None and a.const is None:
        oc = b.const.shape[1]
        _record_weight(lw, b_arg, 1)
        return _fully_connected(lw, node, a, b.const.T, np.broadcast_to(bias, (oc,)).reshape(-1))
    return _matmul(lw, node, a, b, bias)


@lowers("aten.mm.default")
def mm(lw: Lowerer, node: torch.fx.Node) -> Val:
    a, b = lw.val(node.args[0]), lw.val(node.args[1])
    if b.const is not None and a.const is None:
        _record_weight(lw, node.args[1], 1)
        return _fully_connected(lw, node, a, b.const.T, None)
    return _matmul(lw, node, a, b)


@lowers("aten.bmm.default")
def bmm(lw: Lowerer, node: torch.fx.Node) -> Val:
    return _matmul(lw, node, lw.val(node.args[0]), lw.val(node.args[1]))


def _matmul(lw: Lowerer, node: torch.fx.Node, a: Val, b: Val, bias: np.ndarray | None = None) -> Val:
    out_shape = shape_of(node)
    out_q = lw.out_q(node)
    a3 = lw.b.reshape(lw.std(a), (1,) * (3 - a.rank) + a.shape if a.rank < 3 else a.shape)
    b3 = lw.b.reshape(lw.std(b), (1,) * (3 - b.rank) + b.shape if b.rank < 3 else b.shape)
    assert a.q is not None and b.q is not None
    n, h, _ = lw.b.info[a3].shape
    w = lw.b.info[b3].shape[2]
    acc = lw.b.matmul(a3, b3, a.q.zero_point, b.q.zero_point, [n, h, w], lw.acc)
    if bias is not None:
        if lw.acc != "int32":
            raise LoweringError("matmul with bias needs int8 activations")
        bq = np.clip(np.round(np.broadcast_to(bias, (h, w)) / (a.q.scale * b.q.scale)), -(2**31), 2**31 - 1)
        acc = lw.b.elementwise("ADD", acc, lw.b.const(bq.reshape(1, h, w), "int32"), [n, h, w], "int32")
    scale = to_fraction(a.q.scale) * to_fraction(b.q.scale) / to_fraction(out_q.scale)
    y = lw.rescale(acc, [scale], 0, out_q.zero_point, out_q.dtype)
    return lw.new_val(out_shape, out_q, "std", lw.b.reshape(y, out_shape))


@lowers("aten._native_batch_norm_legit_no_training.default")
def batch_norm(lw: Lowerer, node: torch.fx.Node) -> tuple[Val, None, None]:
    x = lw.val(node.args[0])
    w, b, mean, var = (lw.const_arg(a, "batch norm parameter") for a in node.args[1:5])
    eps = float(node.args[6])
    c = x.shape[1]
    assert mean is not None and var is not None
    inv = 1.0 / np.sqrt(var.astype(np.float64) + eps)
    gamma = (w if w is not None else np.ones(c)) * inv
    beta = (b if b is not None else np.zeros(c)) - mean * gamma
    out_q = lw.out_q(node)
    xq = x.q
    assert xq is not None
    shape4 = x.shape if x.rank == 4 else (x.shape[0], c, int(np.prod(x.shape[2:])) if x.rank > 2 else 1, 1)
    if x.rank == 4:
        xn = lw.nhwc(x)
    else:
        xr = lw.b.reshape(lw.std(x), shape4)
        xn = lw.b.transpose(xr, NHWC)
    wts = gamma.reshape(c, 1, 1, 1)
    wq, ws = _weight_quant(lw, wts, 0)
    out_nhwc = [shape4[0], shape4[2], shape4[3], c]
    acc = lw.b.depthwise_conv2d(xn, wq.reshape(1, 1, c, 1), _bias_q(lw, beta, c, xq, ws), xq.zero_point,
                                [0, 0, 0, 0], [1, 1], [1, 1], out_nhwc, lw.acc)
    y = _acc_rescale(lw, acc, xq, ws, out_q)
    if x.rank == 4:
        return (lw.new_val(x.shape, out_q, "nhwc", y), None, None)
    ys = lw.b.reshape(lw.b.transpose(y, NCHW), x.shape)
    return (Val(x.shape, lw.act, out_q, {"std": ys}), None, None)


def _weight_quant(lw: Lowerer, w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    scales = symmetric_weight_scales(w, axis)
    return quantize_weights(w, scales, axis), scales


def _acc_rescale(lw: Lowerer, acc: str, x_q: QParams, w_scales: np.ndarray, out_q: QParams) -> str:
    sx = to_fraction(x_q.scale)
    so = to_fraction(out_q.scale)
    scales = [sx * to_fraction(float(s)) / so for s in w_scales]
    if len(set(scales)) == 1:
        scales = scales[:1]
    return lw.rescale(acc, scales, 0, out_q.zero_point, out_q.dtype)


def _bias_q(lw: Lowerer, bias: np.ndarray | None, oc: int, x_q: QParams, w_scales: np.ndarray) -> np.ndarray:
    b = np.zeros(oc) if bias is None else bias.astype(np.float64).reshape(-1)
    acc_scales = x_q.scale * w_scales
    q = np.round(b / acc_scales)
    if lw.acc == "int32":
        return quantize_bias(b, acc_scales)
    return np.clip(q, -(2**47), 2**47 - 1).astype(np.int64)


def _record_weight(lw: Lowerer, arg: Any, axis: int) -> None:
    """Remember how a weight is quantized, in its torch layout (for the fake-quant reference)."""
    if isinstance(arg, torch.fx.Node):
        w = lw.val(arg).const
        if w is not None:
            scales = symmetric_weight_scales(w, axis)
            lw.weights[arg.name] = QuantWeight(quantize_weights(w, scales, axis), scales, axis)
