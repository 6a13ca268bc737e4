"""A test plugin that "compiles" a partition by serialising its graph to the core's JSON IR.

It exists only to exercise the core: claim rules are an op allow-list, the blob
is JSON + raw weights, and execute interprets it with eager ATen kernels.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from delegate_sdk import (BackendInfo, Claims, CompiledDelegate, OptionSpec, PerfEstimate, QuantParams, ReasonCode,
                          Refusal,
                          hookimpl)
from delegate_sdk.graph_ir import Executor, build_outer_graph
from delegate_sdk.program import _pack_weights, _unpack_weights
from delegate_sdk.support import op_name

ELEMENTWISE = {"aten.add.Tensor", "aten.mul.Tensor", "aten.sub.Tensor", "aten.relu.default",
               "aten.sigmoid.default", "aten.tanh.default", "aten.neg.default", "aten.exp.default"}
LINEAR = {"aten.convolution.default", "aten.addmm.default", "aten.mm.default", "aten.permute.default",
          "aten.mean.dim", "aten.view.default", "aten._native_batch_norm_legit_no_training.default",
          "aten.max_pool2d_with_indices.default"}


class IRBackend:
    """Configurable test backend: which ops it takes, precision, and deliberate faults."""

    def __init__(self, name: str, ops: set[str] | None = None, *, thread_safe: bool = False,
                 format_version: int = 1, loadable: tuple[int, int] = (1, 1), precisions: tuple[str, ...] = ("fp32",),
                 fail_preprocess: bool = False, slow_execute: float = 0.0, available: bool = True,
                 fail_claim: bool = False, output_quant: bool = False, hosts: set[str] | None = None):
        self.name = name
        self.hosts = hosts  # ops it runs "on its host CPU" when a lowering asks for hosted ops
        self.available = available
        self.fail_claim = fail_claim
        self.output_quant = output_quant
        self.ops = ops
        self.thread_safe = thread_safe
        self.format_version = format_version
        self.loadable = loadable
        self.precisions = precisions
        self.fail_preprocess = fail_preprocess
        self.inits = 0
        self.executes = 0
        self.destroyed = 0
        self.destroyed_while_running = 0
        self.calibration_seen: list[Any] = []
        self._per_handle: dict[int, int] = {}
        self.max_concurrent = 0  # most simultaneous execute calls seen on one handle
        self._lock = threading.Lock()
        self.slow_execute = slow_execute

    @hookimpl
    def describe(self) -> BackendInfo:
        return BackendInfo(name=self.name, version="0.0-test", precisions=self.precisions,
                           default_precision=self.precisions[0], blob_format="dsdk-test-ir",
                           blob_format_version=self.format_version, loadable_format_versions=self.loadable,
                           options=(OptionSpec("level", "int", 1, "a test option", minimum=0, maximum=3),),
                           thread_safe=self.thread_safe, available=self.available, hosts_ops=bool(self.hosts),
                           unavailable_reason="" if self.available else "needs the TestChip SDK, which is not installed")

    @hookimpl
    def claim(self, program: ExportedProgram, nodes: list[torch.fx.Node], options: dict[str, Any]) -> Claims:
        if self.fail_claim:
            raise ValueError("deliberate claim failure")
        claimed, refused, hosted = [], [], []
        for n in nodes:
            name = op_name(n)
            if self.ops is None or name in self.ops:
                claimed.append(n.name)
            elif options.get("hosted_ops") and self.hosts and name in self.hosts:
                hosted.append(n.name)
            else:
                refused.append(Refusal(n.name, ReasonCode.OP, f"{name} is not in {self.name}'s op list"))
        return Claims(tuple(claimed), tuple(refused), tuple(hosted))

    @hookimpl
    def preprocess(self, program: ExportedProgram, options: dict[str, Any], calibration: Any) -> CompiledDelegate:
        if self.fail_preprocess:
            raise RuntimeError("deliberate compile failure")
        self.calibration_seen.append(calibration)
        sig = program.graph_signature
        users = [s.arg.name for s in sig.input_specs if s.kind == InputKind.USER_INPUT]
        weights = {}
        for s in sig.input_specs:
            if s.kind != InputKind.USER_INPUT:
                weights[s.arg.name] = program.constants.get(s.target, program.state_dict.get(s.target))
        graph = build_outer_graph(program.graph, users, list(weights), {}, {}, {})
        index, raw = _pack_weights(weights)
        header = json.dumps({"graph": graph.to_json(), "weights": index}).encode()
        n_out = len(program.graph_signature.output_specs)
        quant = [QuantParams(0.1, 0, "int8") for _ in range(n_out)] if self.output_quant else []
        # the weights go in a section, which the artifact stores once however many partitions hold it
        return CompiledDelegate(blob=len(header).to_bytes(8, "little") + header, format="dsdk-test-ir",
                                sections={"weights": raw} if raw else {},
                                format_version=self.format_version, meta={"nodes": len(program.graph.nodes)},
                                op_counts={"ir": len(graph.nodes)}, output_quant=quant,
                                perf=PerfEstimate(cycles=100 * len(graph.nodes), source="ir test model"))

    @hookimpl
    def init(self, blob: bytes, meta: dict[str, Any], options: dict[str, Any], sections: dict[str, bytes]) -> Any:
        from delegate_sdk.graph_ir import OuterGraph

        self.inits += 1
        n = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8:8 + n])
        graph = OuterGraph.from_json(header["graph"])
        weights = _unpack_weights(header["weights"], sections.get("weights", b""))
        return graph, Executor(graph, lambda i, x: x), weights

    @hookimpl
    def execute(self, handle: Any, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        import time

        key = id(handle)
        with self._lock:
            self.executes += 1
            self._per_handle[key] = self._per_handle.get(key, 0) + 1
            self.max_concurrent = max(self.max_concurrent, self._per_handle[key])
        try:
            if self.slow_execute:
                time.sleep(self.slow_execute)
            graph, ex, weights = handle
            env = dict(weights)
            env.update(zip(graph.user_inputs, inputs))
            return list(ex.run(env))
        finally:
            with self._lock:
                self._per_handle[key] -= 1

    @hookimpl
    def destroy(self, handle: Any) -> None:
        with self._lock:
            if self._per_handle.get(id(handle), 0):
                self.destroyed_while_running += 1  # the core promised this never happens
        self.destroyed += 1


# Instances for DELEGATE_SDK_PLUGINS=name=dsdk_test_plugins.ir_backend:ALL etc. (e.g. in CLI tests)
ALL = IRBackend("ir_all")
ELEMENTWISE_ONLY = IRBackend("ir_elementwise", ELEMENTWISE)
LINEAR_ONLY = IRBackend("ir_linear", LINEAR)
