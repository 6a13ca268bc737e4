"""The lowering driver: walk a quantized partition node by node and build its TOSA graph.

Scheme: activations per-tensor (int8 asymmetric, or int16 symmetric for
``a16w8``) with ranges from calibration min/max; weights int8 symmetric per
output channel; biases int32 (int48 with int16 activations) in the
accumulator's scale. Every requantization is a TOSA RESCALE whose
multiplier/shift come from exact rationals (:mod:`delegate_sdk_arm_ethos.quant`).

Layout: torch tensors are NCHW; TOSA convolutions and pools are NHWC. Each
value keeps its TOSA tensor per layout it has been materialised in, so a chain
of NHWC ops (conv -> relu -> pool -> conv) pays for one transpose at each end,
not one per op.

The driver owns what every op lowering shares (values and their layouts,
constants, requantization); each op's own lowering is a function registered in
:mod:`.registry` by its family module.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.export import ExportedProgram

from delegate_sdk.support import op_name
from delegate_sdk_arm_ethos.graph_eval import GraphInputs, output_nodes
from delegate_sdk_arm_ethos.lowering.calibration import Ranges
from delegate_sdk_arm_ethos.lowering.registry import LOWERINGS
from delegate_sdk_arm_ethos.lowering.values import (
    NCHW,
    NHWC,
    IOInfo,
    Lowered,
    LoweringError,
    Val,
    first_tensor,
    shape_of,
    to_numpy,
)
from delegate_sdk_arm_ethos.quant import (
    Multiplier,
    QParams,
    multiplier_shift,
    qparams_from_range,
    to_fraction,
)

if TYPE_CHECKING:
    from delegate_sdk_arm_ethos.refgraph import QuantWeight


#: ops whose lowering keeps their input's quantization and clamps its codes (see Lowerer.out_q)
CLAMPS = frozenset({"aten.relu.default", "aten.relu6.default", "aten.hardtanh.default", "aten.clamp.default"})


class Lowerer:
    """One partition's lowering: its TOSA builder, the value of every node, the quantization chosen."""

    def __init__(self, program: ExportedProgram, gi: GraphInputs, const_env: dict[str, Any], ranges: Ranges,
                 act_dtype: str = "int8", folded: dict[str, list[str]] | None = None) -> None:
        self.program = program
        self.folded = folded or {}
        self.gi = gi
        self.const_env = const_env
        self.ranges = ranges
        self.act = act_dtype
        self.acc = "int48" if act_dtype == "int16" else "int32"
        from delegate_sdk_arm_ethos.tosa_builder import (
            TosaBuilder,  # needs tosa-tools: only when lowering
        )

        self.b = TosaBuilder()
        self.vals: dict[str, Any] = {}
        self.node_q: dict[str, QParams] = {}
        self.weights: dict[str, QuantWeight] = {}
        self.interpolated: dict[str, list[float]] = {}

    def lower(self) -> Lowered:
        inputs: list[IOInfo] = []
        for node in self.gi.user:
            shape = shape_of(node)
            t = first_tensor(node.meta.get("val"))
            if t is not None and t.dtype == torch.bool:
                name = self.b.input(shape, "bool")
                self.vals[node.name] = Val(shape, "bool", None, {"std": name})
                inputs.append(IOInfo(shape, "bool", None))
                continue
            q = self.range_q(node.name)
            name = self.b.input(shape, self.act)
            self.vals[node.name] = Val(shape, self.act, q, {"std": name})
            self.node_q[node.name] = q
            inputs.append(IOInfo(shape, "float32", q))
        for name, value in self.const_env.items():
            if isinstance(value, torch.Tensor):
                self.vals[name] = self.const_val(value)
        for node in self.program.graph.nodes:
            if node.op != "call_function" or node.name in self.vals:
                continue
            self.b.source = [node.name, *self.folded.get(node.name, ())]
            self.vals[node.name] = self._lower_node(node)
            v = self.vals[node.name]
            if isinstance(v, Val) and v.q is not None:
                self.node_q[node.name] = v.q
        outputs: list[IOInfo] = []
        self.b.source = []
        for out in output_nodes(self.program):
            if not isinstance(out, torch.fx.Node):
                raise LoweringError(f"partition output {out!r} is not a tensor")
            v = self.vals[out.name]
            if not isinstance(v, Val):
                raise LoweringError(f"partition output {out.name} is not a single tensor")
            self.b.mark_output(self.std(v))
            outputs.append(IOInfo(v.shape, "bool" if v.dtype == "bool" else "float32", v.q))
        return Lowered(self.b.serialize(), inputs, outputs, dict(self.b.op_counts), self.b.debug_map,
                       dict(self.node_q), dict(self.weights), dict(self.interpolated))

    def _lower_node(self, node: torch.fx.Node) -> Any:
        if node.meta.get("val") is None:
            return None  # host-side assertions (the core never puts them in a partition)
        if node.target is operator.getitem:
            src = self.vals[node.args[0].name]
            return src[node.args[1]]
        name = op_name(node)
        fn = LOWERINGS.get(name)
        if fn is None:
            raise LoweringError(f"no TOSA lowering for {name} ({node.name})")
        return fn(self, node)

    def range_q(self, key: str) -> QParams:
        lo, hi = self.ranges.get(key)
        return qparams_from_range(lo, hi, self.act)

    def const_val(self, t: torch.Tensor) -> Val:
        arr = to_numpy(t)
        dtype = "bool" if arr.dtype == np.bool_ else self.act
        return Val(tuple(arr.shape), dtype, None, {}, arr)

    def val(self, arg: Any) -> Val:
        if isinstance(arg, torch.fx.Node):
            v = self.vals[arg.name]
            if not isinstance(v, Val):
                raise LoweringError(f"{arg.name} is not a single tensor")
            return v
        return Val((), self.act, None, {}, np.asarray(arg, dtype=np.float64))

    def materialize(self, v: Val) -> None:
        """Give a compile-time constant a quantized TOSA tensor (std layout)."""
        assert v.const is not None
        if v.dtype == "bool":
            v.names["std"] = self.b.const(v.const.astype(np.bool_), "bool")
            return
        if v.q is None:
            finite = v.const[np.isfinite(v.const)] if v.const.size else v.const
            lo = float(finite.min()) if finite.size else 0.0
            hi = float(finite.max()) if finite.size else 0.0
            v.q = qparams_from_range(lo, hi, self.act)
        v.names["std"] = self.b.const(v.q.quantize(v.const), self.act)

    def std(self, v: Val) -> str:
        if "std" not in v.names:
            if "nhwc" in v.names:
                v.names["std"] = self.b.transpose(v.names["nhwc"], NCHW)
            else:
                self.materialize(v)
        return v.names["std"]

    def nhwc(self, v: Val) -> str:
        if v.rank != 4:
            raise LoweringError(f"NHWC needs a rank-4 tensor, got shape {v.shape}")
        if "nhwc" not in v.names:
            v.names["nhwc"] = self.b.transpose(self.std(v), NHWC)
        return v.names["nhwc"]

    def layout_of(self, v: Val) -> str:
        return "nhwc" if "nhwc" in v.names and "std" not in v.names else "std"

    def get(self, v: Val, layout: str) -> str:
        return self.nhwc(v) if layout == "nhwc" else self.std(v)

    def new_val(self, shape: Sequence[int], q: QParams | None, layout: str, name: str,
                dtype: str | None = None) -> Val:
        return Val(tuple(shape), dtype or self.act, q, {layout: name})

    @staticmethod
    def lshape(shape: Sequence[int], layout: str) -> list[int]:
        return [shape[p] for p in NHWC] if layout == "nhwc" else list(shape)

    def rescale(self, x: str, scales: Sequence[float | Fraction], in_zp: int, out_zp: int,
                out_dtype: str) -> str:
        if self.b.info[x].dtype == "int48":
            # TOSA rescales int48 with 16-bit multipliers only (~1 LSB of int16 output error). Shift the
            # accumulator into int32 exactly (by its known bound) and rescale from there with 32 bits.
            if x not in self.b.bounds:
                raise LoweringError(f"no bound known for the int48 tensor {x}")
            p = max(0, self.b.bounds[x].bit_length() - 30)
            x = self.b.rescale(x, [Multiplier(1 << 14, 14 + p)], 0, 0, "int32")
            scales = [to_fraction(s) * (1 << p) for s in scales]
        mults = [multiplier_shift(s, 32) for s in scales]
        return self.b.rescale(x, mults, in_zp, out_zp, out_dtype, per_channel=len(mults) > 1)

    def requant(self, x: str, src: QParams, dst: QParams) -> str:
        """int8/int16 tensor from ``src`` to ``dst`` quantization (no-op when equal)."""
        if src == dst:
            return x
        return self.rescale(x, [to_fraction(src.scale) / to_fraction(dst.scale)], src.zero_point,
                            dst.zero_point, dst.dtype)

    def to_int32(self, x: str, q: QParams, scale: Fraction) -> str:
        """(q - zp) * scale as int32."""
        return self.rescale(x, [scale], q.zero_point, 0, "int32")

    def out_q(self, node: torch.fx.Node) -> QParams:
        """The quantization ``node``'s lowering produces its value in.

        A node whose only user is a clamp (relu, relu6, hardtanh, clamp) takes the
        clamp's range: a clamp keeps its input's quantization, so otherwise every relu
        after a convolution would spend half its codes on the negatives it removed.
        Saturating to the clamp's range and then clamping is the same as clamping and
        then quantizing, so the clamp stays exact.
        """
        users = list(node.users)
        if len(users) == 1 and op_name(users[0]) in CLAMPS and users[0].args[0] is node \
                and users[0].name in self.ranges.lo:
            return self.range_q(users[0].name)
        return self.range_q(node.name)

    def broadcast_operand(self, v: Val, out_shape: Sequence[int], layout: str) -> str:
        """TOSA tensor of ``v`` with rank of the output (leading 1s), in ``layout``."""
        rank = len(out_shape)
        if v.rank == rank:
            return self.get(v, layout)
        shape = (1,) * (rank - v.rank) + tuple(v.shape)
        name = self.b.reshape(self.std(v), shape)
        if layout == "nhwc":
            name = self.b.transpose(name, NHWC)
        return name

    def pick_layout(self, out_shape: Sequence[int], vals: Sequence[Val]) -> str:
        if len(out_shape) == 4:
            for v in vals:
                if v.const is None and v.rank == 4:
                    return self.layout_of(v)
        return "std"

    def const_arg(self, arg: Any, what: str) -> np.ndarray | None:
        if arg is None:
            return None
        v = self.val(arg)
        if v.const is None:
            raise LoweringError(f"{what} must be a compile-time constant")
        return v.const

    def fit_window(self, xn: str, size_h: int, size_w: int, k: Sequence[int], s: Sequence[int],
                   d: Sequence[int], pad: list[int], out_hw: Sequence[int]) -> tuple[str, list[int]]:
        """Make (in + pads - eff_kernel) divisible by stride and match torch's output size.

        TOSA requires the output size to follow exactly from the padded input;
        torch floors. Trim the bottom/right padding, and the input itself when
        trimming padding is not enough.
        """
        crop = [0, 0]
        for i, (n_in, kk, ss, dd, n_out) in enumerate(zip((size_h, size_w), k, s, d, out_hw)):
            eff = (kk - 1) * dd + 1
            need = (n_out - 1) * ss + eff  # padded length actually read
            after = need - n_in - pad[2 * i]
            if after < 0:
                crop[i] = -after
                after = 0
            pad[2 * i + 1] = after
        if any(crop):
            info = self.b.info[xn]
            size = list(info.shape)
            size[1] -= crop[0]
            size[2] -= crop[1]
            xn = self.b.slice(xn, [0, 0, 0, 0], size)
        return xn, pad


def lower_program(program: ExportedProgram, gi: GraphInputs, const_env: dict[str, Any], ranges: Ranges,
                  act_dtype: str, folded: dict[str, list[str]] | None = None) -> Lowered:
    """The TOSA graph of ``program`` at ``act_dtype`` activations, every node lowered by its registered op.

    ``folded`` names, per node, the original nodes folded into it (they appear beside it in the debug map).
    """
    return Lowerer(program, gi, const_env, ranges, act_dtype, folded).lower()
