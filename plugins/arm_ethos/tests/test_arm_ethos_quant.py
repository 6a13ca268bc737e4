"""Quantization arithmetic: exact multipliers, and TOSA RESCALE semantics on the reference model."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from delegate_sdk_arm_ethos.quant import (
    Multiplier,
    apply_rescale,
    multiplier_shift,
    qparams_from_range,
    quantize_weights,
    symmetric_weight_scales,
)


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.75, 1e-3, 3.3e-7, 123.456, 2**-40, 0.999999999])
def test_multiplier_shift_is_exact_to_the_last_bit(scale):
    m = multiplier_shift(scale)
    assert 2 <= m.shift <= 62
    got = Fraction(m.multiplier, 2**m.shift)
    # round-to-nearest of the 31-bit mantissa: relative error <= 2**-31
    assert abs(got - Fraction(scale)) <= Fraction(scale) * Fraction(1, 2**30)
    if scale >= 2**-31:
        assert 2**30 <= m.multiplier < 2**31


def test_qparams_cover_zero_and_range():
    q = qparams_from_range(0.5, 3.0)  # range is widened to include 0
    assert q.quantize(np.array([0.0]))[0] == q.zero_point
    assert abs(q.dequantize(q.quantize(np.array([3.0])))[0] - 3.0) <= q.scale / 2
    q16 = qparams_from_range(-1.0, 2.0, "int16")
    assert q16.zero_point == 0 and q16.quantize(np.array([2.0]))[0] == 32767


def test_weights_symmetric_per_channel():
    w = np.array([[0.5, -1.0], [0.01, 0.02]])
    s = symmetric_weight_scales(w, 0)
    q = quantize_weights(w, s, 0)
    assert q[0].tolist() == [64, -127] and q[1].tolist() == [64, 127]


def test_rescale_matches_tosa_reference_model():
    """apply_rescale (our model of TOSA RESCALE) agrees bit for bit with the reference model."""
    import tosa_reference_model as rm

    from delegate_sdk_arm_ethos import runtime
    from delegate_sdk_arm_ethos.tosa_builder import TosaBuilder

    rng = np.random.default_rng(0)
    x = rng.integers(-(2**24), 2**24, size=(64,), dtype=np.int32)
    for scale in (Fraction(1, 3), Fraction(7, 1000), 0.0123, 2.5):
        m = multiplier_shift(scale)
        b = TosaBuilder()
        inp = b.input([64], "int32")
        b.mark_output(b.rescale(inp, [m], 0, 0, "int32"))
        outs, status = rm.run(runtime._relabel_for_reference_model(b.serialize()), [x])
        assert status == rm.GraphStatus.TOSA_VALID
        assert np.array_equal(outs[0], apply_rescale(x, m)), scale
    assert isinstance(m, Multiplier)
