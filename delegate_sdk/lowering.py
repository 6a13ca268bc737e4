"""From a model to a Program: capture, claim, partition, calibrate, preprocess, assemble."""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from delegate_sdk import module_paths
from delegate_sdk.capture import as_args, decompose, export, model_fingerprint
from delegate_sdk.errors import ContractError, FallbackError, InputError, PluginError, UsageError
from delegate_sdk.graph_ir import build_outer_graph
from delegate_sdk.inspect_report import InspectReport, NodePlacement, PartitionPlanInfo
from delegate_sdk.metrics import node_macs
from delegate_sdk.partition import PartitionPlan, plan_partitions
from delegate_sdk.program import CompileFailure, FallbackNode, Program, _Parts
from delegate_sdk.registry import Backend, Registry, default_registry
from delegate_sdk.runtime import DelegateRecord
from delegate_sdk.signature import flat_spec, flatten_call, input_signature
from delegate_sdk.subgraph import Subgraph, build_dep_graph, compute_nodes, extract
from delegate_sdk.support import op_name
from delegate_sdk.types import Claims, CompiledDelegate, ReasonCode, Refusal, TensorSpec

log = logging.getLogger(__name__)

_WEIGHT_KINDS = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)


@dataclass(frozen=True)
class Entry:
    """One entry of a priority list: a backend, at one precision when the entry says (``xnnpack:int8``)."""

    label: str
    backend: str
    precision: str | None = None


def parse_entries(backends: str | Iterable[str]) -> list[Entry]:
    """``"qnn,xnnpack:int8,xnnpack:fp32"`` -> entries; one backend may appear at several precisions."""
    raw = [b.strip() for b in backends.split(",")] if isinstance(backends, str) else [str(b).strip() for b in backends]
    entries = []
    for item in (b for b in raw if b):
        name, sep, precision = item.partition(":")
        if sep and not (name.strip() and precision.strip()):
            raise UsageError(f"{item!r}: a backend entry is NAME or NAME:PRECISION (e.g. xnnpack:int8)")
        name, precision = name.strip(), precision.strip()
        entries.append(Entry(f"{name}:{precision}" if sep else name, name, precision or None))
    if not entries:
        raise UsageError("give at least one backend")
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise UsageError(f"backend listed twice: {labels}")
    for name in {e.backend for e in entries}:
        mine = [e for e in entries if e.backend == name]
        if len(mine) > 1 and any(e.precision is None for e in mine):
            raise UsageError(f"{name} is listed more than once: to fall back from one precision of it to "
                             f"another, give every entry its precision (e.g. {name}:int8,{name}:fp32)")
    return entries


@dataclass
class _Session:
    ep: ExportedProgram
    #: per entry label, the backend that serves it (one plugin may serve several entries)
    backends: dict[str, Backend]
    #: per entry label, its validated options
    options: dict[str, dict[str, Any]]
    plan: PartitionPlan
    nodes: dict[str, torch.fx.Node]
    #: the example call's leaves, in the order the program takes them
    example: list[Any]
    #: capture.model_fingerprint of the exported model
    fingerprint: str = ""
    #: the model as exported, before decomposition (reused when a lowering is planned again)
    exported: ExportedProgram | None = None
    #: the ops left whole in the decomposition the partitions were cut from
    keep_ops: tuple[str, ...] = ()


def _hosting(hosted_ops: bool | Iterable[str], entries: list[Entry], infos: list[Any]) -> set[str]:
    """The entries that may host ops in this lowering: all that can (True), or those named (by entry or backend)."""
    if hosted_ops is True:
        return {e.label for e, i in zip(entries, infos) if i.hosts_ops}
    if not hosted_ops:
        return set()
    wanted = {hosted_ops} if isinstance(hosted_ops, str) else set(hosted_ops)
    chosen: set[str] = set()
    for w in sorted(wanted):
        mine = [(e, i) for e, i in zip(entries, infos) if w in (e.label, e.backend)]
        if not mine:
            raise UsageError(f"hosted_ops names {w!r}, which is not among the backends {[e.label for e in entries]}")
        if not mine[0][1].hosts_ops:
            raise UsageError(f"backend {w!r} cannot host ops on its CPU (its BackendInfo.hosts_ops is false)")
        chosen.update(e.label for e, _ in mine)
    return chosen


