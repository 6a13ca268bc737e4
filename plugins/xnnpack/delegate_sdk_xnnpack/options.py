"""The options the xnnpack plugin accepts (the core validates user values against them and adds ``precision``)."""

from __future__ import annotations

from delegate_sdk.types import OptionSpec

OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        name="num_threads",
        type="int",
        default=0,
        minimum=0,
        maximum=256,
        help="threads of ExecuTorch's XNNPACK threadpool; 0 keeps the runtime's default (one per core). "
             "The threadpool is process-wide: the last program loaded with a non-zero value sets it for all.",
    ),
)
