"""Numerics of every lowered op on the TOSA reference model, against eager PyTorch.

Errors are in output quantization steps (LSB) of the scale the plugin reports.
The fake-quant reference (the float graph with the plugin's quantization made
explicit) separates the quantization error, which int8 cannot avoid, from the
lowering's own integer error; the latter must stay within 1 LSB.
"""

from __future__ import annotations

import pytest
import torch
from arm_ethos_cases import cases, u85_cases

CASES = cases()
# Tolerances in output LSB. Quantizing the inputs alone costs up to |f'| * s_in / s_out / 2 steps,
# which exceeds 2 for functions steeper than their output grid (tanh: s_out = 1/128).
EAGER_LSB = {"tanh": 3.0, "exp": 2.5, "erfinv": 2.5}
FAST = ["conv2d", "linear", "add", "mul", "relu", "sigmoid", "max_pool2d", "avg_pool2d", "mean_hw", "cat",
        "permute", "mm", "batch_norm", "upsample_nearest2x"]


def _check(name, ref_run):
    module, args = CASES[name]
    r = ref_run(module, args)
    assert not r.refused, f"{name}: refused {r.refused}"
    assert r.lsb_ref <= 1.001, f"{name}: {r.lsb_ref:.2f} LSB from the fake-quant reference ({r.op_counts})"
    assert r.lsb_eager <= EAGER_LSB.get(name, 2.0), f"{name}: {r.lsb_eager:.2f} LSB from eager"
    assert r.lsb_eager <= r.lsb_ref_eager + 1.001


@pytest.mark.parametrize("name", FAST)
def test_op_matches_eager_on_reference_model(name, ref_run):
    _check(name, ref_run)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(CASES) - set(FAST)))
def test_every_op_matches_eager_on_reference_model(name, ref_run):
    _check(name, ref_run)


A16W8_REF_LSB: dict[str, float] = {}


@pytest.mark.parametrize("name", ["conv2d", "linear", "add", "sigmoid", "tanh", "gelu", "exp", "avg_pool2d", "mm",
                                  "batch_norm", "upsample_nearest2x"])
def test_a16w8_matches_eager(name, ref_run):
    module, args = CASES[name]
    r = ref_run(module, args, precision="a16w8", target="ethos-u85-256")
    assert not r.refused, r.refused
    assert r.lsb_ref <= A16W8_REF_LSB.get(name, 1.0) + 0.001
    # int16 steps are 256x finer; input quantization still dominates, so judge relative to it
    assert r.lsb_eager <= r.lsb_ref_eager + A16W8_REF_LSB.get(name, 1.0) + 0.001


def test_small_net_chain_matches_eager(ref_run):
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1, groups=8), torch.nn.Hardswish(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 4))
    x = torch.randn(1, 3, 16, 16)
    r = ref_run(net, (x,))
    assert r.lsb_ref <= 1.5
    assert r.lsb_eager <= 4.0, r  # errors of 6 requantizations add up
    # one transpose in, one reshape out: the NHWC chain is not broken by layout changes
    assert r.op_counts.get("TRANSPOSE", 0) <= 2


U85_CASES = u85_cases()


@pytest.mark.parametrize("name", sorted(U85_CASES))
def test_u85_bool_ops_match_reference(name, ref_run):
    """Comparisons see the quantized inputs: elements within half a step of a threshold may flip, so
    these are judged against the fake-quant reference (exact) rather than eager."""
    module, args = U85_CASES[name]
    r = ref_run(module, args, target="ethos-u85-256")
    assert not r.refused, r.refused
    assert r.lsb_ref <= 1.001