def _entry_options(entries: list[Entry], chosen: list[Backend], options: dict[str, dict[str, Any]]
                   ) -> dict[str, dict[str, Any]]:
    """Validated options per entry: the backend's options, then the entry's own, then the entry's precision."""
    labels = {e.label for e in entries} | {e.backend for e in entries}
    stray = [k for k in options if k not in labels]
    if stray:
        raise UsageError(f"options given for {stray[0]!r}, which is not among the backends "
                         f"{[e.label for e in entries]}")
    out = {}
    for e, b in zip(entries, chosen):
        given = {**options.get(e.backend, {}), **(options.get(e.label, {}) if e.label != e.backend else {})}
        if e.precision is not None:
            if given.get("precision", e.precision) != e.precision:
                raise UsageError(f"{e.label} says precision {e.precision}, its options say {given['precision']}")
            given["precision"] = e.precision
        out[e.label] = b.options(given)
    return out


def _prepare(model: Any, example_inputs: Any, backends: list[str], options: dict[str, dict[str, Any]] | None,
             dynamic_shapes: Any, registry: Registry, skip_ops: Iterable[str], skip_nodes: Iterable[str],
             min_partition_size: int, hosted_ops: bool | Iterable[str] = False,
             example_kwargs: dict[str, Any] | None = None,
             failed: dict[str, dict[str, str]] | None = None, min_benefit: bool = True,
             exported: ExportedProgram | None = None, cut_at_modules: Sequence[str] = ()) -> _Session:
    """Capture and partition. ``failed``: backend -> {node: why} of partitions that backend failed to compile
    in an earlier attempt (fallback mode): those nodes count as refused by it."""
    failed = failed or {}
    entries = parse_entries(backends)
    if min_partition_size < 1:
        raise UsageError("min_partition_size must be at least 1")
    chosen = [registry.get(e.backend) for e in entries]
    infos = [b.require_available() for b in chosen]
    opts = _entry_options(entries, chosen, dict(options or {}))
    hosting = _hosting(hosted_ops, entries, infos)
    for e, info in zip(entries, infos):
        if info.hosts_ops:  # only plugins that can host see the key
            opts[e.label]["hosted_ops"] = e.label in hosting
    names = [e.label for e in entries]
    serving = dict(zip(names, chosen))
    raw = exported if exported is not None else export(model, example_inputs, dynamic_shapes=dynamic_shapes,
                                                        example_kwargs=example_kwargs)

    def attempt(keep: set[str], first: bool = False) -> tuple[ExportedProgram, PartitionPlan,
                                                               dict[str, torch.fx.Node]]:
        ep = decompose(raw, keep)
        _reject_mutations(ep)
        # a skip entry is a node name or a module path; one unknown in the first plan is a typo, while a node
        # name can vanish from a trial that decomposes an op
        skip, unknown = module_paths.resolve(compute_nodes(ep), skip_nodes)
        if unknown and first:
            raise UsageError(module_paths.unknown_message(compute_nodes(ep), unknown))
        dep, nodes = build_dep_graph(ep, skip_ops=skip_ops, skip_nodes=skip)
        by_name = {n.name: n for n in nodes}

        def claim(backend_name: str, candidates: list[str]) -> Any:
            backend = serving[backend_name]
            before = _fingerprint(ep)
            try:
                result = backend.hook.call("claim", program=ep, nodes=[by_name[c] for c in candidates],
                                           options=dict(opts[backend_name]))
            except Exception as e:
                raise PluginError(backend_name, "claim", f"{type(e).__name__}: {e}") from e
            if _fingerprint(ep) != before:
                raise ContractError(backend_name, "claim", "modified the program it was asked to inspect")
            return _without_failed(result, failed.get(backend_name, {}), backend_name)

        plan = plan_partitions(dep, names, claim, min_partition_size=min_partition_size, hosting=hosting)
        if cut_at_modules:
            plan = _cut_at_modules(plan, by_name, cut_at_modules)
        return ep, _drop_trivial(plan, ep, by_name) if min_benefit else plan, by_name

    keep = {op for info in infos for op in info.keep_ops}
    ep, plan, by_name = attempt(keep, first=True)
    # An op kept whole for a lower-priority backend hides its pieces from the backends before it (nn.Linear
    # kept for xnnpack is one node qnn refuses; decomposed, qnn takes its addmm): decompose it when that
    # gives fewer partitions (then fewer nodes left on eager PyTorch)
    present = {op_name(n) for n in ep.graph.nodes if n.op == "call_function"}
    for op in sorted((keep - set(infos[0].keep_ops)) & present):
        trial = attempt(keep - {op})
        if _plan_cost(trial[1]) < _plan_cost(plan):
            keep.discard(op)
            ep, plan, by_name = trial
            log.info("decomposed %s, kept whole only for a lower-priority backend: %d partitions", op,
                     len(plan.partitions))
    if len(plan.partitions) > MANY_PARTITIONS:
        log.warning("%d partitions: each is one delegate call per run (~25 us through a runtime); consider "
                    "hosted_ops=True, min_partition_size, or another backend order", len(plan.partitions))
    example = _leaves(ep, example_inputs, example_kwargs)
    return _Session(ep, serving, opts, plan, by_name, example, model_fingerprint(raw), raw, tuple(sorted(keep)))


