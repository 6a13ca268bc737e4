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


@pytest.mark.slow
def test_a_vanishing_input_keeps_the_bias():
    """Inputs near 1e-19 (a random-weight EfficientNet's pooled features): the output is the bias. A scale
    that small put the int32 bias out of range, and the clipped bias gave zeros."""
    import torch

    import delegate_sdk

    torch.manual_seed(0)
    fc = torch.nn.Linear(32, 10).eval()
    x = torch.randn(1, 32) * 1e-19
    prog = delegate_sdk.lower(fc, (x,), ["arm_ethos"], calibration=[(torch.randn(1, 32) * 1e-19,) for _ in range(4)])
    assert prog.summary().partitions[0].backend == "arm_ethos"
    with torch.no_grad():
        out, ref = prog(x), fc(x)
    assert float((out - ref).abs().max()) <= 0.02 * float(ref.abs().max()), (out, ref)


@pytest.mark.slow
def test_a_convolution_with_one_padding_for_both_dims_lowers():
    """``padding="valid"`` exports as ``padding=[0]`` (one value for both spatial dims), as in EfficientNet."""
    import torch

    import delegate_sdk

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding="valid").eval()
    calib = [(torch.randn(1, 3, 8, 8),) for _ in range(4)]
    x = calib[0][0]  # inside the calibrated range: what is left is rounding
    prog = delegate_sdk.lower(conv, (x,), ["arm_ethos"], calibration=calib)
    assert [p.backend for p in prog.summary().partitions] == ["arm_ethos"]
    with torch.no_grad():
        out, ref = prog(x), conv(x)
    assert out.shape == ref.shape and float((out - ref).abs().max()) <= 0.05 * float(ref.abs().max())
