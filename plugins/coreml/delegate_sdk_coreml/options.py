"""Compile options of the Core ML backend (the core validates user values against these)."""

from __future__ import annotations

from delegate_sdk import OptionSpec

COMPUTE_UNITS = ("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne")

#: deployment targets from iOS16 on (the first with fp16 ML Program I/O); macOS names are the same opsets
DEPLOYMENT_TARGETS = ("iOS16", "iOS17", "iOS18", "iOS26", "macOS13", "macOS14", "macOS15", "macOS26")

#: the opset (MIL ``CoreML<n>``) each target converts to, for messages and meta
OPSET_OF_TARGET = {"iOS16": "CoreML6", "macOS13": "CoreML6", "iOS17": "CoreML7", "macOS14": "CoreML7",
                   "iOS18": "CoreML8", "macOS15": "CoreML8", "iOS26": "CoreML9", "macOS26": "CoreML9"}

OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("compute_units", "str", "all", choices=COMPUTE_UNITS,
               help="Core ML devices the model may run on (macOS): all, cpu_only, cpu_and_gpu (fp32-capable), "
                    "cpu_and_ne (Neural Engine, fp16)."),
    OptionSpec("minimum_deployment_target", "str", "iOS17", choices=DEPLOYMENT_TARGETS,
               help="Oldest OS the compiled ML Program must load on; decides the MIL opset used."),
)

PRECISIONS = ("fp16", "fp32")
DEFAULT_PRECISION = "fp16"
