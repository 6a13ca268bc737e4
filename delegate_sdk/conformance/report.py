"""Conformance reports: ``report.json`` (schema ``delegate-sdk/conformance-report/v2``), ``report.md``,
``junit.xml``.

One entry per sample (id ``op/add/broadcast``): a case's samples share its export and lowering but
each is judged, and can fail, on its own. A failing sample carries what a vendor needs to act on it: the
inputs it was given (shapes, dtypes, strides, edge values), a command that reruns exactly that sample, the
stage it failed in and, for CRASH and TIMEOUT, the worker's Python stack.

v2 (from v1): the run's verdict (``verdict``: passed, and every reason it did not besides unexpected
outcomes), the expectations file applied (``expectations``: source and SHA-256), the precision's meaning
(``precision_spec``), whether the runtime contract was checked (``runtime_checks``), honest op counts
(``summary.ops_passed_fully_delegated`` counts an op only when *every* claimed sample of it passes fully
delegated; ``summary.ops_some_samples_fail`` lists the others that ran), and per case ``raw_outcome``,
``expectation``, ``stage``, ``checks``, ``inputs``, ``repro`` and ``stack``.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from delegate_sdk.conformance.expectations import FAILING, OUTCOMES, is_unexpected

SCHEMA = "delegate-sdk/conformance-report/v2"

#: outcomes of a sample the plugin did not take part in
NOT_RUN = ("SKIP", "NOT_CLAIMED")


@dataclass
class CaseResult:
    id: str
    case_id: str
    kind: str  # "op" | "model"
    op: str | None
    outcome: str
    detail: str = ""
    nodes_total: int | None = None
    nodes_delegated: int | None = None
    metrics: dict[str, Any] = field(default_factory=lambda: {"max_abs_err": None, "sqnr_db": None})
    tolerance: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    #: where it failed: lower, fresh (the artifact in a fresh process), init, threads, execute
    stage: str = ""
    #: innermost Python frames of the worker for CRASH / TIMEOUT, most recent first
    stack: list[str] = field(default_factory=list)
    #: of ``nodes_delegated``, those the backend ran hosted on its CPU (``--hosted-ops``), not accelerated
    nodes_hosted: int | None = None
    #: runtime contract checks this sample went through
    checks: list[str] = field(default_factory=list)
    #: the outcome before expectations were applied, and the expectation's reason when one matched
    raw_outcome: str = ""
    expectation: str | None = None
    #: for failing samples: the inputs it ran on, and a command that reruns exactly this sample
    inputs: dict[str, Any] | None = None
    repro: str = ""

    def __post_init__(self) -> None:
        if not self.raw_outcome:
            self.raw_outcome = self.outcome

    @classmethod
    def from_worker(cls, d: dict[str, Any]) -> CaseResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "op": self.op, "outcome": self.outcome,
                "raw_outcome": self.raw_outcome, "expectation": self.expectation, "detail": self.detail,
                "stage": self.stage, "nodes_total": self.nodes_total, "nodes_delegated": self.nodes_delegated,
                "nodes_hosted": self.nodes_hosted,
                "metrics": _clean(self.metrics), "tolerance": _clean(self.tolerance), "checks": list(self.checks),
                "inputs": _clean(self.inputs) if self.inputs is not None else None, "repro": self.repro,
                "stack": list(self.stack), "duration_s": round(float(self.duration_s), 4)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CaseResult:
        case_id = "/".join(d["id"].split("/")[:2])
        return cls(d["id"], case_id, d["kind"], d.get("op"), d["outcome"], d.get("detail", ""),
                   d.get("nodes_total"), d.get("nodes_delegated"), d.get("metrics") or {}, d.get("tolerance") or {},
                   d.get("duration_s", 0.0), d.get("stage", ""), list(d.get("stack") or []),
                   list(d.get("checks") or []), d.get("raw_outcome", ""), d.get("expectation"), d.get("inputs"),
                   d.get("repro", ""), d.get("nodes_hosted"))

    @property
    def claimed(self) -> bool:
        """The plugin took part: it delegated something, or failed trying."""
        return self.raw_outcome not in NOT_RUN


@dataclass(frozen=True)
class ExpectationsSource:
    """Which expectations file was applied: where it came from and its SHA-256."""

    source: str
    sha256: str
    entries: int

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "entries": self.entries}


@dataclass
class Report:
    plugin: dict[str, Any]
    sdk_version: str
    torch_version: str
    precision: str
    seed: int
    started: str
    duration_s: float
    cases: list[CaseResult]
    strict: bool = False
    precision_spec: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    expectations: ExpectationsSource | None = None
    runtime_checks: bool = True
    min_pass: int = 1
    min_ops: int = 0
    command: str = ""
    #: the run let the plugin host ops on its CPU (``--hosted-ops``); hosted nodes never count as a full pass
    hosted_ops: bool = False
    #: where the work ran: {"kind": "local" | "ray", ..., "where": {place: {workers, units, busy_s}}} (timings)
    executor: dict[str, Any] = field(default_factory=dict)

    def by_outcome(self) -> dict[str, int]:
        c = Counter(r.outcome for r in self.cases)
        return {o: c[o] for o in OUTCOMES if c[o]}

    def _op_groups(self) -> dict[str, list[CaseResult]]:
        groups: dict[str, list[CaseResult]] = defaultdict(list)
        for r in self.cases:
            if r.kind == "op" and r.op and r.claimed:
                groups[r.op].append(r)
        return groups

    def ops_passed(self) -> list[str]:
        """Distinct ops every claimed op-case sample of which PASSed fully delegated (what vendors quote)."""
        return sorted(op for op, rs in self._op_groups().items() if all(r.raw_outcome == "PASS" for r in rs))

    def ops_some_fail(self) -> list[str]:
        """Distinct ops with at least one claimed sample that failed (expected or not)."""
        return sorted(op for op, rs in self._op_groups().items() if any(r.raw_outcome in FAILING for r in rs))

    def ops_partial(self) -> list[str]:
        """Distinct ops whose claimed samples all passed, some with nodes left to eager PyTorch."""
        failed, full = set(self.ops_some_fail()), set(self.ops_passed())
        return sorted(op for op in self._op_groups() if op not in failed and op not in full)

    def passed_samples(self) -> int:
        """Samples that passed (an XPASS passed too)."""
        return sum(1 for r in self.cases if r.raw_outcome in ("PASS", "PASS_PARTIAL"))

    def unexpected(self) -> list[CaseResult]:
        return [r for r in self.cases if is_unexpected(r.outcome, self.strict)]

    def problems(self) -> list[str]:
        """Why this run certifies nothing, besides unexpected outcomes (each one line)."""
        out = []
        if not self.cases:
            out.append("no sample was selected (check -k, --suite and --shard): nothing was certified")
            return out
        if not any(r.nodes_delegated for r in self.cases):
            out.append(f"plugin {self.plugin.get('name')!r} took no node in any of the {len(self.cases)} samples: "
                       "nothing was certified")
        n = self.passed_samples()
        if n < self.min_pass:
            out.append(f"{n} sample(s) passed, fewer than the {self.min_pass} required (--min-pass)")
        ops = len(self.ops_passed())
        if ops < self.min_ops:
            out.append(f"{ops} distinct op(s) pass every claimed sample fully delegated, fewer than the "
                       f"{self.min_ops} required (--min-ops)")
        if not self.runtime_checks:
            out.append("the runtime contract was not checked (--skip-runtime-checks): not a certificate")
        return out

    def passed(self) -> bool:
        return not self.unexpected() and not self.problems()

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "plugin": self.plugin, "sdk_version": self.sdk_version,
                "torch_version": self.torch_version, "precision": self.precision,
                "precision_spec": self.precision_spec, "options": _clean(self.options), "seed": self.seed,
                "started": self.started, "duration_s": round(self.duration_s, 3), "command": self.command,
                "executor": _clean(self.executor),
                "runtime_checks": self.runtime_checks, "hosted_ops": self.hosted_ops,
                "expectations": self.expectations.to_json() if self.expectations else None,
                "requirements": {"min_pass": self.min_pass, "min_ops": self.min_ops, "strict": self.strict},
                "verdict": {"passed": self.passed(), "unexpected": len(self.unexpected()),
                            "problems": self.problems()},
                "summary": {"total": len(self.cases), "by_outcome": self.by_outcome(),
                            "passed_samples": self.passed_samples(),
                            "ops_passed_fully_delegated": self.ops_passed(),
                            "ops_some_samples_fail": self.ops_some_fail(),
                            "ops_pass_partially_delegated": self.ops_partial()},
                "cases": [r.to_json() for r in self.cases]}


def _clean(v: Any) -> Any:
    """JSON-safe: non-finite floats become None, tuples lists."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    return str(v)