def _without_failed(claims: Any, failed: dict[str, str], backend: str) -> Any:
    """``claims`` with the nodes whose partition this backend failed to compile moved to refused."""
    if not failed or not isinstance(claims, Claims):
        return claims
    gone = [n for n in (*claims.claimed, *claims.hosted) if n in failed]
    if not gone:
        return claims
    return Claims(tuple(n for n in claims.claimed if n not in failed),
                  (*claims.refused, *(Refusal(n, ReasonCode.COMPILE_FAILED, failed[n], backend) for n in gone)),
                  tuple(n for n in claims.hosted if n not in failed))


#: above this many partitions a lowering warns: per-call overhead dominates small models
MANY_PARTITIONS = 32

#: ops that only move or view data: a partition of one or two of them costs a delegate call for no compute
DATA_MOVEMENT = frozenset({
    "aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", "aten.permute.default",
    "aten.transpose.int", "aten.t.default", "aten.expand.default", "aten.slice.Tensor", "aten.select.int",
    "aten.squeeze.dims", "aten.squeeze.dim", "aten.unsqueeze.default", "aten.clone.default", "aten.alias.default",
    "aten._to_copy.default", "aten.flatten.using_ints", "aten.contiguous.default", "operator.getitem",
})


def _drop_trivial(plan: PartitionPlan, ep: ExportedProgram, by_name: dict[str, torch.fx.Node]) -> PartitionPlan:
    """The minimum-benefit rule: a partition that only computes a constant, or only moves data through one or
    two views, costs a delegate call and buys nothing; its nodes run on eager PyTorch instead, with the reason."""
    from delegate_sdk.partition import Partition
    from delegate_sdk.support import folded_constants

    folded = folded_constants(ep)
    kept: list[Partition] = []
    fallback = dict(plan.fallback)
    for p in plan.partitions:
        ops = {op_name(by_name[n]) for n in p.nodes if n in by_name}
        accelerated = [n for n in p.nodes if n not in p.hosted and by_name.get(n) is not None
                       and by_name[n].target is not operator.getitem]
        if all(n in folded for n in p.nodes):
            why = "its partition would only compute a constant: eager PyTorch computes it without a delegate call"
        elif len(accelerated) <= 2 and ops <= DATA_MOVEMENT:
            why = (f"its partition would only move data ({', '.join(sorted(o.split('.')[1] for o in ops))}): a "
                   "delegate call costs more than eager PyTorch's view")
        else:
            kept.append(p)
            continue
        for n in p.nodes:
            fallback[n] = [*fallback.get(n, []), Refusal(n, ReasonCode.TRIVIAL, why, p.backend)]
    if len(kept) == len(plan.partitions):
        return plan
    renamed = [Partition(f"p{k}", p.backend, p.nodes, p.hosted) for k, p in enumerate(kept)]
    placement = {n: p.id for p in renamed for n in p.nodes}
    return PartitionPlan(renamed, {n: r for n, r in fallback.items() if n not in placement}, placement)


