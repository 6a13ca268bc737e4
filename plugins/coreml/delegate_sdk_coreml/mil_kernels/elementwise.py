"""Element-wise MIL ops: arithmetic and comparisons (numpy broadcasting, as in MIL), math, activations, cast."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from delegate_sdk_coreml.mil_errors import MILError
from delegate_sdk_coreml.mil_kernels.common import CAST_DTYPES, resolve_axis, widen
from delegate_sdk_coreml.mil_kernels.registry import Args, Kernel, kernel

# --- element-wise binary ops: numpy broadcasting, as in MIL


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Kernel:
    def run(a: Args) -> np.ndarray:
        x, y = np.asarray(a["x"]), np.asarray(a["y"])
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            return fn(widen(x), widen(y))
        return fn(x, y)

    return run


def _floor_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if x.dtype.kind in "iu" and y.dtype.kind in "iu" and np.any(y == 0):
        raise MILError("integer floor_div by zero")
    # the op definition's value inference is Python's //: floor of the exact quotient, inf // y is NaN
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.floor_divide(x, y)


def _mod(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if x.dtype.kind in "iu" and y.dtype.kind in "iu" and np.any(y == 0):
        raise MILError("integer mod by zero")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.mod(x, y)


def _real_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        if x.dtype.kind in "iu" and y.dtype.kind in "iu":
            # MIL real_div on integers keeps the integer type: rounds toward zero like C
            return np.trunc(x.astype(np.float64) / y.astype(np.float64))
        return np.true_divide(x, y)


def _pow(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        if x.dtype.kind in "iu" and y.dtype.kind in "iu":
            return np.power(x.astype(np.float64), y.astype(np.float64))
        return np.power(x, y)


def _errstate(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def run(*args: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return fn(*args)

    return run


for _name, _op in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("real_div", _real_div),
                  ("floor_div", _floor_div), ("mod", _mod), ("pow", _pow), ("maximum", np.maximum),
                  ("minimum", np.minimum), ("equal", np.equal), ("not_equal", np.not_equal), ("less", np.less),
                  ("less_equal", np.less_equal), ("greater", np.greater), ("greater_equal", np.greater_equal),
                  ("logical_and", np.logical_and), ("logical_or", np.logical_or), ("logical_xor", np.logical_xor)):
    kernel(_name)(_binary(_op))


# --- element-wise unary ops


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Kernel:
    safe = _errstate(fn)

    def run(a: Args) -> np.ndarray:
        return safe(widen(a["x"]))

    return run


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64)) if x.size else x.astype(np.float64)


@kernel("gelu")
def _gelu(a: Args) -> np.ndarray:
    x = widen(a["x"]).astype(np.float64)
    mode = a.str("mode", "EXACT")
    if mode == "EXACT":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1.0 + np.exp(-1.702 * x))
    raise MILError(f"gelu mode {mode!r} is not one of EXACT, TANH_APPROXIMATION, SIGMOID_APPROXIMATION")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _round_half_even(x: np.ndarray) -> np.ndarray:
    return np.round(x)


for _name, _op in (("abs", np.abs), ("acos", np.arccos), ("asin", np.arcsin), ("atan", np.arctan),
                  ("atanh", np.arctanh), ("ceil", np.ceil), ("cos", np.cos), ("cosh", np.cosh), ("erf", _erf),
                  ("exp", np.exp), ("exp2", np.exp2), ("floor", np.floor), ("round", _round_half_even),
                  ("sign", np.sign), ("sin", np.sin), ("sinh", np.sinh), ("sqrt", np.sqrt), ("square", np.square),
                  ("tan", np.tan), ("tanh", np.tanh), ("relu", lambda x: np.maximum(x, 0).astype(x.dtype)),
                  ("relu6", lambda x: np.clip(x, 0, 6).astype(x.dtype)), ("sigmoid", _sigmoid),
                  ("silu", lambda x: x * _sigmoid(x)), ("softplus", lambda x: np.logaddexp(0, x)),
                  ("softsign", lambda x: x / (1 + np.abs(x))), ("logical_not", np.logical_not)):
    kernel(_name)(_unary(_op))


@kernel("identity")
def _identity(a: Args) -> np.ndarray:
    return np.array(a["x"], copy=True)


@kernel("inverse")
def _inverse(a: Args) -> np.ndarray:
    x = widen(a["x"])
    with np.errstate(divide="ignore"):
        return 1.0 / (x + np.asarray(a.float("epsilon", 1e-4), dtype=x.dtype))


@kernel("log")
def _log(a: Args) -> np.ndarray:
    x = widen(a["x"])
    # the epsilon is a value of the op's dtype: 1e-45 becomes 0 in an fp16 program
    eps = np.asarray(a.get("epsilon", np.float32(1e-45))).astype(np.asarray(a["x"]).dtype).astype(x.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x + eps)


@kernel("rsqrt")
def _rsqrt(a: Args) -> np.ndarray:
    x = widen(a["x"])
    eps = np.asarray(a.get("epsilon", np.float32(1e-12))).astype(np.asarray(a["x"]).dtype).astype(x.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / np.sqrt(x + eps)


@kernel("clip")
def _clip(a: Args) -> np.ndarray:
    return np.minimum(np.maximum(widen(a["x"]), widen(a["alpha"])), widen(a["beta"]))


@kernel("threshold")
def _threshold(a: Args) -> np.ndarray:
    return np.maximum(widen(a["x"]), widen(a["alpha"]))


@kernel("leaky_relu")
def _leaky_relu(a: Args) -> np.ndarray:
    x = widen(a["x"])
    return np.where(x >= 0, x, x * a.float("alpha", 0.01))


@kernel("elu")
def _elu(a: Args) -> np.ndarray:
    x = widen(a["x"])
    with np.errstate(over="ignore"):
        return np.where(x > 0, x, a.float("alpha", 1.0) * np.expm1(np.minimum(x, 0)))


@kernel("clamped_relu")
def _clamped_relu(a: Args) -> np.ndarray:
    x = widen(a["x"])
    return np.minimum(np.where(x >= 0, x, x * a.float("alpha", 0.0)), a.float("beta", 6.0))


@kernel("sigmoid_hard")
def _sigmoid_hard(a: Args) -> np.ndarray:
    x = widen(a["x"])
    return np.clip(a.float("alpha", 0.2) * x + a.float("beta", 0.5), 0.0, 1.0)


@kernel("linear_activation")
def _linear_activation(a: Args) -> np.ndarray:
    return a.float("alpha", 1.0) * widen(a["x"]) + a.float("beta", 0.0)


@kernel("scaled_tanh")
def _scaled_tanh(a: Args) -> np.ndarray:
    return a.float("alpha", 1.0) * np.tanh(a.float("beta", 1.0) * widen(a["x"]))


@kernel("thresholded_relu")
def _thresholded_relu(a: Args) -> np.ndarray:
    x = widen(a["x"])
    return np.where(x > a.float("alpha", 1.0), x, 0).astype(x.dtype)


@kernel("softplus_parametric")
def _softplus_parametric(a: Args) -> np.ndarray:
    x = widen(a["x"])
    alpha, beta = _channel_param(widen(a["alpha"]), x), _channel_param(widen(a["beta"]), x)
    return alpha * np.logaddexp(0, beta * x)


def _channel_param(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A per-channel (axis 1) parameter, shaped to broadcast against ``x``."""
    p = np.asarray(p).reshape(-1)
    if p.size == 1:
        return p.reshape(())
    return p.reshape((1, -1) + (1,) * (x.ndim - 2))


