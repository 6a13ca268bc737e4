"""The claim rules match Vela: every claimed op compiles, and what the rules refuse Vela indeed refuses.

Vela has no CPU fallback for TOSA input, so a claimed op that Vela rejects
would make its whole partition fail to compile.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from arm_ethos_cases import Fn, cases, u85_cases

from delegate_sdk import testing
from delegate_sdk_arm_ethos import plugin
from delegate_sdk_arm_ethos.compiler import quantize_and_lower
from delegate_sdk_arm_ethos.options import resolve
from delegate_sdk_arm_ethos.vela import VelaError, compile_tosa

CASES = cases()
TARGETS = ["ethos-u55-128", "ethos-u85-256"]


def _compile(ep, target: str, precision: str, calib):
    t = resolve({"target": target})
    low = quantize_and_lower(ep, precision, calib).lowered
    return compile_tosa(low.tosa, t.accelerator, t.system_config, t.memory_mode)


#: ops compiled together: one capture, quantization and Vela run per group instead of per op (torch's
#: decomposition and Vela's start-up are most of a one-op compile); a failing group is retried op by op
GROUP_SIZE = 12
GROUPS = [sorted(CASES)[i:i + GROUP_SIZE] for i in range(0, len(CASES), GROUP_SIZE)]


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("names", GROUPS, ids=[f"{g[0]}..{g[-1]}" for g in GROUPS])
def test_claimed_ops_compile_with_vela(names, target, exported, opts):
    from arm_ethos_helpers import calibration

    def compile_on_npu(module, args):
        ep = exported(module, args)
        claims = plugin.claim(ep, testing.candidates(ep), opts(target))
        assert not claims.refused, f"refused: {claims.refused}"
        v = _compile(ep, target, "int8", calibration(args))
        assert v.cpu_ops == 0 and v.npu_ops and v.npu_ops > 0, f"cpu_ops={v.cpu_ops} npu_ops={v.npu_ops}"
        assert v.cycles and v.cycles > 0 and v.cmd_bytes > 0, f"cycles={v.cycles} cmd_bytes={v.cmd_bytes}"
        return v

    problems = testing.check_side_by_side({n: CASES[n] for n in names}, compile_on_npu, lambda *_: [])
    assert not problems, "\n".join(problems)


A16W8 = ["conv2d", "conv2d_depthwise", "linear", "batch_norm", "add", "mul", "relu", "max_pool2d", "avg_pool2d",
         "mean_hw", "mean_last", "cat", "permute", "slice", "pad", "upsample_nearest2x", "sigmoid", "mm",
         "conv_transpose2d", "softmax"]


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", A16W8)
def test_a16w8_claims_match_vela(name, target, exported, opts):
    """At a16w8, whatever the rules claim compiles; whatever they refuse, Vela refuses too."""
    from arm_ethos_helpers import calibration

    module, args = CASES[name]
    ep = exported(module, args)
    claims = plugin.claim(ep, testing.candidates(ep), opts(target, "a16w8"))
    if claims.refused:
        if name in ("sigmoid", "softmax"):  # Vela 5.2 compiles int16 TABLE but documents it unsupported on U55
            return
        with pytest.raises(VelaError):
            _compile(ep, target, "a16w8", calibration(args))
    else:
        v = _compile(ep, target, "a16w8", calibration(args))
        assert v.cpu_ops == 0


REFUSED_ON_U55 = {
    "upsample_nearest3x": (Fn(lambda a: F.interpolate(a, scale_factor=3)), (torch.randn(1, 4, 6, 6),)),
    "upsample_nearest_1x2": (Fn(lambda a: F.interpolate(a, scale_factor=(1, 2))), (torch.randn(1, 4, 6, 6),)),
    "depthwise_stride4": (nn.Conv2d(4, 4, 3, stride=4, groups=4), (torch.randn(1, 4, 16, 16),)),
    "avg_pool_padded_9x9": (Fn(lambda a: F.avg_pool2d(a, 9, 1, 4, count_include_pad=False)),
                            (torch.randn(1, 4, 16, 16),)),
    "upsample_nearest_batch2": (Fn(lambda a: F.interpolate(a, scale_factor=2)), (torch.randn(2, 4, 6, 6),)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFUSED_ON_U55))
def test_u55_refusals_are_real(name, exported, opts):
    """Lowered anyway, these fail in Vela for ethos-u55-128 and compile for ethos-u85-256."""
    from arm_ethos_helpers import calibration

    module, args = REFUSED_ON_U55[name]
    ep = exported(module, args)
    refused = plugin.claim(ep, testing.candidates(ep), opts("ethos-u55-128")).refused
    assert refused and refused[0].code.value in ("attr", "shape")
    with pytest.raises(VelaError, match="could not run on NPU"):
        _compile(ep, "ethos-u55-128", "int8", calibration(args))
    if name == "avg_pool_padded_9x9" or name == "depthwise_stride4":
        return  # also outside the documented limits the rules apply to every target
    assert not plugin.claim(ep, testing.candidates(ep), opts("ethos-u85-256")).refused
    assert _compile(ep, "ethos-u85-256", "int8", calibration(args)).cpu_ops == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(u85_cases()))
def test_u85_only_ops_compile_and_are_refused_on_u55(name, exported, opts):
    from arm_ethos_helpers import calibration

    module, args = u85_cases()[name]
    ep = exported(module, args)
    assert not plugin.claim(ep, testing.candidates(ep), opts("ethos-u85-256")).refused
    assert _compile(ep, "ethos-u85-256", "int8", calibration(args)).cpu_ops == 0
    refused = plugin.claim(ep, testing.candidates(ep), opts("ethos-u55-128")).refused
    assert refused and all(r.code.value in ("op", "dtype") for r in refused)