def _cut_at_modules(plan: PartitionPlan, by_name: dict[str, torch.fx.Node], modules: Sequence[str]) -> PartitionPlan:
    """Each partition split where its nodes pass from one of ``modules`` to another (or to none), so that a
    module's boundary is a partition boundary. Runs of a topological order stay acyclic: a path from a later
    run back to an earlier one would have left and re-entered the partition, which no partition allows."""
    from delegate_sdk.partition import Partition

    wanted = set(modules)
    pos = {name: k for k, name in enumerate(by_name)}

    def producer(name: str) -> str:
        node = by_name[name]
        while node.target is operator.getitem and isinstance(node.args[0], torch.fx.Node):
            node = node.args[0]
        return node.name

    pieces: list[tuple[str, list[str], list[str]]] = []
    for p in plan.partitions:
        runs: list[tuple[str, list[str]]] = []
        run_of: dict[str, int] = {}
        for n in sorted(p.nodes, key=pos.__getitem__):
            if producer(n) != n:
                continue  # a getitem goes with its producer, wherever the order puts it
            c = next((m for m in module_paths.module_stack(by_name[n]) if m in wanted), "")
            if not runs or runs[-1][0] != c:
                runs.append((c, []))
            runs[-1][1].append(n)
            run_of[n] = len(runs) - 1
        for n in p.nodes:
            if producer(n) != n:
                runs[run_of[producer(n)]][1].append(n)
        pieces += [(p.backend, sorted(ns, key=pos.__getitem__), [h for h in p.hosted if h in set(ns)])
                   for _, ns in runs]
    pieces.sort(key=lambda t: pos[t[1][0]])
    parts = [Partition(f"p{k}", b, ns, hs) for k, (b, ns, hs) in enumerate(pieces)]
    return PartitionPlan(parts, dict(plan.fallback), {n: p.id for p in parts for n in p.nodes})


def _plan_cost(plan: PartitionPlan) -> tuple[int, int]:
    return len(plan.partitions), len(plan.fallback)


def _in_spec(ep: ExportedProgram) -> pytree.TreeSpec:
    n = sum(1 for sp in ep.graph_signature.input_specs if sp.kind == InputKind.USER_INPUT)
    return ep.call_spec.in_spec if ep.call_spec.in_spec is not None else flat_spec(n)


def _leaves(ep: ExportedProgram, args: Any, kwargs: dict[str, Any] | None) -> list[Any]:
    """The leaves of one call, in the program's order (for an ExportedProgram given without inputs: its own)."""
    if args is None and kwargs is None:
        from delegate_sdk.capture import example_call_of

        args, kwargs = example_call_of(ep)
    return flatten_call(as_args(args) if args is not None else (), dict(kwargs or {}), _in_spec(ep))


def _fingerprint(ep: ExportedProgram) -> tuple[Any, ...]:
    return tuple((n.name, str(n.target), len(n.args), len(n.users)) for n in ep.graph.nodes)


def _reject_mutations(ep: ExportedProgram) -> None:
    for spec in ep.graph_signature.output_specs:
        if spec.kind != OutputKind.USER_OUTPUT:
            raise UsageError(f"the model mutates state ({spec.kind.name.lower()} of {spec.target}); call "
                             "model.eval() and remove in-place updates of buffers or inputs before lowering")


def _is_host(reasons: list[Any]) -> bool:
    return bool(reasons) and all(r.code == ReasonCode.HOST for r in reasons)


def _placements(s: _Session) -> tuple[list[NodePlacement], dict[str, str]]:
    """Every compute node; shape arithmetic on the host (sym_size & co.) is not a placement decision."""
    backend_of = {p.id: p.backend for p in s.plan.partitions}
    hosted = {n for p in s.plan.partitions for n in p.hosted}
    out = []
    for name, node in s.nodes.items():
        if _is_host(s.plan.fallback.get(name, [])):
            continue
        pid = s.plan.placement.get(name)
        out.append(NodePlacement(name, op_name(node), pid, backend_of.get(pid) if pid else None,
                                 list(s.plan.fallback.get(name, [])), name in hosted))
    return out, backend_of


def _mark_risks(s: _Session, placements: list[NodePlacement]) -> None:
    """Attach to each delegated node what its backend's shipped expectations record against its op."""
    from delegate_sdk.risks import known_risks

    per_entry = {label: known_risks(b, s.options[label]["precision"]) for label, b in s.backends.items()}
    for p in placements:
        if p.backend is not None and not p.hosted:
            p.risks = [str(r) for r in per_entry[p.backend].get(p.op, [])]


