"""int8: quantized with the XNNPACK quantizer on calibration inputs, run on XNNPACK's int8 kernels.

Two checks per case, both in output quantization steps (LSB = the output scale
the plugin reports):
- vs the fake-quant model (the same q/dq graph run by eager PyTorch): <= 1 LSB,
  i.e. XNNPACK's integer kernels compute what the quantized model says;
- vs the float model in eager PyTorch: within a few LSB (quantization error,
  which grows with depth: the bound is stated per case).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from delegate_sdk_xnnpack import compiler
from delegate_sdk_xnnpack.testing import capture, eager, lower_and_run
from torch import nn

from delegate_sdk.conformance.cases import FunctionModule as Fn
from delegate_sdk.testing import check_side_by_side

pytestmark = pytest.mark.slow

torch.manual_seed(0)  # weights and inputs of CASES are built at import


def r(*shape: int) -> torch.Tensor:
    return torch.randn(shape)


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
    return bn


class ConvBnReluPoolAdd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn = nn.Conv2d(3, 8, 3, padding=1), _bn(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.max_pool2d(torch.relu(self.bn(self.c1(x))), 2)
        return torch.relu(y + self.c2(y))


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class TinyCnn(nn.Module):
    """conv -> relu6 -> depthwise -> global pool -> flatten -> linear: a mobile-style classifier head."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.dw(F.relu6(self.c(x))))
        return self.fc(y.mean((2, 3), keepdim=True).flatten(1))


# id -> (module, example args, max LSB vs eager float): 3 for conv/linear (input and weight rounding add up),
# 2 for elementwise ops, 1 for ops that move int8 data unchanged, more for nets
CASES: dict[str, tuple[nn.Module, tuple[torch.Tensor, ...], float]] = {
    "conv2d": (nn.Conv2d(3, 8, 3, padding=1), (r(1, 3, 8, 8),), 3),
    "conv2d_relu": (nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), (r(1, 3, 8, 8),), 3),
    "conv2d_depthwise": (nn.Conv2d(4, 4, 3, groups=4), (r(1, 4, 8, 8),), 3),
    "conv1d": (nn.Conv1d(3, 4, 3), (r(1, 3, 10),), 3),
    "conv_transpose2d": (nn.ConvTranspose2d(3, 4, 3, stride=2), (r(1, 3, 5, 5),), 3),
    "conv_bn": (nn.Sequential(nn.Conv2d(3, 8, 3), _bn(8)), (r(1, 3, 8, 8),), 3),
    "linear": (nn.Linear(16, 8), (r(4, 16),), 3),
    "linear_3d": (nn.Linear(16, 8), (r(2, 3, 16),), 3),
    "linear_relu": (nn.Sequential(nn.Linear(16, 8), nn.ReLU()), (r(4, 16),), 3),
    "add": (Fn(torch.add), (r(2, 3, 4), r(2, 3, 4)), 2),
    "add_relu": (Fn(lambda a, b: torch.relu(a + b)), (r(2, 3, 4), r(4)), 2),
    "sub": (Fn(torch.sub), (r(2, 3, 4), r(2, 3, 4)), 2),
    "sub_scalar": (Fn(lambda x: x - 0.5), (r(2, 3, 4),), 2),
    "mul": (Fn(torch.mul), (r(2, 3, 4), r(2, 3, 4)), 2),
    "mul_scalar": (Fn(lambda x: x * 3), (r(2, 3, 4),), 2),
    "relu": (nn.ReLU(), (r(2, 3, 4),), 1),
    "hardtanh": (nn.ReLU6(), (r(2, 3, 4) * 4,), 1),
    "clamp": (Fn(lambda x: x.clamp(-0.5, 1.0)), (r(2, 3, 4),), 1),
    "max_pool2d": (nn.MaxPool2d(2), (r(1, 3, 8, 8),), 1),
    "mean_hw": (Fn(lambda x: x.mean((2, 3), keepdim=True)), (r(1, 3, 8, 8),), 1),
    "cat": (Fn(lambda a, b: torch.cat([a, b], 1)), (r(2, 3), r(2, 5)), 1),
    "view": (Fn(lambda x: x.reshape(2, -1)), (r(2, 3, 4),), 1),
    "permute": (Fn(lambda x: x.permute(0, 2, 1)), (r(2, 3, 4),), 1),
    "slice": (Fn(lambda x: x[:, 1:3]), (r(2, 8),), 1),
    "squeeze": (Fn(lambda x: x.squeeze(1)), (r(2, 1, 3),), 1),
    "conv_bn_relu_pool_add": (ConvBnReluPoolAdd(), (r(1, 3, 16, 16),), 6),
    # TF-style padding between convolutions (transformers' MobileNetV2): the float pad stays inside the int8 graph
    "conv_pad_conv": (nn.Sequential(nn.Conv2d(3, 8, 3), Fn(lambda x: F.pad(x, (0, 1, 0, 1))),
                                    nn.Conv2d(8, 8, 3, stride=2)), (r(1, 3, 9, 9),), 6),
    # a pad that starts or ends a partition: without its own annotation it stayed float (no output scale)
    "pad": (Fn(lambda x: F.pad(x, (1, 2, 0, 1))), (r(1, 3, 6, 6),), 1),
    "conv_pad": (nn.Sequential(nn.Conv2d(3, 8, 3), Fn(lambda x: F.pad(x, (1, 1, 1, 1)))), (r(1, 3, 8, 8),), 3),
    "mlp": (Mlp(), (r(4, 16),), 4),
    "tiny_cnn": (TinyCnn(), (r(1, 3, 16, 16),), 6),
}


