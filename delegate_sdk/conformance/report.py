"""Conformance reports: ``report.json`` (schema ``delegate-sdk/conformance-report/v1``), ``report.md``,
``junit.xml``.

One entry per sample (id ``op/add/broadcast``): a case's samples share its export and lowering but
each is judged, and can fail, on its own.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delegate_sdk.conformance.expectations import OUTCOMES, is_unexpected

SCHEMA = "delegate-sdk/conformance-report/v1"


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

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "op": self.op, "outcome": self.outcome, "detail": self.detail,
                "nodes_total": self.nodes_total, "nodes_delegated": self.nodes_delegated,
                "metrics": _clean(self.metrics), "tolerance": _clean(self.tolerance),
                "duration_s": round(float(self.duration_s), 4)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CaseResult:
        case_id = "/".join(d["id"].split("/")[:2])
        return cls(d["id"], case_id, d["kind"], d.get("op"), d["outcome"], d.get("detail", ""),
                   d.get("nodes_total"), d.get("nodes_delegated"), d.get("metrics") or {}, d.get("tolerance") or {},
                   d.get("duration_s", 0.0))


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

    def by_outcome(self) -> dict[str, int]:
        c = Counter(r.outcome for r in self.cases)
        return {o: c[o] for o in OUTCOMES if c[o]}

    def ops_passed(self) -> list[str]:
        """Distinct ops with at least one op-case sample that PASSed fully delegated (what vendors quote)."""
        return sorted({r.op for r in self.cases if r.kind == "op" and r.outcome == "PASS" and r.op})

    def unexpected(self) -> list[CaseResult]:
        return [r for r in self.cases if is_unexpected(r.outcome, self.strict)]

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "plugin": self.plugin, "sdk_version": self.sdk_version,
                "torch_version": self.torch_version, "precision": self.precision, "seed": self.seed,
                "started": self.started, "duration_s": round(self.duration_s, 3),
                "summary": {"total": len(self.cases), "by_outcome": self.by_outcome(),
                            "ops_passed_fully_delegated": self.ops_passed()},
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


def write_markdown(report: Report, path: Path) -> None:
    p = report.plugin
    lines = [f"# Conformance: {p.get('name')} {p.get('version')} at {report.precision}", "",
             f"delegate-sdk {report.sdk_version}, torch {report.torch_version}, seed {report.seed}, "
             f"started {report.started}, {report.duration_s:.1f} s, {len(report.cases)} samples.", "",
             "| outcome | count |", "| --- | ---: |"]
    lines += [f"| {o} | {n} |" for o, n in report.by_outcome().items()]
    ops = report.ops_passed()
    lines += ["", f"{len(ops)} distinct ops pass fully delegated: " + (", ".join(f"`{o}`" for o in ops) or "none") + "."]
    unexpected = report.unexpected()
    lines += ["", f"## Unexpected results ({len(unexpected)})", ""]
    if unexpected:
        lines += ["| case | outcome | detail |", "| --- | --- | --- |"]
        lines += [f"| `{r.id}` | {r.outcome} | {_md_escape(r.detail)} |" for r in unexpected]
    else:
        lines.append("None.")
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
    for k, v in (("plugin_version", p := report.plugin.get("version")), ("sdk_version", report.sdk_version),
                 ("torch_version", report.torch_version), ("seed", report.seed)):
        ET.SubElement(props, "property", name=k, value=str(v))
    del p
    for r in report.cases:
        classname = r.case_id.replace("/", ".")
        tc = ET.SubElement(suite, "testcase", classname=classname, name=r.id, time=f"{r.duration_s:.3f}")
        msg = f"{r.outcome}: {r.detail}" if r.detail else r.outcome
        if is_unexpected(r.outcome, report.strict):
            f = ET.SubElement(tc, "failure", message=msg[:1000], type=r.outcome)
            f.text = json.dumps({"metrics": _clean(r.metrics), "tolerance": _clean(r.tolerance)}, indent=1)
        elif r.outcome in ("SKIP", "NOT_CLAIMED", "XFAIL"):
            ET.SubElement(tc, "skipped", message=msg[:1000])
        out = ET.SubElement(tc, "system-out")
        out.text = f"{msg}\nmetrics: {_metric_str(r)}"
    ET.indent(suites)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def write_all(report: Report, directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "report.json", "md": directory / "report.md", "junit": directory / "junit.xml"}
    write_json(report, paths["json"])
    write_markdown(report, paths["md"])
    write_junit(report, paths["junit"])
    return paths