def _fallback_nodes(s: _Session) -> list[FallbackNode]:
    return [FallbackNode(name, op_name(s.nodes[name]), list(reasons)) for name, reasons in s.plan.fallback.items()
            if not _is_host(reasons)]


def _check_strict(s: _Session) -> None:
    real = [(n, r) for n, r in s.plan.fallback.items() if not _is_host(r)]
    if not real:
        return
    lines = []
    for name, reasons in real[:20]:
        why = "; ".join(f"{r.backend}: {r.code.value}: {r.message}" for r in reasons) or "no reason"
        lines.append(f"{name} ({op_name(s.nodes[name])}): {why}")
    more = f" (and {len(real) - 20} more)" if len(real) > 20 else ""
    raise FallbackError(f"strict mode: {len(real)} node(s) would run on eager PyTorch{more}: " + " | ".join(lines))


def inspect(model: Any, example_inputs: Any, backends: list[str], *,
            options: dict[str, dict[str, Any]] | None = None, dynamic_shapes: Any = None,
            skip_ops: Iterable[str] = (), skip_nodes: Iterable[str] = (), min_partition_size: int = 1,
            estimate: bool = False, calibration: Any = None, registry: Registry | None = None,
            hosted_ops: bool | Iterable[str] = False, example_kwargs: dict[str, Any] | None = None,
            min_benefit: bool = True) -> InspectReport:
    """Who would take which node and why not. ``estimate=True`` also compiles each partition to report the
    toolchain's performance estimate (``perf``) where the plugin gives one. ``hosted_ops``: let backends that
    can (``BackendInfo.hosts_ops``; True for all of them, or their names) run refused ops on their host CPU
    inside their partitions, so that partitions merge; such nodes are counted apart."""
    registry = registry or default_registry()
    s = _prepare(model, example_inputs, backends, options, dynamic_shapes, registry, skip_ops, skip_nodes,
                 min_partition_size, hosted_ops, example_kwargs, min_benefit=min_benefit)
    placements, _ = _placements(s)
    _mark_risks(s, placements)
    perfs: dict[str, Any] = {}
    if estimate and s.plan.partitions:
        try:
            compiled, _ = _compile_all(s, calibration)
        except _PartitionFailed as e:
            raise e.error from e.error.__cause__
        perfs = {pid: cd.perf for pid, (cd, _sub) in compiled.items()}
    parts = [PartitionPlanInfo(p.id, p.backend, p.nodes, sorted({op_name(s.nodes[n]) for n in p.nodes}),
                               perfs.get(p.id), list(p.hosted)) for p in s.plan.partitions]
    return InspectReport(list(s.backends), placements, parts)