def _calibration(args: tuple[torch.Tensor, ...], n: int = 16) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(1)
    return [tuple(torch.randn(a.shape, generator=g) * a.std() for a in args) for _ in range(n)] + [args]


#: cases lowered together (one quantization and ExecuTorch lowering per group), each judged on its own outputs
GROUP_SIZE = 10
GROUPS = [list(CASES)[i:i + GROUP_SIZE] for i in range(0, len(CASES), GROUP_SIZE)]


def _int8_run(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[Any, list[torch.Tensor], list[torch.Tensor]]:
    """The int8 lowering's outputs, the fake-quant model's (same q/dq graph in eager PyTorch) and eager's."""
    module = module.eval()
    calib = _calibration(args)
    run = lower_and_run(module, args, precision="int8", calibration=calib)
    quant = run.compiled.output_quant
    assert len(quant) == len(run.outputs) and all(q is not None and q.dtype == "int8" for q in quant)
    assert run.compiled.op_counts.get("quantize_per_tensor.default", 0) >= 1
    assert run.compiled.meta["output_quant"] == [q.to_json() for q in quant]
    fake_quant = compiler.quantized_module(capture(module, args), calib)
    with torch.no_grad():
        fq = fake_quant(*args)
    return run, list(fq) if isinstance(fq, (tuple, list)) else [fq], eager(module, args)


def _judge(name: str, result: tuple[Any, list[torch.Tensor], list[torch.Tensor]], outputs: range) -> list[str]:
    run, fq, ref = result
    max_lsb = CASES[name][2]
    problems = []
    for i in outputs:
        got, q = run.outputs[i], run.compiled.output_quant[i]
        if got.dtype != torch.float32 or got.shape != ref[i].shape:
            problems.append(f"{name}: {got.dtype} {tuple(got.shape)}, eager {tuple(ref[i].shape)}")
            continue
        lsb_fq = float((got - fq[i]).abs().max()) / q.scale
        lsb = float((got - ref[i]).abs().max()) / q.scale
        if not lsb_fq <= 1.0 + 1e-3:
            problems.append(f"{name}: {lsb_fq:.2f} LSB from the fake-quant model")
        if not lsb <= max_lsb:
            problems.append(f"{name}: {lsb:.2f} LSB from eager float (bound {max_lsb})")
    return problems


@pytest.mark.parametrize("names", GROUPS, ids=[f"{g[0]}..{g[-1]}" for g in GROUPS])
def test_int8_matches_fake_quant_and_eager(names):
    problems = check_side_by_side({n: CASES[n][:2] for n in names}, _int8_run, _judge)
    assert not problems, "\n".join(problems)


def test_int8_decomposed_linear_and_pool():
    """addmm/permute and max_pool2d_with_indices (no keep_ops) quantize and lower like linear / max_pool2d."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 5)).eval()
    args = (r(1, 3, 8, 8),)
    calib = _calibration(args)
    run = lower_and_run(net, args, precision="int8", calibration=calib, keep_ops=())
    assert run.compiled.op_counts.get("linear.default") == 1 and run.compiled.op_counts.get("max_pool2d.default") == 1
    lsb = float((run.outputs[0] - eager(net, args)[0]).abs().max()) / run.compiled.output_quant[0].scale
    assert lsb <= 4


def test_int8_without_calibration_is_a_clear_error():
    ep = capture(nn.Linear(4, 4), (r(2, 4),))
    from delegate_sdk_xnnpack import plugin

    with pytest.raises(ValueError, match="calibration"):
        plugin.preprocess(ep, {"precision": "int8", "num_threads": 0}, None)
    with pytest.raises(ValueError, match="has 2 tensors"):
        plugin.preprocess(ep, {"precision": "int8", "num_threads": 0}, [(r(2, 4), r(2, 4))])


class AdaptivePoolHead(nn.Module):
    """The most common CNN ending: nn.AdaptiveAvgPool2d(1) -> flatten -> linear (resnet, squeezenet, mobilenet)."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.bn = nn.Conv2d(3, 16, 3, padding=1), _bn(16)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.c(x)))), 1))


def test_a_global_average_pool_from_nn_adaptive_avg_pool2d_lowers_at_int8():
    """Core ATen spells it mean.dim; the stock annotator found its nn.AdaptiveAvgPool2d source and refused."""
    import delegate_sdk
    from delegate_sdk.conformance.tolerance import sqnr_db

    torch.manual_seed(1)
    model, x = AdaptivePoolHead().eval(), r(1, 3, 16, 16)
    calib = [(r(1, 3, 16, 16),) for _ in range(8)]
    prog = delegate_sdk.lower(model, (x,), ["xnnpack"], options={"xnnpack": {"precision": "int8"}},
                              calibration=calib)
    s = prog.summary()
    assert s.nodes_delegated == s.nodes_total and "aten.mean.dim" in s.partitions[0].ops
    with torch.no_grad():
        assert sqnr_db(model(x), prog(x)) > 20
