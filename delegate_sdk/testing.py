"""The plugin kit: what a plugin's own tests need, done exactly the way the core does it.

Every function takes the backend by its installed name, so a test exercises the plugin as users get it
(entry point, ``describe``, option validation), not a module imported on the side::

    from delegate_sdk import testing

    def test_conv_claimed():
        result = testing.claim("acme", Conv(), (torch.randn(1, 3, 8, 8),))
        assert result.refused == {}                      # every candidate taken

    def test_conv_matches_eager():
        run = testing.lower_and_run("acme", Conv(), (torch.randn(1, 3, 8, 8),))
        assert run.sqnr_db() > 60

    def test_quick_conformance(tmp_path):                 # or one line of pytest config: see pytest_plugin
        testing.run_conform("acme", ["-k", "^op/(add|conv2d)/"], tmp_path).assert_quick_subset(min_ops=2)

:func:`capture` gives the ``ExportedProgram`` your hooks see (core ATen, with your ``keep_ops`` whole),
:func:`candidates` the exact node list ``claim`` receives, :func:`claim` your answer checked against the
contract, :func:`lower_and_run` one strict lowering run against eager PyTorch, :func:`side_by_side` many
one-op cases as one model (one compile instead of one per op; :meth:`SideBySide.split` gives each case its
outputs back; :func:`check_side_by_side` judges each case and names the culprit when the group fails), and
:func:`run_conform` the real ``delegate-sdk conform`` command in a child process.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.export import ExportedProgram

from delegate_sdk.conformance.expectations import is_unexpected
from delegate_sdk.types import Claims, Refusal

__all__ = ["ClaimResult", "ConformRun", "LoweredRun", "SideBySide", "candidates", "capture", "check_side_by_side",
           "claim", "lower_and_run", "ops_without_conformance_case", "run_conform", "side_by_side"]


def capture(backend: str | None, model: torch.nn.Module, args: tuple[Any, ...], *,
            kwargs: dict[str, Any] | None = None, dynamic_shapes: Any = None,
            keep_ops: tuple[str, ...] = ()) -> ExportedProgram:
    """``model`` exported and decomposed to core ATen with ``backend``'s ``keep_ops`` kept whole: the
    program ``claim`` receives. With ``backend=None``, ``keep_ops`` says what to keep (default: nothing)."""
    from delegate_sdk.capture import capture as _capture
    from delegate_sdk.registry import default_registry

    if backend is not None:
        keep_ops = default_registry().get(backend).require_available().keep_ops
    return _capture(model, args, dynamic_shapes=dynamic_shapes, keep_ops=keep_ops, example_kwargs=kwargs)


def candidates(program: ExportedProgram) -> list[torch.fx.Node]:
    """The nodes the core hands to ``claim`` of the first backend in a priority list: every computing node,
    except ``getitem`` (placed with its producer) and what the core keeps on the host (shape arithmetic)."""
    from delegate_sdk.subgraph import build_dep_graph

    dep, nodes = build_dep_graph(program)
    return [n for i, n in enumerate(nodes) if dep.follows[i] < 0 and dep.fixed[i] is None]


@dataclass
class ClaimResult:
    """A plugin's ``claim`` answer for one model, checked against the contract like the core checks it."""

    program: ExportedProgram
    candidates: list[str]
    claims: Claims

    @property
    def claimed(self) -> list[str]:
        return list(self.claims.claimed)

    @property
    def refused(self) -> dict[str, Refusal]:
        """Refused node name -> its refusal (``{}`` when everything was taken)."""
        return {r.node: r for r in self.claims.refused}

    def ops_claimed(self) -> set[str]:
        from delegate_sdk.support import op_name

        by_name = {n.name: n for n in self.program.graph.nodes}
        return {op_name(by_name[n]) for n in self.claims.claimed}


def claim(backend: str, model: torch.nn.Module, args: tuple[Any, ...], *, kwargs: dict[str, Any] | None = None,
          dynamic_shapes: Any = None, **options: Any) -> ClaimResult:
    """Capture ``model`` for ``backend`` and call its ``claim`` hook on the core's candidate list, with
    ``options`` validated and defaults filled in as for a real lowering. A contract violation (a node left
    out, answered twice, refused without a reason) raises ``ContractError`` as it would for a user."""
    from delegate_sdk.partition import _check_claims
    from delegate_sdk.registry import default_registry

    b = default_registry().get(backend)
    info = b.require_available()
    ep = capture(backend, model, args, kwargs=kwargs, dynamic_shapes=dynamic_shapes)
    nodes = candidates(ep)
    opts = b.options(options)
    if info.hosts_ops:
        opts.setdefault("hosted_ops", False)
    claims = b.hook.call("claim", program=ep, nodes=nodes, options=opts)
    names = [n.name for n in nodes]
    _check_claims(backend, claims, names, may_host=bool(opts.get("hosted_ops")))
    return ClaimResult(ep, names, claims)


