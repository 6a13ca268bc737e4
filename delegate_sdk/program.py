"""A lowered program and its single-file artifact (a zip: manifest, outer graph, weights, blobs).

Nothing in an artifact is unpickled: the manifest and graph are JSON, weights
are raw bytes described in the manifest, blobs are handed to the plugins'
``init``. Every entry's SHA-256 is in the manifest and checked at load.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export import ExportedProgram

import delegate_sdk
from delegate_sdk.errors import (
    ArtifactCorruptError,
    ArtifactError,
    ArtifactVersionError,
    DelegateSDKError,
    MissingPluginError,
    PluginError,
    UnknownBackendError,
)
from delegate_sdk.graph_ir import OuterGraph
from delegate_sdk.registry import Registry, default_registry
from delegate_sdk.runtime import DelegateCall, DelegateRecord, DelegateRuntime, ProgramRuntime
from delegate_sdk.signature import InputSpec, flat_spec, flatten_call, random_call
from delegate_sdk.types import Refusal

log = logging.getLogger(__name__)

FORMAT = "delegate-sdk/program"
FORMAT_VERSION = 1


@dataclass
class FallbackNode:
    """A node that runs on eager PyTorch, and each backend's reason for not taking it."""

    node: str
    op: str
    reasons: list[Refusal]

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "reasons": [r.to_json() for r in self.reasons]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FallbackNode:
        return cls(d["node"], d["op"], [Refusal.from_json(r) for r in d["reasons"]])


@dataclass
class CompileFailure:
    """A partition a backend claimed but failed to compile; in fallback mode its nodes went elsewhere."""

    backend: str
    nodes: list[str]
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "nodes": list(self.nodes), "error": self.error}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CompileFailure:
        return cls(str(d["backend"]), [str(n) for n in d["nodes"]], str(d["error"]))


@dataclass
class ProgramSummary:
    partitions: list[DelegateRecord]
    fallback: list[FallbackNode]
    nodes_total: int
    macs_total: int = 0
    #: partitions that failed to compile and fell back (fallback mode), with their errors
    compile_failures: list[CompileFailure] = field(default_factory=list)

    @property
    def macs_delegated(self) -> int:
        """Multiply-accumulates of the conv / linear / matmul nodes that run accelerated."""
        return sum(p.macs for p in self.partitions)

    @property
    def nodes_delegated(self) -> int:
        """Nodes inside partitions: accelerated, and hosted on a backend's CPU."""
        return sum(len(p.nodes) for p in self.partitions)

    @property
    def nodes_hosted(self) -> int:
        """Nodes a backend runs on its host CPU inside its partitions (hosted ops), not on the accelerator."""
        return sum(len(p.hosted) for p in self.partitions)

    @property
    def nodes_accelerated(self) -> int:
        return self.nodes_delegated - self.nodes_hosted

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes_total": self.nodes_total, "nodes_delegated": self.nodes_delegated,
            "nodes_accelerated": self.nodes_accelerated, "nodes_hosted": self.nodes_hosted,
            "macs_total": self.macs_total, "macs_delegated": self.macs_delegated,
            "partitions": [{k: v for k, v in p.to_json().items() if k not in ("meta", "debug_map")}
                           for p in self.partitions],
            "fallback": [f.to_json() for f in self.fallback],
            "compile_failures": [c.to_json() for c in self.compile_failures],
        }


@dataclass
class _Parts:
    graph: OuterGraph
    records: list[DelegateRecord]
    blobs: list[bytes]
    weights: dict[str, torch.Tensor]
    inputs: list[InputSpec]
    out_spec: str
    fallback: list[FallbackNode]
    nodes_total: int
    versions: dict[str, str] = field(default_factory=dict)
    #: the input tree ``(args, kwargs)`` as ``torch.utils._pytree.treespec_dumps`` JSON ("" before v2: flat)
    in_spec: str = ""
    #: multiply-accumulates of every conv / linear / matmul of the model, delegated or not
    macs_total: int = 0
    #: capture.model_fingerprint of the model lowered ("" in artifacts written before it was recorded)
    model_sha256: str = ""
    compile_failures: list[CompileFailure] = field(default_factory=list)
    #: per partition, its blob's named sections (equal contents are one bytes object)
    sections: list[dict[str, bytes]] = field(default_factory=list)
    #: the ops left whole when the model was decomposed (to cut the same nodes from it again)
    keep_ops: list[str] = field(default_factory=list)

    def sections_of(self, k: int) -> dict[str, bytes]:
        return self.sections[k] if k < len(self.sections) else {}