def write_json(report: Report, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=1, allow_nan=False) + "\n", encoding="utf-8")


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _metric_str(r: CaseResult) -> str:
    m = r.metrics or {}
    parts = []
    if m.get("max_abs_err") is not None:
        parts.append(f"err {m['max_abs_err']:.3g}")
    if m.get("max_ulp") is not None:
        parts.append(f"{m['max_ulp']:.3g} ULP")
    if m.get("max_lsb") is not None:
        parts.append(f"{m['max_lsb']:.3g} LSB")
    if m.get("sqnr_db") is not None:
        parts.append(f"{m['sqnr_db']:.1f} dB")
    return ", ".join(parts)


def describe_inputs(inputs: dict[str, Any] | None) -> str:
    """One line: ``float32[4, 16] strides (32, 2); edges all: 0, -0, inf, ...``."""
    if not inputs:
        return ""
    parts = []
    for t in inputs.get("tensors", []):
        s = f"{t['dtype']}{t['shape']}"
        if not t.get("contiguous", True):
            s += f" strides {tuple(t['strides'])}"
        parts.append(s)
    text = ", ".join(parts)
    if inputs.get("edges"):
        text += f"; edge values ({inputs['edges']['kind']}): {', '.join(inputs['edges']['values'])}"
    if inputs.get("dynamic"):
        text += f"; dynamic dims {inputs['dynamic']} (exported at {inputs.get('export_shapes')})"
    return text