@dataclass
class LoweredRun:
    """One strict lowering of a model onto one backend, run on the same inputs as eager PyTorch."""

    program: Any
    outputs: list[torch.Tensor]
    expected: list[torch.Tensor]

    def sqnr_db(self) -> float:
        """The worst output's SQNR against eager in dB (``inf`` when bit-exact)."""
        from delegate_sdk.metrics import compare

        worst = math.inf
        for c in compare(self.outputs, self.expected):
            worst = min(worst, math.inf if c.sqnr_db is None else c.sqnr_db)
        return worst

    def max_abs_err(self) -> float:
        from delegate_sdk.metrics import compare

        return max((c.max_abs_err for c in compare(self.outputs, self.expected)), default=0.0)

    def partitions(self) -> int:
        return len(self.program.summary().partitions)


def lower_and_run(backend: str, model: torch.nn.Module, args: tuple[Any, ...], *,
                  kwargs: dict[str, Any] | None = None, calibration: Any = None,
                  inputs: tuple[Any, ...] | None = None, **options: Any) -> LoweredRun:
    """Lower ``model`` onto ``backend`` alone with ``strict=True`` (a node left on eager PyTorch fails the
    test, naming the node and your reason), then run it and eager PyTorch on ``inputs`` (default ``args``)."""
    import delegate_sdk
    from torch.utils import _pytree as pytree

    # min_benefit off: a one-op test of a view is about the view, not whether a partition pays for itself
    prog = delegate_sdk.lower(model, args, [backend], example_kwargs=kwargs, strict=True, min_benefit=False,
                              options={backend: options} if options else None, calibration=calibration)
    run_args = inputs if inputs is not None else args
    with torch.no_grad():
        got = prog(*run_args, **(kwargs or {}))
        want = model.eval()(*run_args, **(kwargs or {}))
    return LoweredRun(prog, list(pytree.tree_leaves(got)), list(pytree.tree_leaves(want)))


