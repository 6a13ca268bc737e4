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


def _conv_bn_relu():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 16, 3, padding=1)
            self.bn = nn.BatchNorm2d(16)
            self.head = nn.Conv2d(16, 4, 1)

        def forward(self, x):
            return self.head(torch.relu(self.bn(self.conv(x))))

    torch.manual_seed(0)
    m = Block().eval()
    with torch.no_grad():
        # channels whose scales differ by 100x before the norm, as after a randomly initialised conv
        m.conv.weight.mul_(torch.logspace(-1, 1, 16).reshape(-1, 1, 1, 1))
        y = m.conv(torch.randn(64, 8, 8, 8))
        m.bn.running_mean.copy_(y.mean((0, 2, 3)))
        m.bn.running_var.copy_(y.var((0, 2, 3)))
    return m


def test_batch_norm_folds_into_the_convolution_before_it():
    import torch

    from delegate_sdk import testing
    from delegate_sdk_arm_ethos.graph_eval import evaluate, graph_inputs, output_nodes
    from delegate_sdk_arm_ethos.lowering.batch_norm_folding import fold_batch_norms

    m = _conv_bn_relu()
    x = torch.randn(1, 8, 8, 8)
    program = testing.claim("arm_ethos", m, (x,)).program
    folded, names = fold_batch_norms(program)
    ops = [str(n.target) for n in folded.graph.nodes if n.op == "call_function"]
    assert not any("batch_norm" in op for op in ops) and ops.count("aten.convolution.default") == 2
    assert any("batch_norm" in str(n.target) for n in program.graph.nodes), "the caller's program was changed"
    ((conv, gone),) = names.items()
    assert conv == "convolution" and gone[0].startswith("_native_batch_norm")
    gi = graph_inputs(folded)
    out = evaluate(folded, gi, (x,))[output_nodes(folded)[0].name]
    torch.testing.assert_close(out, m(x).detach(), rtol=1e-5, atol=1e-5)


def test_a_convolution_with_another_user_keeps_its_batch_norm():
    import torch
    from torch import nn

    from delegate_sdk import testing
    from delegate_sdk_arm_ethos.lowering.batch_norm_folding import fold_batch_norms

    class TwoUsers(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    program = testing.claim("arm_ethos", TwoUsers().eval(), (torch.randn(1, 3, 4, 4),)).program
    folded, names = fold_batch_norms(program)
    assert folded is program and names == {}


@pytest.mark.slow
def test_conv_batch_norm_relu_keeps_the_accuracy_of_its_folded_form():
    """Quantizing the convolution's output before batch norm evened its channels out cost this block
    24 dB (12.0 dB instead of 36.5), and mobilenet_v3_small fell to 6.5 dB."""
    import torch

    from arm_ethos_helpers import run_on_reference_model

    m = _conv_bn_relu()
    x = torch.randn(1, 8, 8, 8)
    r = run_on_reference_model(m, (x,))
    assert "DEPTHWISE_CONV2D" not in r.op_counts and r.op_counts["CONV2D"] == 2
    assert r.sqnr_db >= 30 and r.lsb_ref <= 1.001, (r.sqnr_db, r.lsb_ref)


@pytest.mark.slow
def test_an_op_followed_by_relu_is_quantized_in_the_relu_range():
    """relu keeps its input's quantization; on the range of the linear before it, half the codes went to
    the negatives relu removes."""
    import torch
    from torch import nn

    from delegate_sdk import testing
    from delegate_sdk_arm_ethos.compiler import quantize_and_lower

    from arm_ethos_helpers import calibration

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    x = torch.randn(4, 32)
    program = testing.claim("arm_ethos", m, (x,)).program
    q = quantize_and_lower(program, "int8", calibration((x,))).lowered.node_q
    assert q["linear"] == q["relu"] and q["relu"].zero_point == -128, q
