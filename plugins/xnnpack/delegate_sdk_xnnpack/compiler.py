"""preprocess: one claimed partition -> an ExecuTorch program whose every op runs inside the XNNPACK delegate.

fp32: copy the partition, respell it for the XNNPACK partitioner (``rewrites``),
``to_edge_transform_and_lower`` with the ``XnnpackPartitioner``, check that the
lowered graph is nothing but XNNPACK delegate calls, serialize with
``to_executorch``.

int8: the same, after pt2e static quantization with the XNNPACK quantizer on
the calibration inputs the core captured for this partition (``quantize``).
The program takes and returns float tensors; quantize/dequantize at its
boundary run inside the delegate as XNNPACK convert ops.

The blob is the ``.pte`` flatbuffer without its weights: the partition's
constants are tagged as external, so ``to_executorch`` writes them to a
``.ptd`` data map that goes in the ``weights.ptd`` section (format v2). The
artifact stores equal sections once, so the steps of an unrolled RNN, which
use the same weights, ship them once (as ExecuTorch's own single ``.pte``
does). ``meta`` carries only what ``init`` and the user need to read (counts,
the output quantization, the sections the runtime must be given).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import operator
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, InputSpec, TensorArgument

from delegate_sdk.errors import ContractError
from delegate_sdk.types import HOSTED_META, CompiledDelegate, QuantParams

from delegate_sdk_xnnpack import quantize, rewrites
from delegate_sdk_xnnpack._toolchain import compiler, executorch_version, quiet
from delegate_sdk_xnnpack.runtime import WEIGHTS_SECTION, load_module

log = logging.getLogger(__name__)

BLOB_FORMAT = "executorch-pte/xnnpack"
#: v1: weights inside the .pte; v2: weights in the ``weights.ptd`` section
BLOB_FORMAT_VERSION = 2
BACKEND = "xnnpack"

_WEIGHT_KINDS = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)
_SCALAR_BINARY = (torch.ops.aten.add.Tensor, torch.ops.aten.sub.Tensor, torch.ops.aten.mul.Tensor,
                  torch.ops.aten.div.Tensor)


class LoweringError(RuntimeError):
    """The ExecuTorch toolchain failed on a partition (short message, no toolchain traceback)."""


@dataclass
class Lowered:
    """What the toolchain produced for one partition."""

    pte: bytes
    #: the external data map (``.ptd``) holding the constants, or None when the partition has none
    weights: bytes | None = None
    op_counts: dict[str, int] = field(default_factory=dict)
    debug_map: dict[str, list[str]] = field(default_factory=dict)
    output_quant: list[QuantParams | None] = field(default_factory=list)
    seconds: float = 0.0


# ----------------------------------------------------------------------------- entry point


def compile_partition(program: ExportedProgram, options: dict[str, Any],
                      calibration: list[tuple[torch.Tensor, ...]] | None) -> CompiledDelegate:
    precision = str(options.get("precision", "fp32"))
    if precision not in ("fp32", "int8"):
        raise ValueError(f"xnnpack: unknown precision {precision!r}; valid: fp32, int8")
    n_inputs = _count_user_inputs(program)
    if precision == "int8":
        calibration = _check_calibration(calibration, n_inputs)

    key = _cache_key(program, precision, calibration)
    hit = _CACHE.get(key)
    if hit is not None:
        log.debug("xnnpack: partition already compiled in this process, reusing the blob")
        lowered = hit
    else:
        t0 = time.perf_counter()
        if precision == "int8":
            assert calibration is not None
            lowered = _lower_int8(program, calibration)
        else:
            lowered = _lower_fp32(program)
        lowered.seconds = time.perf_counter() - t0
        _smoke_load(lowered.pte, lowered.weights)
        _CACHE.put(key, lowered)
        log.info("xnnpack: compiled %d-op partition at %s in %.2fs (%d bytes + %d bytes of weights)",
                 sum(lowered.op_counts.values()), precision, lowered.seconds, len(lowered.pte),
                 len(lowered.weights or b""))

    meta = {
        "precision": precision,
        "executorch": executorch_version(),
        "n_inputs": n_inputs,
        "n_outputs": len(program.graph_signature.output_specs),
        "compile_seconds": round(lowered.seconds, 3),
        "output_quant": [q.to_json() if q else None for q in lowered.output_quant],
        "sections": [WEIGHTS_SECTION] if lowered.weights is not None else [],
    }
    return CompiledDelegate(
        blob=lowered.pte,
        format=BLOB_FORMAT,
        format_version=BLOB_FORMAT_VERSION,
        meta=meta,
        output_quant=list(lowered.output_quant) if precision == "int8" else [None] * meta["n_outputs"],
        perf=None,
        debug_map=dict(lowered.debug_map),
        op_counts=dict(lowered.op_counts),
        sections={WEIGHTS_SECTION: lowered.weights} if lowered.weights is not None else {},
    )


def _count_user_inputs(program: ExportedProgram) -> int:
    return sum(1 for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT)


def _check_calibration(calibration: list[tuple[torch.Tensor, ...]] | None,
                       n_inputs: int) -> list[tuple[torch.Tensor, ...]]:
    if not calibration:
        raise ValueError("xnnpack int8 needs calibration inputs for this partition (pass calibration=[...] "
                         "to lower); none were given")
    out = []
    for k, sample in enumerate(calibration):
        sample = tuple(sample) if isinstance(sample, (tuple, list)) else (sample,)
        if len(sample) != n_inputs:
            raise ValueError(f"xnnpack int8: calibration sample #{k} has {len(sample)} tensors, "
                             f"the partition takes {n_inputs}")
        out.append(tuple(t.detach() for t in sample))
    return out


# ----------------------------------------------------------------------------- fp32


def _lower_fp32(program: ExportedProgram) -> Lowered:
    ep = _copy_program(program)
    gm = ep.graph_module
    weights = _weight_placeholders(ep)
    counts = rewrites.for_lowering(gm.graph, lambda n: n in weights)
    gm.graph.eliminate_dead_code()
    ep = _lift_scalar_operands(_resync_signature(ep, gm))
    log.debug("xnnpack: rewrites %s", {k: v for k, v in counts.items() if v})
    return _lower(ep, program, output_quant=[])


def _copy_program(ep: ExportedProgram) -> ExportedProgram:
    """A structural copy (new graph, shared weights): preprocess must not change the core's program.

    User inputs become contiguous: the core may cut a partition behind a view
    (an ``expand``'s zero strides, a ``permute``), ExecuTorch cannot serialize
    such an input, and ``execute`` hands the runtime contiguous tensors anyway.
    """
    g = torch.fx.Graph()
    out = g.graph_copy(ep.graph, {})
    g.output(out)
    gm = torch.fx.GraphModule(ep.graph_module, g)
    user = {s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT
            and isinstance(s.arg, TensorArgument)}
    for old, new in zip((n for n in ep.graph.nodes if n.op == "placeholder"),
                        (n for n in g.nodes if n.op == "placeholder")):
        val = new.meta.get("val")
        if old.name in user and isinstance(val, torch.Tensor) and not val.is_contiguous():
            new.meta = {**new.meta, "val": val.clone(memory_format=torch.contiguous_format)}
            new.meta.pop("tensor_meta", None)
    return _resync_signature(ep, gm, constants=dict(ep.constants))


def _resync_signature(ep: ExportedProgram, gm: torch.fx.GraphModule,
                      constants: dict[str, Any] | None = None) -> ExportedProgram:
    """The signature names graph nodes; copies and rewrites may rename them, so rebuild it in order."""
    sig = ep.graph_signature
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    outputs = list(gm.graph.output_node().args[0])

    def rename(spec: Any, node: Any) -> Any:
        if isinstance(spec.arg, TensorArgument) and isinstance(node, torch.fx.Node):
            return dataclasses.replace(spec, arg=TensorArgument(name=node.name))
        return spec

    sig = dataclasses.replace(sig, input_specs=[rename(s, n) for s, n in zip(sig.input_specs, placeholders)],
                              output_specs=[rename(s, n) for s, n in zip(sig.output_specs, outputs)])
    gm.recompile()
    return ep._update(gm, sig, constants=constants)


def _weight_placeholders(ep: ExportedProgram) -> set[torch.fx.Node]:
    kinds = {s.arg.name: s.kind for s in ep.graph_signature.input_specs if isinstance(s.arg, TensorArgument)}
    return {n for n in ep.graph.nodes if n.op == "placeholder" and kinds.get(n.name) in _WEIGHT_KINDS}


def _lift_scalar_operands(ep: ExportedProgram) -> ExportedProgram:
    """Python scalars of float binary ops -> constant tensors of the op's dtype.

    ExecuTorch otherwise lifts them itself as float32 (or int64) constants plus
    a dtype conversion XNNPACK cannot run, which would stay outside the delegate
    for any float16 op and any integer scalar.
    """
    gm = ep.graph_module
    targets = [n for n in gm.graph.nodes if n.op == "call_function" and n.target in _SCALAR_BINARY
               and isinstance(n.meta.get("val"), torch.Tensor) and n.meta["val"].dtype.is_floating_point
               and any(isinstance(a, (int, float)) for a in n.args[:2])]
    if not targets:
        return ep
    from torch._guards import detect_fake_mode

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    fake_mode = detect_fake_mode([n.meta.get("val") for n in placeholders if n.meta.get("val") is not None])
    specs = list(ep.graph_signature.input_specs)
    first_user = next((i for i, s in enumerate(specs) if s.kind == InputKind.USER_INPUT), len(specs))
    anchor = placeholders[first_user] if first_user < len(placeholders) else None
    constants = dict(ep.constants)
    lifted: dict[tuple[float, torch.dtype], torch.fx.Node] = {}
    for node in targets:
        dtype = node.meta["val"].dtype
        args = list(node.args)
        for i, a in enumerate(args[:2]):
            if not isinstance(a, (int, float)):
                continue
            k = (float(a), dtype)
            if k not in lifted:
                name = f"_xnnpack_scalar_{len(lifted)}"
                t = torch.tensor(float(a), dtype=dtype)
                ctx = gm.graph.inserting_before(anchor) if anchor is not None else gm.graph.inserting_before(
                    next(iter(gm.graph.nodes)))
                with ctx:
                    ph = gm.graph.placeholder(name)
                ph.meta["val"] = fake_mode.from_tensor(t) if fake_mode is not None else t
                specs.insert(first_user, InputSpec(InputKind.CONSTANT_TENSOR, TensorArgument(ph.name), name))
                first_user += 1
                constants[name] = t
                lifted[k] = ph
            args[i] = lifted[k]
        node.args = tuple(args)
    sig = dataclasses.replace(ep.graph_signature, input_specs=specs)
    gm.recompile()
    return ep._update(gm, sig, constants=constants)


# ----------------------------------------------------------------------------- int8


def quantized_module(program: ExportedProgram, calibration: list[tuple[torch.Tensor, ...]]) -> torch.fx.GraphModule:
    """The partition as a calibrated q/dq GraphModule (the fake-quant model the int8 blob implements)."""
    gm = program.module()
    rewrites.max_pool_without_indices(gm.graph)
    rewrites.squeeze_to_view(gm.graph)
    rewrites.addmm_to_linear(gm.graph, lambda n: n.op == "get_attr")
    rewrites.convolution_to_convnd(gm.graph)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    quantize.scalar_operands_to_constants(gm)
    return quantize.calibrate_and_convert(gm, calibration)


def _lower_int8(program: ExportedProgram, calibration: list[tuple[torch.Tensor, ...]]) -> Lowered:
    try:
        with quiet("xnnpack int8 quantization"):
            qgm = quantized_module(program, calibration)
            qparams = quantize.output_qparams(qgm)
            example = tuple(t.contiguous() for t in calibration[0])  # see _copy_program
            qep = torch.export.export(qgm, example, strict=False)
    except Exception as e:
        raise LoweringError(f"int8 quantization with the XNNPACK quantizer failed: {_first_line(e)}") from e
    missing = [i for i, q in enumerate(qparams) if q is None]
    if missing:
        raise ContractError(backend=BACKEND, stage="preprocess",
                            detail=f"int8 output(s) {missing} are not quantized by the XNNPACK quantizer, "
                                   "so no output scale can be reported")
    output_quant: list[QuantParams | None] = [
        QuantParams(scale=q[0], zero_point=q[1], dtype=_qdtype_name(q[4])) for q in qparams if q is not None]
    return _lower(qep, program, output_quant=output_quant)


def _qdtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


# ----------------------------------------------------------------------------- shared lowering


def _lower(ep: ExportedProgram, original: ExportedProgram, *, output_quant: list[QuantParams | None]) -> Lowered:
    tc = compiler()
    _mark_weights_external(ep)
    try:
        with quiet("xnnpack lowering"), _memoized_cia_ops():
            edge = tc.to_edge_transform_and_lower(ep, partitioner=[tc.XnnpackPartitioner()])
    except Exception as e:
        raise LoweringError(f"ExecuTorch XNNPACK lowering failed: {_first_line(e)}") from e
    lowered_ep = edge.exported_program()
    originals = {n.name for n in original.graph.nodes if n.op == "call_function"}
    hosted = {n.name for n in original.graph.nodes if n.op == "call_function" and n.meta.get(HOSTED_META)}
    portable = _check_all_delegated(lowered_ep, originals, hosted)
    op_counts, debug_map = _delegate_contents(lowered_ep, originals)
    for name, count in portable.items():
        op_counts[f"portable:{name}"] = count
    try:
        with quiet("xnnpack serialization"), tempfile.TemporaryDirectory(prefix="dsdk-xnnpack-") as tmp:
            et = edge.to_executorch()
            pte = bytes(et.buffer)
            et.write_tensor_data_to_file(tmp)
            files = {f.name: f.read_bytes() for f in Path(tmp).iterdir()}
    except Exception as e:
        raise LoweringError(f"ExecuTorch serialization (to_executorch) failed: {_first_line(e)}") from e
    unexpected = set(files) - {WEIGHTS_SECTION}
    if unexpected:
        raise LoweringError(f"ExecuTorch wrote data files this plugin does not ship: {sorted(unexpected)}")
    return Lowered(pte=pte, weights=files.get(WEIGHTS_SECTION), op_counts=op_counts, debug_map=debug_map,
                   output_quant=output_quant)


def _mark_weights_external(ep: ExportedProgram) -> None:
    """Tag every weight for ExecuTorch's external data map: XNNPACK then writes it to ``weights.ptd``, not the .pte.

    Constants the XNNPACK passes create while lowering (folded int8 weights) carry no tag and stay inside.
    """
    tag = WEIGHTS_SECTION.removesuffix(".ptd")  # ExecuTorch appends .ptd to the file it writes
    for node in _weight_placeholders(ep):
        # a new dict: a shallow graph copy shares the original node's
        node.meta["custom"] = {**node.meta.get("custom", {}), "delegate_constant_tag": tag}


def _check_all_delegated(ep: ExportedProgram, originals: set[str], hosted: set[str]) -> dict[str, int]:
    """Everything outside an XNNPACK delegate call runs on ExecuTorch's portable kernels: only nodes claimed as
    hosted may (else a claim bug). Returns the portable ops by name."""
    tc = compiler()
    outside = [n for n in ep.graph.nodes if n.op == "call_function"
               and n.target is not operator.getitem and n.target is not tc.executorch_call_delegate]
    portable: dict[str, int] = {}
    stray = []
    for n in outside:
        src = _origin_names(n, originals)
        if hosted and set(src) <= hosted:  # what ExecuTorch inserts around hosted ops has no origin of its own
            portable[_short_target(n)] = portable.get(_short_target(n), 0) + 1
        else:
            stray.append(n)
    if stray:
        desc = ", ".join(f"{_origin_names(n, originals) or n.name} ({_short_target(n)})" for n in stray[:5])
        more = f" and {len(stray) - 5} more" if len(stray) > 5 else ""
        raise ContractError(backend=BACKEND, stage="preprocess",
                            detail=f"claimed node(s) would run outside XNNPACK on ExecuTorch's portable kernels: "
                                   f"{desc}{more}")
    return portable


def _delegate_contents(ep: ExportedProgram, originals: set[str]) -> tuple[dict[str, int], dict[str, list[str]]]:
    counts: dict[str, int] = {}
    debug: dict[str, list[str]] = {}
    for node in ep.graph.nodes:
        if node.op != "get_attr":
            continue
        lm = getattr(ep.graph_module, str(node.target), None)
        inner = getattr(lm, "original_module", None)
        if inner is None:
            continue
        for n in inner.graph.nodes:
            if n.op != "call_function" or n.target is operator.getitem:
                continue
            op = _short_target(n)
            counts[op] = counts.get(op, 0) + 1
            src = _origin_names(n, originals)
            if src:
                debug[f"{node.target}/{n.name}"] = src
    return counts, debug


def _short_target(n: torch.fx.Node) -> str:
    t = n.target
    name = getattr(t, "_name", None) or getattr(t, "__name__", None) or str(t)
    overload = getattr(t, "_overloadname", None)
    name = str(name).split("::")[-1]
    if overload and not name.endswith(f".{overload}"):
        name = f"{name}.{overload}"
    return name


def _origin_names(n: torch.fx.Node, originals: set[str]) -> list[str]:
    """Names in the partition handed to preprocess that ``n`` was derived from (via fx provenance)."""
    found: list[str] = []

    def walk(sources: Any, depth: int) -> None:
        for s in sources or ():
            name = getattr(s, "name", None)
            if name in originals and name not in found:
                found.append(name)
            if depth < 32:
                walk(getattr(s, "from_node", None), depth + 1)

    if n.name in originals:
        found.append(n.name)
    walk(n.meta.get("from_node"), 0)
    return found


def _smoke_load(pte: bytes, weights: bytes | None) -> None:
    """Load the program once: XNNPACK builds its runtime graph at load and rejects what it cannot run then."""
    try:
        with quiet("xnnpack load check"):
            load_module(pte, weights)
    except Exception as e:
        raise ContractError(backend=BACKEND, stage="preprocess",
                            detail=f"the XNNPACK runtime rejected the compiled program at load: {_first_line(e)}") from e


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(e).__name__}: {text}"


# ----------------------------------------------------------------------------- repeated work


class _LRU:
    """Compiled partitions by content: the same subgraph with the same weights compiles once per process."""

    def __init__(self, size: int = 32, max_blob: int = 64 << 20):
        self._d: OrderedDict[str, Lowered] = OrderedDict()
        self._size = size
        self._max_blob = max_blob
        self._lock = threading.Lock()

    def get(self, key: str) -> Lowered | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: str, v: Lowered) -> None:
        if len(v.pte) > self._max_blob:
            return
        with self._lock:
            self._d[key] = v
            self._d.move_to_end(key)
            while len(self._d) > self._size:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


_CACHE = _LRU()


def clear_cache() -> None:
    _CACHE.clear()


def _tensor_digest(h: Any, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def _cache_key(program: ExportedProgram, precision: str,
               calibration: list[tuple[torch.Tensor, ...]] | None) -> str:
    h = hashlib.sha256()
    h.update(f"{precision}|{executorch_version()}|".encode())
    for n in program.graph.nodes:
        val = n.meta.get("val")
        meta = (f"{val.dtype}{tuple(val.shape)}{val.stride()}" if isinstance(val, torch.Tensor) else "")
        h.update(f"{n.op}|{n.name}|{n.target}|{n.args}|{n.kwargs}|{meta}\n".encode())
    for s in program.graph_signature.input_specs:
        h.update(f"{s.kind}|{getattr(s.arg, 'name', '')}|{s.target}\n".encode())
        if s.target is not None:
            t = program.state_dict.get(s.target, program.constants.get(s.target))
            if isinstance(t, torch.Tensor):
                _tensor_digest(h, t)
    for sample in calibration or ():
        for t in sample:
            _tensor_digest(h, t)
    return h.hexdigest()


# ----------------------------------------------------------------------------- torch.export overhead


_cia_lock = threading.Lock()


class _memoized_cia_ops:
    """Memoize torch.export's list of decomposable (CompositeImplicitAutograd) ops during one lowering.

    ``to_edge_transform_and_lower`` runs ``run_decompositions`` several times
    and each run walks every op namespace to rebuild that list (about half of
    the lowering time of a small partition). torch does not cache it because a
    custom op may be registered at any time; inside one lowering nobody
    registers ops, so the list is computed once per lowering and torch's own
    function is restored afterwards.
    """

    def __enter__(self) -> None:
        import torch.export.decomp_utils as du
        import torch.export.exported_program as epm

        _cia_lock.acquire()
        self._mods = [m for m in (epm, du) if hasattr(m, "_collect_all_valid_cia_ops")]
        self._orig = [m._collect_all_valid_cia_ops for m in self._mods]
        original = self._orig[0] if self._orig else None
        memo: dict[str, Any] = {}

        def collect() -> Any:
            if "v" not in memo:
                memo["v"] = original()
            return memo["v"]

        for m in self._mods:
            m._collect_all_valid_cia_ops = collect

    def __exit__(self, *exc: Any) -> None:
        try:
            for m, f in zip(self._mods, self._orig):
                m._collect_all_valid_cia_ops = f
        finally:
            _cia_lock.release()
