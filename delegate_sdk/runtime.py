"""Running a lowered program: delegate handles, the outer graph on eager PyTorch, input checks."""

from __future__ import annotations

import logging
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from delegate_sdk.errors import ContractError, PluginError, UsageError
from delegate_sdk.graph_ir import CompiledGraph, Executor, OuterGraph
from delegate_sdk.registry import Backend
from delegate_sdk.signature import InputSpec, InputValidator
from delegate_sdk.types import CompiledDelegate, PerfEstimate, QuantParams, TensorSpec

log = logging.getLogger(__name__)


@dataclass
class DelegateRecord:
    """One partition as stored in an artifact (the blob itself is stored beside it)."""

    id: str
    backend: str
    plugin_version: str
    format: str
    format_version: int
    options: dict[str, Any]
    meta: dict[str, Any]
    nodes: list[str]
    ops: list[str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    output_quant: list[QuantParams | None] = field(default_factory=list)
    perf: PerfEstimate | None = None
    op_counts: dict[str, int] = field(default_factory=dict)
    debug_map: dict[str, list[str]] = field(default_factory=dict)
    blob_sha256: str = ""
    blob_size: int = 0
    #: the nodes of ``nodes`` the backend runs on its host CPU (hosted ops), not on the accelerator
    hosted: list[str] = field(default_factory=list)
    #: multiply-accumulates of the conv / linear / matmul nodes it accelerates
    macs: int = 0
    #: the blob's named sections: name -> SHA-256 of the content (stored once per artifact under that hash)
    sections: dict[str, str] = field(default_factory=dict)
    #: the model's nodes whose values cross into / out of the partition, in call order ([] before they were kept)
    input_nodes: list[str] = field(default_factory=list)
    output_nodes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "backend": self.backend, "plugin_version": self.plugin_version,
            "format": self.format, "format_version": self.format_version, "options": self.options,
            "meta": self.meta, "nodes": self.nodes, "ops": self.ops,
            "inputs": [t.to_json() for t in self.inputs], "outputs": [t.to_json() for t in self.outputs],
            "output_quant": [q.to_json() if q else None for q in self.output_quant],
            "perf": self.perf.to_json() if self.perf else None, "op_counts": self.op_counts,
            "debug_map": self.debug_map, "blob_sha256": self.blob_sha256, "blob_size": self.blob_size,
            "hosted": self.hosted, "macs": self.macs, "sections": self.sections,
            "input_nodes": self.input_nodes, "output_nodes": self.output_nodes,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DelegateRecord:
        return cls(
            d["id"], d["backend"], d["plugin_version"], d["format"], int(d["format_version"]), dict(d["options"]),
            dict(d["meta"]), list(d["nodes"]), list(d["ops"]),
            [TensorSpec.from_json(t) for t in d["inputs"]], [TensorSpec.from_json(t) for t in d["outputs"]],
            [QuantParams.from_json(q) if q else None for q in d.get("output_quant", [])],
            PerfEstimate.from_json(d["perf"]) if d.get("perf") else None, dict(d.get("op_counts", {})),
            {k: list(v) for k, v in d.get("debug_map", {}).items()}, d.get("blob_sha256", ""),
            int(d.get("blob_size", 0)), list(d.get("hosted", [])), int(d.get("macs", 0)),
            {str(k): str(v) for k, v in d.get("sections", {}).items()},
            list(d.get("input_nodes", [])), list(d.get("output_nodes", [])),
        )

    @classmethod
    def from_compiled(cls, pid: str, backend: str, version: str, options: dict[str, Any], cd: CompiledDelegate,
                      nodes: list[str], ops: list[str], inputs: list[TensorSpec],
                      outputs: list[TensorSpec], hosted: list[str] | None = None) -> DelegateRecord:
        import hashlib

        return cls(pid, backend, version, cd.format, cd.format_version, options, cd.meta, nodes, ops, inputs,
                   outputs, list(cd.output_quant), cd.perf, dict(cd.op_counts), dict(cd.debug_map),
                   hashlib.sha256(cd.blob).hexdigest(), len(cd.blob), list(hosted or []),
                   sections={name: hashlib.sha256(data).hexdigest() for name, data in cd.sections.items()})


@dataclass
class DelegateCall:
    """One call of a delegate during :meth:`ProgramRuntime.trace_calls`."""

    partition: str
    backend: str
    inputs: list[torch.Tensor]
    #: copies of ``inputs`` taken just before the call (a plugin must not modify its inputs)
    inputs_before: list[torch.Tensor]
    outputs: list[torch.Tensor]


class DelegateRuntime:
    """A loaded delegate: its handle, created once, and a lock unless the plugin is thread safe."""

    def __init__(self, backend: Backend, record: DelegateRecord, blob: bytes,
                 sections: dict[str, bytes] | None = None):
        self.backend = backend
        self.record = record
        info = backend.info()
        self._lock = nullcontext() if info.thread_safe else threading.Lock()
        try:
            self.handle = backend.hook.call("init", blob=blob, meta=record.meta, options=record.options,
                                            sections=dict(sections or {}))
        except Exception as e:
            raise PluginError(backend.name, "init", f"{type(e).__name__}: {e}", record.id) from e
        self._closed = False
        # executes in flight; close() waits for them, so destroy never overlaps an execute on this handle
        self._active = 0
        self._idle = threading.Condition()
        # the hot path calls the plugin's execute directly: pluggy's dispatch costs more than the SDK itself
        self._execute = backend.direct("execute")
        self._want = [(getattr(torch, t.dtype), tuple(d if isinstance(d, int) else None for d in t.shape))
                      for t in record.outputs]

    def __call__(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        with self._idle:
            if self._closed:
                raise UsageError(f"the program was closed: its {self.backend.name} delegate {self.record.id} "
                                 "was released; load the artifact again")
            self._active += 1
        try:
            with self._lock:
                out = self._execute(handle=self.handle, inputs=inputs)
        except Exception as e:
            raise PluginError(self.backend.name, "execute", f"{type(e).__name__}: {e}", self.record.id) from e
        finally:
            with self._idle:
                self._active -= 1
                if not self._active:
                    self._idle.notify_all()
        if not self._fits(out):
            self._check(out)
        return out

    def _fits(self, out: Any) -> bool:
        if not isinstance(out, list) or len(out) != len(self._want):
            return False
        for t, (dtype, shape) in zip(out, self._want):
            if not isinstance(t, torch.Tensor) or t.dtype != dtype or len(t.shape) != len(shape):
                return False
            for a, b in zip(t.shape, shape):
                if b is not None and a != b:
                    return False
        return True

    def _check(self, out: Any) -> None:
        name, pid, want = self.backend.name, self.record.id, self.record.outputs
        if not isinstance(out, (list, tuple)):
            raise ContractError(name, "execute", f"returned {type(out).__name__}, expected a list of tensors", pid)
        if len(out) != len(want):
            raise ContractError(name, "execute", f"returned {len(out)} output(s), expected {len(want)}", pid)
        for k, (t, spec) in enumerate(zip(out, want)):
            if not isinstance(t, torch.Tensor):
                raise ContractError(name, "execute", f"output {k} is {type(t).__name__}, not a tensor", pid)
            dt = str(t.dtype).removeprefix("torch.")
            if dt != spec.dtype:
                raise ContractError(name, "execute", f"output {k} has dtype {dt}, expected {spec.dtype}", pid)
            if t.dim() != len(spec.shape) or any(isinstance(d, int) and d != s for d, s in zip(spec.shape, t.shape)):
                raise ContractError(name, "execute", f"output {k} has shape {list(t.shape)}, expected "
                                                     f"{list(spec.shape)}", pid)

    def close(self) -> None:
        with self._idle:
            if self._closed:
                return
            self._closed = True  # no new execute starts; wait for the running ones
            while self._active:
                self._idle.wait()
        if self.backend.implements("destroy"):
            try:
                self.backend.hook.call("destroy", handle=self.handle)
            except Exception:  # a failing destroy must not mask the caller's own error
                log.warning("destroy of %s delegate %s failed", self.backend.name, self.record.id, exc_info=True)


class ProgramRuntime:
    """Executes the outer graph with delegate calls; safe to call from several threads."""

    def __init__(self, graph: OuterGraph, delegates: list[DelegateRuntime], weights: dict[str, torch.Tensor],
                 inputs: list[InputSpec]):
        self.graph = graph
        self.delegates = delegates
        self.inputs = inputs
        # detached: eager fallback ops on weights must not build autograd graphs (and no_grad costs µs per call)
        self._weights = {name: weights[name].detach() for name in graph.weights}
        self._trace: threading.local = threading.local()
        # the outer graph as generated straight-line code; the step interpreter stays for graphs it cannot take
        try:
            compiled = CompiledGraph(graph, self._call_delegate)
            self._run_graph = compiled.fn
            self._tail = [self._weights[n] for n in graph.weights]
        except (SyntaxError, RecursionError, ValueError) as e:
            log.debug("outer graph not compiled (%s); interpreting it", e)
            executor = Executor(graph, self._call_delegate)
            self._run_graph = lambda *args: executor.run(dict(zip(self._order, args)))
            self._tail = [self._weights[n] for n in graph.weights]
        self._order = list(graph.user_inputs) + list(graph.weights)
        self._validate = InputValidator(inputs)

    def _call_delegate(self, idx: int, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        rec = getattr(self._trace, "boundaries", None)
        if rec is None:
            return self.delegates[idx](inputs)
        calls = self._trace.calls
        before = [t.clone() for t in inputs] if calls is not None else None
        out = self.delegates[idx](inputs)
        pid = self.delegates[idx].record.id
        rec[pid] = (list(inputs), list(out))
        if calls is not None:
            calls.append(DelegateCall(pid, self.delegates[idx].backend.name, list(inputs), before or [], list(out)))
        return out

    def run(self, inputs: tuple[Any, ...]) -> list[Any]:
        self._validate(inputs)
        if any(getattr(t, "requires_grad", False) for t in inputs):
            with torch.no_grad():
                return self._run_graph(*inputs, *self._tail)
        return self._run_graph(*inputs, *self._tail)

    def trace(self, inputs: tuple[Any, ...]) -> tuple[list[Any], dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]]]:
        self._trace.boundaries = {}
        self._trace.calls = None
        try:
            out = self.run(inputs)
            return out, self._trace.boundaries
        finally:
            self._trace.boundaries = None

    def trace_calls(self, inputs: tuple[Any, ...]) -> tuple[list[Any], list[DelegateCall]]:
        """Run once, recording every delegate call with a copy of its inputs taken just before it."""
        self._trace.boundaries = {}
        self._trace.calls = []
        try:
            out = self.run(inputs)
            return out, self._trace.calls
        finally:
            self._trace.boundaries = None
            self._trace.calls = None

    def close(self) -> None:
        for d in self.delegates:
            d.close()