def lower(model: Any, example_inputs: Any, backends: list[str], *,
          options: dict[str, dict[str, Any]] | None = None, calibration: Any = None, dynamic_shapes: Any = None,
          strict: bool = False, skip_ops: Iterable[str] = (), skip_nodes: Iterable[str] = (),
          min_partition_size: int = 1, registry: Registry | None = None,
          hosted_ops: bool | Iterable[str] = False, example_kwargs: dict[str, Any] | None = None,
          on_compile_error: str | None = None, min_benefit: bool = True,
          cut_at_modules: Sequence[str] = ()) -> Program:
    """Capture, partition and compile; see :func:`delegate_sdk.lower`.

    ``on_compile_error``: ``"raise"`` (a partition its backend fails to compile fails the lowering) or
    ``"fallback"`` (its nodes count as refused by that backend, with the error as the reason, and go to the
    next backend or eager PyTorch). The default is ``"fallback"`` for a list of several backends and
    ``"raise"`` for one (what a vendor certifying one plugin wants to see). ``min_benefit``: leave to eager
    PyTorch a partition that would only compute a constant or move data through one or two views
    (``ReasonCode.TRIVIAL``); conformance turns it off, since there the single op is what is tested.
    ``cut_at_modules``: module paths whose boundaries must be partition boundaries (per-layer localisation
    measures each module's error that way; ``delegate_sdk.layers``)."""
    registry = registry or default_registry()
    mode = on_compile_error or ("fallback" if len(parse_entries(backends)) > 1 else "raise")
    if mode not in ("raise", "fallback"):
        raise UsageError(f"on_compile_error must be 'raise' or 'fallback', not {on_compile_error!r}")
    failed: dict[str, dict[str, str]] = {}
    failures: list[CompileFailure] = []
    done: dict[tuple[str, tuple[str, ...]], CompiledDelegate] = {}
    exported: ExportedProgram | None = None
    while True:  # after a compile failure: plan again (export once, compile only what is new)
        s = _prepare(model, example_inputs, backends, options, dynamic_shapes, registry, skip_ops, skip_nodes,
                     min_partition_size, hosted_ops, example_kwargs, failed, min_benefit, exported, cut_at_modules)
        exported = s.exported
        if strict:
            _check_strict(s)
        try:
            compiled, subgraphs = _compile_all(s, calibration, done)
        except _PartitionFailed as e:
            if mode == "raise":
                raise e.error from e.error.__cause__
            log.warning("%s; its nodes fall back to the next backend or eager PyTorch", e.error)
            why = f"compiling its partition failed: {e.error.detail}"
            failed.setdefault(e.error.backend, {}).update({n: why for n in e.nodes})
            failures.append(CompileFailure(e.error.backend, e.nodes, e.error.detail))
            continue
        prog = _assemble(s, compiled, subgraphs, registry)
        prog._parts.compile_failures = failures
        return prog


class _PartitionFailed(Exception):
    """One partition failed to compile (carries the SDK error and the partition's nodes)."""

    def __init__(self, error: PluginError, nodes: list[str]):
        super().__init__(str(error))
        self.error = error
        self.nodes = nodes


def _compile_all(s: _Session, calibration: Any, done: dict[tuple[str, tuple[str, ...]], CompiledDelegate] | None = None
                 ) -> tuple[dict[str, tuple[CompiledDelegate, Subgraph]], dict[str, Subgraph]]:
    """Compile every partition (``done``: blobs already compiled in an earlier attempt, by backend and nodes).
    A partition that fails raises _PartitionFailed."""
    done = {} if done is None else done
    subgraphs = {p.id: extract(s.ep, p.nodes, hosted=p.hosted) for p in s.plan.partitions}
    infos = {label: b.info() for label, b in s.backends.items()}
    quantized = {p.id for p in s.plan.partitions
                 if infos[p.backend].precision(s.options[p.backend]["precision"]).quantized}
    calib: dict[str, list[tuple[torch.Tensor, ...]]] = {}
    if quantized:
        samples = _calibration_samples(calibration, s)
        wanted = {pid: subgraphs[pid].inputs for pid in quantized}
        calib = capture_boundaries(s.ep, samples, wanted)
    compiled: dict[str, tuple[CompiledDelegate, Subgraph]] = {}
    for p in s.plan.partitions:
        sub = subgraphs[p.id]
        backend = s.backends[p.backend]
        key = (p.backend, tuple(p.nodes))
        if key in done:
            compiled[p.id] = (done[key], sub)
            continue
        log.info("compiling partition %s on %s (%d nodes)", p.id, p.backend, len(p.nodes))
        try:
            try:
                cd = backend.hook.call("preprocess", program=sub.program, options=dict(s.options[p.backend]),
                                       calibration=calib.get(p.id))
            except PluginError:
                raise
            except Exception as e:
                raise PluginError(p.backend, "preprocess", f"{type(e).__name__}: {_short(e)}", p.id) from e
            _check_compiled(p.backend, p.id, cd, sub, p.id in quantized)
        except PluginError as e:
            raise _PartitionFailed(e, list(p.nodes)) from e
        compiled[p.id] = (cd, sub)
        done[key] = cd
    return compiled, subgraphs