class _SideBySideModule(torch.nn.Module):
    def __init__(self, modules: list[torch.nn.Module], arity: list[int]) -> None:
        super().__init__()
        self.cases = torch.nn.ModuleList(modules)
        self.arity = arity

    def forward(self, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs: list[torch.Tensor] = []
        i = 0
        for mod, n in zip(self.cases, self.arity):
            r = mod(*flat[i:i + n])
            i += n
            outs.extend(r if isinstance(r, (tuple, list)) else [r])
        return tuple(outs)


@dataclass
class SideBySide:
    """Several one-op cases as one model: its inputs are the cases' inputs one after another, its outputs
    the cases' outputs one after another (``spans[k]``: case k's first output and how many it has;
    ``expected``: eager PyTorch's outputs on ``args``)."""

    model: torch.nn.Module
    args: tuple[torch.Tensor, ...]
    spans: list[tuple[int, int]]
    expected: tuple[torch.Tensor, ...]

    def split(self, outputs: Any) -> list[list[Any]]:
        """The flat outputs of ``model`` (lowered or eager), one list per case."""
        flat = list(outputs)
        return [flat[start:start + count] for start, count in self.spans]


def side_by_side(cases: Any) -> SideBySide:
    """One model running ``cases`` (each a ``(module, args)`` pair of tensors) side by side, so that a
    toolchain compiles a dozen op cases at once instead of one by one (its fixed cost per compile, and
    torch's per decomposition, is then paid once). Each case reads only its own inputs; when the group fails,
    run its cases one by one to name the culprit."""
    modules, flat, arity, spans, expected = [], [], [], [], []
    for module, args in cases:
        module = module.eval()
        with torch.no_grad():
            r = module(*args)
        outs = list(r) if isinstance(r, (tuple, list)) else [r]
        modules.append(module)
        flat.extend(args)
        arity.append(len(args))
        spans.append((len(expected), len(outs)))
        expected.extend(outs)
    return SideBySide(_SideBySideModule(modules, arity).eval(), tuple(flat), spans, tuple(expected))


def check_side_by_side(cases: dict[str, tuple[torch.nn.Module, tuple[Any, ...]]],
                       run: Callable[[torch.nn.Module, tuple[Any, ...]], Any],
                       judge: Callable[[str, Any, range], list[str]]) -> list[str]:
    """Every problem of ``cases`` (name -> ``(module, args)``), found with one ``run`` of them side by side.

    ``run(model, args)`` compiles and runs a model (raising when it cannot); ``judge(name, result, outputs)``
    lists what is wrong with one case, ``outputs`` being the indices of that case's outputs in ``result``.
    When the group's run raises, each case is run alone, so that the problem names the case that has it.
    """
    names = list(cases)
    group = side_by_side([cases[n] for n in names])
    try:
        result = run(group.model, group.args)
    except Exception as e:  # noqa: BLE001 - a case broke the group: find which, one by one
        problems: list[str] = []
        for n, (_, count) in zip(names, group.spans):
            try:
                single = run(*cases[n])
            except Exception as e1:  # noqa: BLE001
                problems.append(f"{n}: {type(e1).__name__}: {e1}")
                continue
            problems += judge(n, single, range(count))
        return problems or [f"{', '.join(names)} fail together ({type(e).__name__}: {e}) and pass one by one"]
    return [p for n, (start, count) in zip(names, group.spans) for p in judge(n, result, range(start, start + count))]


def ops_without_conformance_case(backend: str, ops: Any) -> list[str]:
    """The ops of ``ops`` (e.g. ``table.ops_at("fp32")``) that no conformance case is about: neither the
    built-in corpus nor ``backend``'s ``conformance_cases``. Every op you claim needs one, or conformance
    certifies nothing about it."""
    from delegate_sdk.conformance.runner import collect_cases

    covered = {getattr(c, "op", None) for c in collect_cases(backend, "ops")}
    return sorted(set(ops) - covered)


@dataclass
class ConformRun:
    """The outcome of one ``delegate-sdk conform`` process."""

    exit_code: int
    output: str
    cases: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)

    @property
    def outcomes(self) -> Counter[str]:
        return Counter(c["outcome"] for c in self.cases)

    def passed_ops(self) -> set[str]:
        """Distinct ops every claimed sample of which passed fully delegated (as the report counts them)."""
        return set(self.summary.get("ops_passed_fully_delegated", ()))

    def assert_clean(self, min_pass: int = 1) -> None:
        """Exit code 0 (no unexpected outcome, and the run certified something), and at least ``min_pass``
        samples PASS (so an empty selection or a plugin that claims nothing cannot look clean)."""
        bad = [f"{c['id']}: {c['outcome']} {c['detail']}" for c in self.cases if is_unexpected(c["outcome"], False)]
        assert self.exit_code == 0 and not bad, (
            f"conform exited {self.exit_code}; unexpected: {bad}; not certified: "
            f"{self.verdict.get('problems')}\n{self.output[-4000:]}")
        passed = self.outcomes["PASS"] + self.outcomes["PASS_PARTIAL"]
        assert passed >= min_pass, f"only {passed} samples passed (want >= {min_pass}): {dict(self.outcomes)}"

    def assert_quick_subset(self, min_pass: int = 5, min_ops: int = 4, model: bool = True) -> None:
        """What a plugin's CI subset must show: clean, at least ``min_ops`` distinct ops pass fully delegated,
        and (with ``model``) at least one model case passes, so the subset really ran on the toolchain."""
        self.assert_clean(min_pass=min_pass)
        assert len(self.passed_ops()) >= min_ops, (sorted(self.passed_ops()), dict(self.outcomes))
        if model:
            assert any(c["kind"] == "model" and c["outcome"] in ("PASS", "PASS_PARTIAL") for c in self.cases), \
                dict(self.outcomes)


def run_conform(plugin: str, args: list[str], report_dir: Path, timeout_s: float = 1800) -> ConformRun:
    """Run ``delegate-sdk conform --plugin PLUGIN ARGS --report-dir REPORT_DIR`` in a child process and
    read back its ``report.json``."""
    cmd = [sys.executable, "-m", "delegate_sdk.cli", "conform", "--plugin", plugin, *args,
           "--report-dir", str(report_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    output = proc.stdout + proc.stderr
    report = Path(report_dir) / "report.json"
    data = json.loads(report.read_text()) if report.exists() else {}
    return ConformRun(proc.returncode, output, data.get("cases", []), data.get("summary", {}),
                      data.get("verdict", {}))
