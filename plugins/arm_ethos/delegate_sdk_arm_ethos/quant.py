"""Quantization arithmetic: affine parameters from ranges, integer RESCALE multipliers.

Activations are affine per-tensor (int8 asymmetric, int16 symmetric); weights are
symmetric per output channel (int8); biases are int32 in the accumulator's scale.
Multiplier/shift pairs for TOSA RESCALE are derived from exact rationals, so the
integer parameters do not depend on float rounding of the scale product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-128, 127),
    "int16": (-32768, 32767),
    "int32": (-(2**31), 2**31 - 1),
}


@dataclass(frozen=True)
class QParams:
    """real = (q - zero_point) * scale, q in ``dtype``."""

    scale: float
    zero_point: int
    dtype: str = "int8"

    @property
    def qmin(self) -> int:
        return INT_RANGES[self.dtype][0]

    @property
    def qmax(self) -> int:
        return INT_RANGES[self.dtype][1]

    def quantize(self, x: np.ndarray) -> np.ndarray:
        q = np.round(np.asarray(x, dtype=np.float64) / self.scale) + self.zero_point
        q = np.nan_to_num(q, nan=float(self.zero_point), posinf=self.qmax, neginf=self.qmin)
        return np.clip(q, self.qmin, self.qmax).astype(np.dtype(self.dtype))

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return ((q.astype(np.float64) - self.zero_point) * self.scale).astype(np.float32)

    def fake(self, x: np.ndarray) -> np.ndarray:
        return self.dequantize(self.quantize(x))

    def to_json(self) -> dict:
        return {"scale": self.scale, "zero_point": self.zero_point, "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: dict) -> QParams:
        return cls(float(d["scale"]), int(d["zero_point"]), str(d["dtype"]))


def qparams_from_range(lo: float, hi: float, dtype: str = "int8") -> QParams:
    """Affine params covering [lo, hi] and always 0 (so zero padding is exact).

    int8 is asymmetric; int16 is symmetric (TOSA requires zero point 0 for int16
    convolution/matmul inputs, and symmetric int16 loses only one bit of 16).
    """
    lo = min(float(lo), 0.0)
    hi = max(float(hi), 0.0)
    if not math.isfinite(lo) or not math.isfinite(hi):
        raise ValueError(f"calibration range is not finite: [{lo}, {hi}]")
    qmin, qmax = INT_RANGES[dtype]
    if dtype == "int16":
        amax = max(-lo, hi)
        scale = amax / qmax if amax > 0 else 1.0
        return QParams(_clean(scale), 0, dtype)
    if hi - lo <= 0:
        return QParams(1.0, 0, dtype)
    scale = (hi - lo) / (qmax - qmin)
    zp = int(round(qmin - lo / scale))
    zp = max(qmin, min(qmax, zp))
    return QParams(_clean(scale), zp, dtype)


def fixed_qparams(lo: float, hi: float, dtype: str = "int8") -> QParams:
    """Params for a function with a known output range (sigmoid [0,1], tanh [-1,1])."""
    qmin, qmax = INT_RANGES[dtype]
    if dtype == "int16":
        return QParams(max(-lo, hi) / 32768.0, 0, dtype)
    scale = (hi - lo) / (qmax - qmin + 1)  # 1/256 for [0,1], like TFLite
    return QParams(scale, int(round(qmin - lo / scale)), dtype)


#: the smallest activation scale, float32's epsilon as in PyTorch's observers. A smaller one (a range of
#: 1e-19, as the vanishing features of a random-weight EfficientNet give) puts a layer's bias out of int32
#: range (bias / (input scale * weight scale)), and the clipped bias turned its output to zeros.
MIN_SCALE = float(np.finfo(np.float32).eps)


def _clean(scale: float) -> float:
    return max(float(scale), MIN_SCALE)


def symmetric_weight_scales(w: np.ndarray, axis: int, bits: int = 8) -> np.ndarray:
    """Per-channel symmetric scales along ``axis`` (all-zero channels get scale 1)."""
    qmax = 2 ** (bits - 1) - 1
    red = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w.astype(np.float64)).max(axis=red) if w.size else np.zeros(w.shape[axis])
    scales = np.where(amax > 0, amax / qmax, 1.0)
    return scales.astype(np.float64)


def quantize_weights(w: np.ndarray, scales: np.ndarray, axis: int, bits: int = 8) -> np.ndarray:
    qmax = 2 ** (bits - 1) - 1
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.round(w.astype(np.float64) / scales.reshape(shape))
    return np.clip(q, -qmax, qmax).astype(np.int8)


def quantize_bias(b: np.ndarray, acc_scales: np.ndarray) -> np.ndarray:
    q = np.round(b.astype(np.float64) / acc_scales)
    return np.clip(q, INT_RANGES["int32"][0], INT_RANGES["int32"][1]).astype(np.int32)


@dataclass(frozen=True)
class Multiplier:
    """A TOSA RESCALE scale: real ~= multiplier * 2**-shift."""

    multiplier: int
    shift: int


def to_fraction(x: float | Fraction) -> Fraction:
    return x if isinstance(x, Fraction) else Fraction(float(x))


def multiplier_shift(scale: float | Fraction, bits: int = 32) -> Multiplier:
    """Integer (multiplier, shift) with multiplier in [2**(bits-2), 2**(bits-1)) and shift in [2, 62].

    Computed on exact rationals: scale = m * 2**e with m in [0.5, 1), multiplier =
    round(m * 2**(bits-1)), shift = bits - 1 - e. Scales too small for shift 62 are
    represented with a smaller multiplier (precision degrades gracefully to 0);
    scales too large for shift 2 raise (they mean a broken quantization plan).
    """
    s = to_fraction(scale)
    if s < 0:
        raise ValueError(f"negative rescale factor {float(s)}")
    if s == 0:
        return Multiplier(0, 2)
    top = bits - 1
    # exponent e with s = m * 2**e, m in [1/2, 1)
    e = s.numerator.bit_length() - s.denominator.bit_length()
    while s / (Fraction(2) ** e) >= 1:
        e += 1
    while s / (Fraction(2) ** e) < Fraction(1, 2):
        e -= 1
    mant = s / (Fraction(2) ** e)
    mult = _round_half_up(mant * (1 << top))
    if mult == (1 << top):
        mult //= 2
        e += 1
    shift = top - e
    if shift > 62:
        # scale below 2**-(62-top+1): drop multiplier bits instead of overflowing the shift
        mult = _round_half_up(Fraction(mult, 1 << (shift - 62)))
        shift = 62
    if shift < 2:
        raise ValueError(f"rescale factor {float(s):g} is too large for a {bits}-bit RESCALE")
    return Multiplier(int(mult), int(shift))


def _round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def apply_rescale(values: np.ndarray, m: Multiplier) -> np.ndarray:
    """What TOSA RESCALE (single round) does to int64 values: (v*M + 2**(s-1)) >> s."""
    v = values.astype(np.int64)
    return (v * m.multiplier + (1 << (m.shift - 1))) >> m.shift