@kernel("prelu")
def _prelu(a: Args) -> np.ndarray:
    x = widen(a["x"])
    alpha = _channel_param(widen(a["alpha"]), x)
    return np.where(x >= 0, x, x * alpha)


@kernel("softmax")
def _softmax(a: Args) -> np.ndarray:
    x = widen(a["x"])
    axis = resolve_axis(a.int("axis", -1), x.ndim)
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        e = np.exp(x - m)
        return e / np.sum(e, axis=axis, keepdims=True)


@kernel("cast")
def _cast(a: Args) -> np.ndarray:
    dtype = a.str("dtype", "fp32")
    if dtype not in CAST_DTYPES:
        raise MILError(f"cast to {dtype!r} is not supported")
    x = np.asarray(a["x"])
    target = np.dtype(CAST_DTYPES[dtype])
    with np.errstate(invalid="ignore", over="ignore"):
        if target.kind in "iu" and x.dtype.kind == "f":
            # float -> int rounds toward zero; out-of-range values saturate rather than wrap
            info = np.iinfo(target)
            x = np.clip(np.nan_to_num(np.trunc(x.astype(np.float64))), info.min, info.max)
        return x.astype(target)


@kernel("select")
def _select(a: Args) -> np.ndarray:
    cond = np.asarray(a["cond"]).astype(bool)
    x, y = np.asarray(a["a"]), np.asarray(a["b"])
    return np.where(cond, x, y)
