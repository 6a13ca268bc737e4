"""int8 static quantization of one partition with the XNNPACK quantizer (pt2e flow).

Scheme (the XNNPACK quantizer's symmetric config, per channel): weights int8
symmetric per output channel in [-127, 127]; activations int8 asymmetric per
tensor in [-128, 127] from a histogram observer over the calibration inputs the
core captured for this partition.

The stock quantizer annotates patterns anchored on conv / linear / add / mul /
cat and only *propagates* through shape ops and activations that follow an
already quantized tensor. A partition cut out of a bigger model can start with
a ``view`` or a ``max_pool2d`` fed straight from a partition input, or contain a
``sub``; :func:`make_quantizer`'s quantizer annotates those too, so every op the rules
claim at int8 runs quantized and every partition output is a dequantized int8
tensor whose parameters we can report.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.fx import GraphModule, Node

from delegate_sdk_xnnpack._toolchain import compiler

aten = torch.ops.aten

Q_KEY = "quantization_annotation"

#: ops whose int8 output must reuse the input's quantization (XNNPACK runs them on int8 data unchanged)
SHARED_QPARAM_OPS = frozenset({
    aten.view.default, aten.permute.default, aten.slice.Tensor, aten.max_pool2d.default,
    aten.mean.dim, aten.relu.default, aten.hardtanh.default, aten.clamp.default,
    # the stock quantizer has no pad config: a pad that is a partition's first or last op stayed float, and
    # the partition had no output scale to report (op/pad failed the contract at int8)
    aten.constant_pad_nd.default,
})
#: elementwise ops with their own output quantization
BINARY_OPS = frozenset({aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor})


def _annotated(node: Node) -> bool:
    ann = node.meta.get(Q_KEY)
    return ann is not None and getattr(ann, "_annotated", False)


def make_quantizer() -> Any:
    """The XNNPACK quantizer, plus annotations for ops it only covers next to an anchor op.

    Built on first use: the torchao base class is only importable once the
    toolchain is (and importing it is slow).
    """
    tc = compiler()
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import OP_TO_ANNOTATOR, propagate_annotation
    from torchao.quantization.pt2e.quantizer import Quantizer

    config = tc.get_symmetric_quantization_config(is_per_channel=True)
    # The conv+batch-norm patterns serve QAT: for post-training quantization
    # prepare_pt2e folds every batch norm into its conv before annotating, so
    # they never match, yet each call re-exports its pattern graphs (about 70%
    # of a small partition's quantization time). The other patterns run as the
    # XNNPACK quantizer runs them, in its order.
    #
    # adaptive_avg_pool2d is left out too: core ATen spells a global average pool ``mean.dim``, which that
    # annotator finds through its nn.AdaptiveAvgPool2d source and then refuses ("mean is not an aten
    # adaptive_avg_pool2d operator"), failing every CNN that ends in one; ``mean.dim`` is annotated below, with
    # its input's quantization, as XNNPACK runs it.
    patterns = [p.name for p in tc.XNNPACKQuantizer.SUPPORTED_PATTERNS
                if "_bn" not in p.name and p.name != "adaptive_avg_pool2d"]

    class PartitionQuantizer(Quantizer):
        def __init__(self) -> None:
            super().__init__()
            self.base = tc.XNNPACKQuantizer().set_global(config)
            self.act = config.input_activation

        def transform_for_annotation(self, model: GraphModule) -> GraphModule:
            return self.base.transform_for_annotation(model)

        def annotate(self, model: GraphModule) -> GraphModule:
            for name in patterns:
                OP_TO_ANNOTATOR[name](model, config, None)
            propagate_annotation(model)
            for node in model.graph.nodes:
                if node.op != "call_function" or _annotated(node):
                    continue
                if node.target in SHARED_QPARAM_OPS:
                    src = node.args[0]
                    node.meta[Q_KEY] = tc.QuantizationAnnotation(
                        input_qspec_map={src: self.act},
                        output_qspec=tc.SharedQuantizationSpec((src, node)),
                        _annotated=True,
                    )
                elif node.target in BINARY_OPS:
                    node.meta[Q_KEY] = tc.QuantizationAnnotation(
                        input_qspec_map={a: self.act for a in node.args[:2] if isinstance(a, Node)},
                        output_qspec=self.act,
                        _annotated=True,
                    )
            return model

        def validate(self, model: GraphModule) -> None:
            pass

    return PartitionQuantizer()


def scalar_operands_to_constants(gm: GraphModule) -> None:
    """``sub(x, 2.0)`` -> ``add(x, -2.0)``; the quantizer turns scalar operands of add/mul into
    quantized constants but leaves sub's alone, and XNNPACK's int8 sub needs two int8 tensors."""
    for node in gm.graph.nodes:
        if (node.op == "call_function" and node.target is aten.sub.Tensor
                and isinstance(node.args[1], (int, float)) and node.kwargs.get("alpha", 1) == 1):
            node.target = aten.add.Tensor
            node.args = (node.args[0], -float(node.args[1]))
    gm.recompile()


def calibrate_and_convert(gm: GraphModule, calibration: list[tuple[torch.Tensor, ...]]) -> GraphModule:
    """prepare -> run every calibration sample -> convert; returns the q/dq GraphModule."""
    tc = compiler()
    prepared = tc.prepare_pt2e(gm, make_quantizer())
    with torch.no_grad():
        for sample in calibration:
            prepared(*sample)
    return tc.convert_pt2e(prepared)


def _scalar(arg: Any, gm: GraphModule) -> Any:
    if isinstance(arg, Node) and arg.op == "get_attr":
        t = operator.attrgetter(arg.target)(gm)
        return t.item() if isinstance(t, torch.Tensor) and t.numel() == 1 else t
    return arg


def output_qparams(gm: GraphModule) -> list[tuple[float, int, int, int, torch.dtype] | None]:
    """For each graph output: (scale, zero_point, qmin, qmax, dtype) of the dequantize producing it."""
    out: list[tuple[float, int, int, int, torch.dtype] | None] = []
    for o in gm.graph.output_node().args[0]:
        if (isinstance(o, Node) and o.op == "call_function"
                and "dequantize_per_tensor" in str(o.target)):
            scale, zp, qmin, qmax, dtype = (_scalar(a, gm) for a in o.args[1:6])
            out.append((float(scale), int(zp), int(qmin), int(qmax), dtype))
        else:
            out.append(None)
    return out