def _failure_lines(r: CaseResult) -> list[str]:
    lines = [f"### `{r.id}`: {r.outcome}" + (f" (raw {r.raw_outcome})" if r.raw_outcome != r.outcome else ""), "",
             f"- detail: {r.detail}"]
    if r.expectation:
        lines.append(f"- expectation: {r.expectation}")
    if r.stage:
        lines.append(f"- stage: {r.stage}")
    if r.inputs:
        lines.append(f"- inputs: {describe_inputs(r.inputs)}")
    if r.repro:
        lines.append(f"- reproduce: `{r.repro}`")
    if r.stack:
        lines += ["- Python stack of the worker (most recent call first):", "", "```",
                  *r.stack, "```"]
    return lines + [""]


def write_markdown(report: Report, path: Path) -> None:
    p = report.plugin
    verdict = "PASSED" if report.passed() else "NOT PASSED"
    lines = [f"# Conformance: {p.get('name')} {p.get('version')} at {report.precision}", "",
             f"**{verdict}**. delegate-sdk {report.sdk_version}, torch {report.torch_version}, seed {report.seed}, "
             f"started {report.started}, {report.duration_s:.1f} s, {len(report.cases)} samples; runtime contract "
             f"{'checked' if report.runtime_checks else 'NOT checked'}.", ""]
    if report.command:
        lines += [f"Command: `{report.command}`", ""]
    e = report.expectations
    lines += [f"Expectations: {e.source} ({e.entries} entries, sha256 {e.sha256[:16]}…)." if e else
              "Expectations: none.", ""]
    for prob in report.problems():
        lines.append(f"- {prob}")
    lines += ["", "| outcome | count |", "| --- | ---: |"]
    lines += [f"| {o} | {n} |" for o, n in report.by_outcome().items()]
    ops, some = report.ops_passed(), report.ops_some_fail()
    lines += ["", f"{len(ops)} distinct ops pass every claimed sample fully delegated: "
              + (", ".join(f"`{o}`" for o in ops) or "none") + ".",
              "", f"{len(some)} distinct ops have claimed samples that fail (expected or not): "
              + (", ".join(f"`{o}`" for o in some) or "none") + "."]
    unexpected = report.unexpected()
    lines += ["", f"## Unexpected results ({len(unexpected)})", ""]
    if unexpected:
        for r in unexpected:
            lines += _failure_lines(r)
    else:
        lines.append("None.")
    expected = [r for r in report.cases if r.outcome == "XFAIL"]
    if expected:
        lines += ["", f"## Expected failures ({len(expected)})", "", "| case | raw outcome | expectation |",
                  "| --- | --- | --- |"]
        lines += [f"| `{r.id}` | {r.raw_outcome} | {_md_escape(r.expectation or '')} |" for r in expected]
    lines += ["", "## All samples", "", "| case | op | outcome | delegated | metrics | seconds |",
              "| --- | --- | --- | ---: | --- | ---: |"]
    for r in report.cases:
        deleg = f"{r.nodes_delegated}/{r.nodes_total}" if r.nodes_total is not None else ""
        lines.append(f"| `{r.id}` | {r.op or ''} | {r.outcome} | {deleg} | {_metric_str(r)} | "
                     f"{r.duration_s:.2f} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_junit(report: Report, path: Path) -> None:
    by = report.by_outcome()
    failures = sum(1 for r in report.cases if is_unexpected(r.outcome, report.strict))
    skipped = sum(by.get(o, 0) for o in ("SKIP", "NOT_CLAIMED", "XFAIL"))
    name = f"conform.{report.plugin.get('name')}.{report.precision}"
    suites = ET.Element("testsuites", name=name, tests=str(len(report.cases)), failures=str(failures),
                        time=f"{report.duration_s:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=name, tests=str(len(report.cases)), failures=str(failures),
                          errors="0", skipped=str(skipped), time=f"{report.duration_s:.3f}",
                          timestamp=report.started)
    props = ET.SubElement(suite, "properties")
    for k, v in (("plugin_version", report.plugin.get("version")), ("sdk_version", report.sdk_version),
                 ("torch_version", report.torch_version), ("seed", report.seed),
                 ("verdict", "passed" if report.passed() else "not passed"),
                 ("expectations_sha256", report.expectations.sha256 if report.expectations else "")):
        ET.SubElement(props, "property", name=k, value=str(v))
    for r in report.cases:
        classname = r.case_id.replace("/", ".")
        tc = ET.SubElement(suite, "testcase", classname=classname, name=r.id, time=f"{r.duration_s:.3f}")
        msg = f"{r.outcome}: {r.detail}" if r.detail else r.outcome
        if is_unexpected(r.outcome, report.strict):
            f = ET.SubElement(tc, "failure", message=msg[:1000], type=r.outcome)
            f.text = json.dumps({"stage": r.stage, "inputs": describe_inputs(r.inputs), "repro": r.repro,
                                 "stack": r.stack, "metrics": _clean(r.metrics), "tolerance": _clean(r.tolerance)},
                                indent=1)
        elif r.outcome in ("SKIP", "NOT_CLAIMED", "XFAIL"):
            ET.SubElement(tc, "skipped", message=msg[:1000])
        out = ET.SubElement(tc, "system-out")
        out.text = f"{msg}\nmetrics: {_metric_str(r)}" + (f"\nreproduce: {r.repro}" if r.repro else "")
    ET.indent(suites)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def write_all(report: Report, directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "report.json", "md": directory / "report.md", "junit": directory / "junit.xml"}
    write_json(report, paths["json"])
    write_markdown(report, paths["md"])
    write_junit(report, paths["junit"])
    return paths