class Program:
    """A model lowered onto one or more backends. Call it like the model."""

    def __init__(self, parts: _Parts, registry: Registry | None = None,
                 subprograms: dict[str, ExportedProgram] | None = None, source: ExportedProgram | None = None):
        self._parts = parts
        #: the decomposed model the partitions were cut from (only in the process that lowered it)
        self.source = source
        self._registry = registry or default_registry()
        self._subprograms = subprograms or {}
        self._out_spec = pytree.treespec_loads(parts.out_spec)
        self._unflatten = _fast_unflatten(self._out_spec)
        self._in_spec = pytree.treespec_loads(parts.in_spec) if parts.in_spec else flat_spec(len(parts.inputs))
        # a call with the program's tensors as positional arguments needs no pytree walk
        self._flat_positional = self._in_spec == flat_spec(len(parts.inputs))
        runtimes: list[DelegateRuntime] = []
        try:
            for k, (rec, blob) in enumerate(zip(parts.records, parts.blobs)):
                runtimes.append(DelegateRuntime(self._registry.get(rec.backend), rec, blob, parts.sections_of(k)))
        except BaseException:
            for r in runtimes:
                r.close()
            raise
        self._runtime = ProgramRuntime(parts.graph, runtimes, parts.weights, parts.inputs)

    # ------------------------------------------------------------ running
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the program as the model is called: the same positional and keyword arguments (any pytree)."""
        if self._flat_positional and not kwargs:
            return self._unflatten(self._runtime.run(args))
        return self._unflatten(self._runtime.run(tuple(flatten_call(args, kwargs, self._in_spec))))

    def flatten_inputs(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """The leaves of a call, in the order the program takes them (InputError naming a structure mismatch)."""
        if self._flat_positional and not kwargs:
            return args
        return tuple(flatten_call(args, kwargs, self._in_spec))

    def example_call(self, seed: int = 0) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Seeded ``(args, kwargs)`` that fit the program's inputs."""
        return random_call(self._parts.inputs, self._in_spec, seed)

    def trace(self, *args: Any, **kwargs: Any) -> tuple[list[Any], dict[str, tuple[list[torch.Tensor],
                                                                                   list[torch.Tensor]]]]:
        """Flat outputs plus, per partition id, the tensors that crossed its boundary in this call."""
        return self._runtime.trace(self.flatten_inputs(*args, **kwargs))

    def trace_calls(self, *args: Any, **kwargs: Any) -> tuple[list[Any], list[DelegateCall]]:
        """Flat outputs plus every delegate call of this run, in order, each with a copy of its inputs from
        just before the call (conformance checks that plugins neither modify inputs nor reuse outputs)."""
        return self._runtime.trace_calls(self.flatten_inputs(*args, **kwargs))

    def source_of(self, model_ep: ExportedProgram) -> ExportedProgram:
        """``model_ep`` (the model exported again) decomposed as this program's partitions were cut from it."""
        from delegate_sdk.capture import decompose

        return decompose(model_ep, set(self._parts.keep_ops))

    def run_partition(self, partition_id: str, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Run one delegate alone on the given inputs (e.g. eager PyTorch's values at its boundary, to see
        the error it adds by itself)."""
        return self._runtime.delegates[self._index(partition_id)](list(inputs))

    def reference(self, partition_id: str, inputs: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """The plugin's trusted CPU reference for a partition (``reference_execute``), if it has one."""
        idx = self._index(partition_id)
        rec, blob = self._parts.records[idx], self._parts.blobs[idx]
        backend = self._registry.get(rec.backend)
        if not backend.implements("reference_execute"):
            return None
        try:
            return backend.hook.call("reference_execute", blob=blob, meta=rec.meta, options=rec.options,
                                     inputs=list(inputs), sections=dict(self._parts.sections_of(idx)))
        except Exception as e:
            raise PluginError(rec.backend, "reference_execute", f"{type(e).__name__}: {e}", partition_id) from e

    def subprogram(self, partition_id: str) -> ExportedProgram | None:
        """The partition's own ExportedProgram (only in the process that lowered the model)."""
        self._index(partition_id)
        return self._subprograms.get(partition_id)

    def _index(self, partition_id: str) -> int:
        for i, r in enumerate(self._parts.records):
            if r.id == partition_id:
                return i
        raise KeyError(f"no partition {partition_id!r}; partitions: {[r.id for r in self._parts.records]}")

    @property
    def input_specs(self) -> list[InputSpec]:
        return list(self._parts.inputs)

    @property
    def model_fingerprint(self) -> str:
        """``capture.model_fingerprint`` of the model this program was lowered from ("" if not recorded)."""
        return self._parts.model_sha256

    def summary(self) -> ProgramSummary:
        return ProgramSummary(list(self._parts.records), list(self._parts.fallback), self._parts.nodes_total,
                              self._parts.macs_total, list(self._parts.compile_failures))

    def close(self) -> None:
        """Release the delegates' handles now (otherwise when the program is garbage collected)."""
        runtime = getattr(self, "_runtime", None)
        if runtime is not None:
            runtime.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------ the artifact
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the single-file artifact (atomically: a crash never leaves half a file at ``path``)."""
        p = self._parts
        weights_index, weights_bytes = _pack_weights(p.weights)
        graph_bytes = json.dumps(p.graph.to_json(), separators=(",", ":")).encode()
        entries: dict[str, bytes] = {"graph.json": graph_bytes, "weights.bin": weights_bytes}
        for k, (rec, blob) in enumerate(zip(p.records, p.blobs)):
            entries[f"blobs/{rec.id}.bin"] = blob
            for name, data in p.sections_of(k).items():
                # content-addressed: a section several partitions hold is stored once
                entries.setdefault(_section_entry(rec.sections[name]), data)
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "sdk_version": delegate_sdk.__version__, "torch_version": torch.__version__,
            "plugins": {rec.backend: rec.plugin_version for rec in p.records},
            "inputs": [s.to_json() for s in p.inputs], "out_spec": p.out_spec, "in_spec": p.in_spec,
            "nodes_total": p.nodes_total, "macs_total": p.macs_total, "model_sha256": p.model_sha256,
            "compile_failures": [c.to_json() for c in p.compile_failures], "keep_ops": p.keep_ops,
            "partitions": [rec.to_json() for rec in p.records],
            "fallback": [f.to_json() for f in p.fallback],
            "weights": weights_index,
            "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in entries.items()},
        }
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        try:
            with zipfile.ZipFile(tmp, "w") as z:
                z.writestr("manifest.json", json.dumps(manifest, indent=1), zipfile.ZIP_DEFLATED)
                for name, data in entries.items():
                    # bulky data (weights, sections) is stored as is: it rarely deflates and is read back
                    # fastest that way; the graph and the blobs (programs, often padded) deflate well
                    packed = name == "graph.json" or name.startswith("blobs/")
                    z.writestr(name, data, zipfile.ZIP_DEFLATED if packed else zipfile.ZIP_STORED,
                               compresslevel=1 if packed else None)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()


def _fast_unflatten(spec: pytree.TreeSpec) -> Any:
    """The common output structures (one tensor, a flat tuple) without a pytree walk per call."""
    if spec.is_leaf():
        return lambda flat: flat[0]
    if spec.type is tuple and all(spec.child(i).is_leaf() for i in range(spec.num_children)):
        return tuple
    return lambda flat: pytree.tree_unflatten(flat, spec)


def _pack_weights(weights: dict[str, torch.Tensor]) -> tuple[list[dict[str, Any]], bytes]:
    index, buf, off = [], io.BytesIO(), 0
    for name, t in weights.items():
        t = t.detach().contiguous().cpu()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        index.append({"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                      "offset": off, "nbytes": len(raw)})
        buf.write(raw)
        off += len(raw)
    return index, buf.getvalue()


def _unpack_weights(index: list[dict[str, Any]], data: bytes) -> dict[str, torch.Tensor]:
    out = {}
    for w in index:
        dtype = getattr(torch, str(w["dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise ArtifactCorruptError(f"weight {w.get('name')!r} has unknown dtype {w.get('dtype')!r}")
        off, n, shape = int(w["offset"]), int(w["nbytes"]), [int(s) for s in w["shape"]]
        expected = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        if n != expected or off < 0 or off + n > len(data):
            raise ArtifactCorruptError(f"weight {w['name']!r} does not fit the weights file")
        if n == 0:
            out[w["name"]] = torch.empty(shape, dtype=dtype)
            continue
        raw = torch.frombuffer(bytearray(data[off:off + n]), dtype=torch.uint8)
        out[w["name"]] = raw.view(dtype).reshape(shape)
    end = max((int(w["offset"]) + int(w["nbytes"]) for w in index), default=0)
    if len(data) != end:  # the writer packs exactly the indexed weights: anything else was put there
        raise ArtifactCorruptError(f"weights.bin holds {len(data)} bytes where its index describes {end}")
    return out


def load(path: str | os.PathLike[str], registry: Registry | None = None) -> Program:
    """Read and verify an artifact, then create each delegate's handle."""
    registry = registry or default_registry()
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"no artifact at {path}")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "manifest.json" not in names:
                raise ArtifactCorruptError(f"{path} is not a delegate-sdk artifact (no manifest.json)")
            manifest = json.loads(z.read("manifest.json"))
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise ArtifactCorruptError(f"{path} is not a delegate-sdk artifact (manifest format "
                                           f"{manifest.get('format') if isinstance(manifest, dict) else '?'!r})")
            version = manifest.get("format_version")
            if version != FORMAT_VERSION:
                raise ArtifactVersionError(f"{path} has artifact format version {version}; this delegate-sdk "
                                           f"{delegate_sdk.__version__} reads version {FORMAT_VERSION}")
            hashes: dict[str, str] = manifest["sha256"]
            data: dict[str, bytes] = {}
            for name, want in hashes.items():
                if name not in names:
                    raise ArtifactCorruptError(f"{path} is missing {name} (truncated or edited?)")
                blob = z.read(name)
                if hashlib.sha256(blob).hexdigest() != want:
                    raise ArtifactCorruptError(f"{path}: SHA-256 of {name} does not match the manifest "
                                               "(the file is corrupt or was modified)")
                data[name] = blob
    except zipfile.BadZipFile as e:
        raise ArtifactCorruptError(f"{path} is corrupt or truncated, or not a delegate-sdk artifact ({e})") from None
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        if isinstance(e, DelegateSDKError):
            raise
        raise ArtifactCorruptError(f"{path}: manifest is malformed ({type(e).__name__}: {e})") from None
    except (OSError, EOFError) as e:
        raise ArtifactCorruptError(f"{path} could not be read: {e}") from None

    try:
        records = [DelegateRecord.from_json(r) for r in manifest["partitions"]]
        graph = OuterGraph.from_json(json.loads(data["graph.json"]))
        weights = _unpack_weights(manifest["weights"], data["weights.bin"])
        inputs = [InputSpec.from_json(s) for s in manifest["inputs"]]
        fallback = [FallbackNode.from_json(f) for f in manifest.get("fallback", [])]
        blobs = [data[f"blobs/{r.id}.bin"] for r in records]
        sections = [{name: data[_section_entry(sha)] for name, sha in r.sections.items()} for r in records]
        out_spec = str(manifest["out_spec"])
        in_spec = str(manifest.get("in_spec", ""))
        macs_total = int(manifest.get("macs_total", 0))
        nodes_total = int(manifest.get("nodes_total", 0))
        model_sha256 = str(manifest.get("model_sha256", ""))
        compile_failures = [CompileFailure.from_json(c) for c in manifest.get("compile_failures", [])]
        keep_ops = [str(k) for k in manifest.get("keep_ops", [])]
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactCorruptError(f"{path}: manifest is malformed ({type(e).__name__}: {e})") from None
    for rec in records:
        _check_backend(registry, rec, path)
    try:
        pytree.treespec_loads(out_spec)
        if in_spec:
            pytree.treespec_loads(in_spec)
    except Exception as e:  # whatever a malformed tree spec makes torch raise
        raise ArtifactCorruptError(f"{path}: the input/output structure is malformed ({type(e).__name__}: "
                                   f"{e})") from None
    parts = _Parts(graph, records, blobs, weights, inputs, out_spec, fallback, nodes_total, in_spec=in_spec,
                   macs_total=macs_total, model_sha256=model_sha256, compile_failures=compile_failures,
                   sections=sections, keep_ops=keep_ops)
    return Program(parts, registry)


def _section_entry(sha256: str) -> str:
    return f"sections/{sha256}.bin"


def _check_backend(registry: Registry, rec: DelegateRecord, path: Path) -> None:
    try:
        backend = registry.get(rec.backend)
    except UnknownBackendError:
        raise MissingPluginError(f"{path} needs the {rec.backend!r} plugin (partition {rec.id}, written with "
                                 f"{rec.backend} {rec.plugin_version}), which is not installed: "
                                 f"pip install delegate-sdk-{rec.backend.replace('_', '-')}") from None
    info = backend.require_available()
    lo, hi = info.loadable_format_versions
    if rec.format != info.blob_format or not lo <= rec.format_version <= hi:
        raise ArtifactVersionError(
            f"partition {rec.id} holds a {rec.format} v{rec.format_version} blob (written by {rec.backend} "
            f"{rec.plugin_version}); the installed {rec.backend} {info.version} loads {info.blob_format} "
            f"v{lo}..v{hi}. Re-lower the model with the installed plugin.")