def _short(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    return text if len(text) <= 500 else text[:497] + "..."


def _check_compiled(backend: str, pid: str, cd: Any, sub: Subgraph, quantized: bool) -> None:
    if not isinstance(cd, CompiledDelegate):
        raise ContractError(backend, "preprocess", f"returned {type(cd).__name__}, expected CompiledDelegate", pid)
    if not isinstance(cd.blob, (bytes, bytearray)):
        raise ContractError(backend, "preprocess", f"blob is {type(cd.blob).__name__}, expected bytes", pid)
    if not isinstance(cd.format_version, int) or not cd.format:
        raise ContractError(backend, "preprocess", "format and an integer format_version are required", pid)
    if not isinstance(cd.sections, dict) or not all(
            isinstance(k, str) and k and isinstance(v, (bytes, bytearray)) for k, v in cd.sections.items()):
        raise ContractError(backend, "preprocess", "sections must map non-empty names to bytes", pid)
    try:
        json.dumps(cd.meta)
        json.dumps(cd.op_counts)
        json.dumps(cd.debug_map)
    except (TypeError, ValueError) as e:
        raise ContractError(backend, "preprocess", f"meta is not JSON-serialisable: {e}", pid) from None
    n_out = len(sub.outputs)
    if cd.output_quant and len(cd.output_quant) != n_out:
        raise ContractError(backend, "preprocess", f"output_quant has {len(cd.output_quant)} entries for "
                                                   f"{n_out} outputs", pid)
    if quantized and not cd.output_quant:
        raise ContractError(backend, "preprocess", "quantized precision but output_quant is empty; report each "
                                                   "output's QuantParams (None for float outputs)", pid)


def _calibration_samples(calibration: Any, s: _Session) -> list[tuple[Any, ...]]:
    """Each calibration sample as the program's leaves. A sample is what the example inputs were: the positional
    arguments (a tuple, or one tensor), or, for a model that takes keywords, a dict of them or an
    ``(args, kwargs)`` pair."""
    if calibration is None:
        log.warning("quantized precision but no calibration data; calibrating on the example inputs only")
        return [tuple(s.example)]
    spec = _in_spec(s.ep)
    samples = []
    for k, sample in enumerate(calibration):
        tries: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        if isinstance(sample, dict):
            tries.append(((), sample))
        if (isinstance(sample, (tuple, list)) and len(sample) == 2 and isinstance(sample[1], dict)
                and isinstance(sample[0], (tuple, list))):
            tries.append((tuple(sample[0]), sample[1]))
        tries.append((as_args(sample), {}))
        leaves = None
        problem = ""
        for args, kwargs in tries:
            try:
                leaves = flatten_call(args, kwargs, spec)
                break
            except InputError as e:
                problem = problem or str(e)
        if leaves is None:
            raise UsageError(f"calibration sample #{k} does not have the structure of the example inputs: {problem}")
        samples.append(tuple(leaves))
    if not samples:
        raise UsageError("calibration is empty")
    return samples


def _flat_args(ep: ExportedProgram, user_inputs: tuple[torch.Tensor, ...]) -> list[Any]:
    args, it = [], iter(user_inputs)
    for spec in ep.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            args.append(next(it))
        elif spec.kind == InputKind.CONSTANT_TENSOR or spec.target in ep.constants:
            args.append(ep.constants[spec.target])
        else:
            args.append(ep.state_dict[spec.target])
    return args


def capture_boundaries(ep: ExportedProgram, samples: list[tuple[torch.Tensor, ...]],
                       wanted: dict[str, list[str]]) -> dict[str, list[tuple[torch.Tensor, ...]]]:
    """Run ``ep`` eagerly on each sample; per key, the tuple of values of the named nodes."""
    names = {n for ns in wanted.values() for n in ns}
    out: dict[str, list[tuple[torch.Tensor, ...]]] = {k: [] for k in wanted}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            v = super().run_node(n)
            if n.name in names:
                seen[n.name] = v.detach().clone() if isinstance(v, torch.Tensor) else v
            return v

    gm = ep.graph_module
    for sample in samples:
        seen: dict[str, Any] = {}
        with torch.no_grad():
            Recorder(gm).run(*_flat_args(ep, sample))
        for key, ns in wanted.items():
            out[key].append(tuple(seen[n] for n in ns))
    return out


def _tensor_spec(node: torch.fx.Node) -> TensorSpec:
    val = node.meta.get("val")
    shape = tuple(int(d) if isinstance(d, int) else str(d) for d in val.shape)
    return TensorSpec(str(val.dtype).removeprefix("torch."), shape)


def _assemble(s: _Session, compiled: dict[str, tuple[CompiledDelegate, Subgraph]], subgraphs: dict[str, Subgraph],
              registry: Registry) -> Program:
    ep = s.ep
    all_nodes = {n.name: n for n in ep.graph.nodes}
    records, blobs, sections, index, io = [], [], [], {}, {}
    pool: dict[str, bytes] = {}  # SHA-256 -> one copy of each distinct section, shared by the partitions
    for k, p in enumerate(s.plan.partitions):
        cd, sub = compiled[p.id]
        backend = s.backends[p.backend]
        rec = DelegateRecord.from_compiled(
            p.id, backend.name, backend.info().version, s.options[p.backend], cd, p.nodes,
            sorted({op_name(s.nodes[n]) for n in p.nodes}),
            [_tensor_spec(all_nodes[i]) for i in sub.inputs], [_tensor_spec(all_nodes[o]) for o in sub.outputs],
            hosted=list(p.hosted))
        rec.macs = sum(node_macs(s.nodes[n]) for n in p.nodes if n in s.nodes and n not in set(p.hosted))
        rec.input_nodes, rec.output_nodes = list(sub.inputs), list(sub.outputs)
        records.append(rec)
        blobs.append(bytes(cd.blob))
        sections.append({name: pool.setdefault(rec.sections[name], bytes(data)) for name, data in cd.sections.items()})
        index[p.id] = k
        io[p.id] = (sub.inputs, sub.outputs)

    user_inputs = [sp.arg.name for sp in ep.graph_signature.input_specs if sp.kind == InputKind.USER_INPUT]
    weight_specs = {sp.arg.name: sp for sp in ep.graph_signature.input_specs if sp.kind in _WEIGHT_KINDS}
    graph = build_outer_graph(ep.graph, user_inputs, [], s.plan.placement, io, index)
    used = _referenced(graph)
    weights = {}
    for name, sp in weight_specs.items():
        if name in used:
            weights[name] = ep.constants[sp.target] if sp.target in ep.constants else ep.state_dict[sp.target]
    graph.weights = list(weights)
    parts = _Parts(graph, records, blobs, weights, input_signature(ep),
                   _storable_spec(ep.call_spec.out_spec), _fallback_nodes(s),
                   s.plan.nodes_total - sum(1 for r in s.plan.fallback.values() if _is_host(r)),
                   in_spec=_storable_in_spec(_in_spec(ep)), macs_total=sum(node_macs(n) for n in s.nodes.values()),
                   model_sha256=s.fingerprint, sections=sections, keep_ops=list(s.keep_ops))
    return Program(parts, registry, {pid: sg.program for pid, sg in subgraphs.items()}, source=ep)


def _storable_spec(spec: pytree.TreeSpec) -> str:
    """The output structure as JSON; named tuples (``torch.return_types.max``) become plain tuples."""
    try:
        return pytree.treespec_dumps(spec)
    except (NotImplementedError, TypeError, ValueError):
        pass

    def plain(x: Any) -> Any:
        if isinstance(x, tuple):
            return tuple(plain(v) for v in x)
        if isinstance(x, list):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x

    structure = plain(pytree.tree_unflatten(list(range(spec.num_leaves)), spec))
    try:
        return pytree.treespec_dumps(pytree.tree_flatten(structure)[1])
    except (NotImplementedError, TypeError, ValueError) as e:
        raise UsageError(f"the model's output structure cannot be stored ({e}); return tensors, tuples, lists "
                         "or dicts of them") from None


def _storable_in_spec(spec: pytree.TreeSpec) -> str:
    try:
        return pytree.treespec_dumps(spec)
    except (NotImplementedError, TypeError, ValueError) as e:
        raise UsageError(f"the model's input structure cannot be stored ({e}); take tensors (or numbers) in "
                         "tuples, lists or dicts") from None


def _referenced(graph: Any) -> set[str]:
    out: set[str] = set()

    def walk(a: Any) -> None:
        if isinstance(a, dict):
            if "ref" in a and len(a) == 1:
                out.add(a["ref"])
            else:
                for v in a.values():
                    walk(v)
        elif isinstance(a, list):
            for v in a:
                walk(v)

    for n in graph.nodes:
        walk(n.args)
        walk(n.kwargs)
    walk(graph.outputs)
    return out
