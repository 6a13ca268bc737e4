"""Quantize a core-ATen partition and lower it to a TOSA 1.0 INT graph.

:mod:`.driver` walks the graph; each op family registers its lowerings in
:data:`.registry.LOWERINGS`, the one list of ops this plugin can lower:

- :mod:`.conv`: convolution, linear / addmm / mm (constant weights) and eval batch norm -> CONV2D / DEPTHWISE_CONV2D
  / TRANSPOSE_CONV2D; mm / bmm of two activations -> MATMUL
- :mod:`.elementwise`: add / sub / mul / div by a constant / maximum / minimum, clamps, comparisons, logic, where
- :mod:`.tables`: unary functions (sigmoid, tanh, gelu, exp, ...) -> TABLE; softmax
- :mod:`.pooling`: max / average / adaptive pooling, mean, sum, amax / amin, max / min values
- :mod:`.data_movement`: reshape, permute, slice, select, cat, split, pad, expand, repeat, flip, resize
"""

from __future__ import annotations

# importing the family modules fills the registry
from delegate_sdk_arm_ethos.lowering import (  # noqa: F401
           conv,
           data_movement,
           elementwise,
           pooling,
           tables,
)
from delegate_sdk_arm_ethos.lowering.calibration import RangeObserver, Ranges
from delegate_sdk_arm_ethos.lowering.driver import Lowerer, lower_program
from delegate_sdk_arm_ethos.lowering.registry import LOWERINGS
from delegate_sdk_arm_ethos.lowering.values import IOInfo, Lowered, LoweringError

#: every ATen op the lowering handles, sorted
LOWERABLE_OPS: tuple[str, ...] = tuple(sorted(LOWERINGS))

__all__ = ["LOWERABLE_OPS", "LOWERINGS", "IOInfo", "Lowered", "Lowerer", "LoweringError", "RangeObserver", "Ranges",
           "lower_program"]
