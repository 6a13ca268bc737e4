"""Which backend, precision and priority order should run this model? ``compare`` lowers it each way asked, runs
every result on the same held-out inputs, and puts coverage, accuracy and latency side by side, with a
recommendation under a stated policy.

One row per configuration (a priority list of ``backend:precision`` entries): lowering time or the one-line
error that stopped it (a failing configuration is a row, never the end of the comparison); nodes and MACs
(conv / linear / matmul) delegated, partitions, the most common reasons nodes stayed on eager PyTorch;
accuracy against eager on held-out inputs (SQNR and max abs error per output, top-1 agreement for
classifier-shaped outputs); host latency (median and p90, with eager in the same run as the baseline); the
toolchain's own estimate where it gives one (Vela's cycles and time); the artifact's size.

Host latency is this machine's: the qnn and coreml plugins run emulators / interpreters here, so their host
latency says little about the device; the estimate column is the vendor's view where it exists.
"""

from __future__ import annotations

import html
import io
import json
import math
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

from delegate_sdk.errors import UsageError, brief
from delegate_sdk.layers import LayerReport

SCHEMA = "delegate-sdk/comparison/v1"


@dataclass(frozen=True)
class Config:
    """One way to lower the model: ``(backend, precision)`` entries in priority order."""

    entries: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        return ">".join(f"{b}:{p}" for b, p in self.entries)

    @property
    def backends(self) -> list[str]:
        return [b for b, _ in self.entries]

    @classmethod
    def parse(cls, text: str) -> Config:
        """``"qnn:int8,xnnpack"``: a priority list; a backend without ``:precision`` takes its default."""
        entries = []
        for item in filter(None, (s.strip() for s in text.split(","))):
            backend, _, precision = item.partition(":")
            entries.append((backend.strip(), precision.strip()))
        if not entries:
            raise UsageError(f"empty configuration {text!r}")
        return cls(tuple(entries))


@dataclass
class OutputAccuracy:
    """One output of the model, over every held-out input."""

    path: str
    sqnr_db: float | None  # the worst sample's; None when bit-exact
    max_abs_err: float
    #: for a classifier-shaped output ([batch, classes]): how often the arg-max agrees with eager's
    top1_agreement: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sqnr_db": _num(self.sqnr_db), "max_abs_err": _num(self.max_abs_err),
                "top1_agreement": self.top1_agreement}


@dataclass
class ConfigResult:
    config: Config
    error: str = ""
    lowering_s: float = 0.0
    nodes_total: int = 0
    nodes_delegated: int = 0
    nodes_hosted: int = 0
    partitions: int = 0
    #: backend -> nodes it accelerates
    coverage: dict[str, int] = field(default_factory=dict)
    macs_total: int = 0
    macs_delegated: int = 0
    #: the most common reasons nodes stayed on eager PyTorch: (backend, code, nodes, an example message)
    refusals: list[tuple[str, str, int, str]] = field(default_factory=list)
    outputs: list[OutputAccuracy] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    estimate: dict[str, Any] | None = None
    artifact_bytes: int = 0
    #: partitions that failed to compile and fell back to the next backend or eager ("backend: error")
    compile_failures: list[str] = field(default_factory=list)
    #: where it was lowered and timed: "this host", or the Ray node (``executor="ray"``)
    where: str = "this host"
    #: eager PyTorch's latency where this row was timed, when that is not this host (``executor="ray"``)
    eager_latency_ms: dict[str, float] | None = None
    #: what that eager latency ran: "the model", or the exported program when the model did not unpickle there
    eager_baseline: str = ""
    #: the saved artifact, when the program was lowered elsewhere (loaded here on first use of ``program``)
    artifact: bytes | None = field(default=None, repr=False)
    _program: Any = field(default=None, repr=False)

    @property
    def program(self) -> Any:
        """The lowered :class:`delegate_sdk.program.Program` (None when the configuration failed)."""
        if self._program is None and self.artifact is not None:
            from delegate_sdk.program import load

            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "model.dsdk"
                path.write_bytes(self.artifact)
                self._program = load(path)
        return self._program

    @program.setter
    def program(self, value: Any) -> None:
        self._program = value

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def sqnr_db(self) -> float | None:
        """The worst output's SQNR (None: every output bit-exact)."""
        vals = [o.sqnr_db for o in self.outputs if o.sqnr_db is not None]
        return min(vals) if vals else None

    @property
    def macs_fraction(self) -> float:
        return self.macs_delegated / self.macs_total if self.macs_total else 0.0

    @property
    def top1(self) -> float | None:
        vals = [o.top1_agreement for o in self.outputs if o.top1_agreement is not None]
        return min(vals) if vals else None

    def to_json(self) -> dict[str, Any]:
        return {"config": self.label, "entries": [list(e) for e in self.config.entries], "ok": self.ok,
                "error": self.error, "lowering_s": round(self.lowering_s, 3), "nodes_total": self.nodes_total,
                "nodes_delegated": self.nodes_delegated, "nodes_hosted": self.nodes_hosted,
                "partitions": self.partitions, "coverage": self.coverage, "macs_total": self.macs_total,
                "macs_delegated": self.macs_delegated, "macs_fraction": round(self.macs_fraction, 4),
                "refusals": [{"backend": b, "code": c, "nodes": n, "example": m} for b, c, n, m in self.refusals],
                "sqnr_db": _num(self.sqnr_db), "top1_agreement": self.top1,
                "outputs": [o.to_json() for o in self.outputs], "latency_ms": self.latency_ms,
                "estimate": self.estimate, "artifact_bytes": self.artifact_bytes,
                "compile_failures": self.compile_failures, "where": self.where,
                "eager_latency_ms": self.eager_latency_ms, "eager_baseline": self.eager_baseline}


@dataclass(frozen=True)
class Policy:
    """How the recommendation is chosen: among configurations that lowered and reach ``min_sqnr_db`` on every
    output (and ``min_top1`` agreement where an output is classifier-shaped), the one that delegates most of
    the model's MACs (within ``macs_tolerance``), then the lowest host latency."""

    min_sqnr_db: float = 30.0
    min_top1: float = 0.0
    macs_tolerance: float = 0.01

    def describe(self) -> str:
        top1 = f", top-1 agreement >= {self.min_top1:.0%}" if self.min_top1 else ""
        return (f"SQNR >= {self.min_sqnr_db:g} dB on every output{top1}, then the most MACs delegated, then the "
                "lowest host latency")

    def eligible(self, r: ConfigResult) -> bool:
        if not r.ok:
            return False
        if r.sqnr_db is not None and r.sqnr_db < self.min_sqnr_db:
            return False
        return not (self.min_top1 and r.top1 is not None and r.top1 < self.min_top1)

    def choose(self, results: Sequence[ConfigResult]) -> Recommendation:
        ok = [r for r in results if r.ok]
        good = [r for r in ok if self.eligible(r)]
        if not good:
            if not ok:
                return Recommendation(None, "no configuration lowered; the model stays on eager PyTorch")
            best = max(ok, key=lambda r: r.sqnr_db if r.sqnr_db is not None else math.inf)
            return Recommendation(None, f"no configuration meets the policy ({self.describe()}); the most accurate "
                                        f"is {best.label} at {_db(best.sqnr_db)}")
        most = max(r.macs_fraction for r in good)
        near = [r for r in good if r.macs_fraction >= most - self.macs_tolerance]
        pick = min(near, key=lambda r: r.latency_ms.get("median", math.inf))
        why = [f"SQNR {_db(pick.sqnr_db)} >= {self.min_sqnr_db:g} dB",
               f"{pick.macs_fraction:.0%} of the MACs delegated"
               + (" (the most)" if len(near) == 1 else f" (as much as {len(near) - 1} other(s))"),
               f"host latency {pick.latency_ms.get('median', math.nan):.2f} ms median"
               + (" (the lowest of those)" if len(near) > 1 else "")]
        if pick.estimate:
            why.append(f"the toolchain estimates {_estimate_text(pick.estimate)}")
        return Recommendation(pick.label, "; ".join(why))


@dataclass(frozen=True)
class Recommendation:
    config: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "reason": self.reason}


@dataclass
class Comparison:
    model: str
    results: list[ConfigResult]
    eager_latency_ms: dict[str, float]
    policy: Policy
    recommendation: Recommendation
    eval_samples: int
    calls: int
    outputs: list[str] = field(default_factory=list)
    #: where the error of one configuration comes from (``compare(per_layer=True)``), and which it is
    per_layer: LayerReport | None = None
    per_layer_config: str = ""

    def result(self, label: str) -> ConfigResult:
        for r in self.results:
            if r.label == label:
                return r
        raise KeyError(label)

    @property
    def recommended(self) -> ConfigResult | None:
        return self.result(self.recommendation.config) if self.recommendation.config else None

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "model": self.model, "eval_samples": self.eval_samples, "calls": self.calls,
                "outputs": self.outputs, "eager_latency_ms": self.eager_latency_ms,
                "policy": {"min_sqnr_db": self.policy.min_sqnr_db, "min_top1": self.policy.min_top1,
                           "description": self.policy.describe()},
                "recommendation": self.recommendation.to_json(), "results": [r.to_json() for r in self.results],
                "per_layer": ({"config": self.per_layer_config, **self.per_layer.to_json()}
                              if self.per_layer is not None else None)}

    def to_markdown(self) -> str:
        lines = [f"# Comparison: {self.model}", "",
                 f"{len(self.results)} configurations, {self.eval_samples} held-out input(s), {self.calls} timed "
                 f"calls each; eager PyTorch {self.eager_latency_ms['median']:.2f} ms median on this host.", "",
                 f"**Recommendation: {self.recommendation.config or 'none'}** ({self.policy.describe()}): "
                 f"{self.recommendation.reason}.", "",
                 "| configuration | lowered | nodes delegated | MACs delegated | partitions | SQNR (worst) | top-1 | "
                 "host latency median / p90 | estimate | artifact |",
                 "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
        for r in self.results:
            if not r.ok:
                lines.append(f"| `{r.label}` | failed: {_md(r.error)} | | | | | | | | |")
                continue
            hosted = f" (+{r.nodes_hosted} hosted)" if r.nodes_hosted else ""
            lines.append(
                f"| `{r.label}` | {r.lowering_s:.1f} s | {r.nodes_delegated - r.nodes_hosted}/{r.nodes_total}"
                f"{hosted} | {r.macs_fraction:.0%} | {r.partitions} | {_db(r.sqnr_db)} | "
                f"{'' if r.top1 is None else f'{r.top1:.0%}'} | {r.latency_ms['median']:.2f} / "
                f"{r.latency_ms['p90']:.2f} ms | {_estimate_text(r.estimate) if r.estimate else ''} | "
                f"{r.artifact_bytes / 1024:.0f} KiB |")
        remote = [r for r in self.results if r.ok and r.eager_latency_ms]
        if remote:
            lines += ["", "Timed on Ray workers, each row beside eager PyTorch on the same worker:", ""]
            lines += [f"- `{r.label}`: {r.where}, {r.latency_ms['median']:.2f} ms vs eager "
                      f"{r.eager_latency_ms['median']:.2f} ms there "
                      f"({r.latency_ms['median'] / r.eager_latency_ms['median']:.2f}x; eager ran {r.eager_baseline})"
                      for r in remote]
        lines += ["", "## Why nodes stayed on eager PyTorch", ""]
        for r in self.results:
            if r.ok and r.refusals:
                lines.append(f"- `{r.label}`: " + "; ".join(f"{b} {c} x{n} ({_md(m)})" for b, c, n, m in r.refusals))
        if self.per_layer is not None:
            lines += ["", f"## Where the error of `{self.per_layer_config}` comes from", "", *_layers_md(self.per_layer)]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """One self-contained page (charts inline as SVG; nothing to fetch)."""
        svg = _chart(self)
        layers = ""
        if self.per_layer is not None:
            layers = (f"<h2>Where the error of {html.escape(self.per_layer_config)} comes from</h2>"
                      f"{_layers_chart(self.per_layer)}<pre>{html.escape(chr(10).join(_layers_md(self.per_layer)))}</pre>")
        rows = []
        for r in self.results:
            cells = [r.label]
            if r.ok:
                cells += [f"{r.lowering_s:.1f} s", f"{r.nodes_delegated - r.nodes_hosted}/{r.nodes_total}",
                          f"{r.macs_fraction:.0%}", str(r.partitions), _db(r.sqnr_db),
                          "" if r.top1 is None else f"{r.top1:.0%}",
                          f"{r.latency_ms['median']:.2f} / {r.latency_ms['p90']:.2f} ms",
                          _estimate_text(r.estimate) if r.estimate else "", f"{r.artifact_bytes / 1024:.0f} KiB"]
            else:
                cells += [f"failed: {r.error}"] + [""] * 9
            cls = ' class="pick"' if r.label == self.recommendation.config else ""
            rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        head = ("configuration", "lowered", "nodes", "MACs", "partitions", "SQNR", "top-1", "host latency",
                "estimate", "artifact")
        return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>delegate-sdk comparison: {html.escape(self.model)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
tr.pick{{background:#e6f4ea}}</style></head><body>
<h1>{html.escape(self.model)}</h1>
<p><b>Recommendation: {html.escape(self.recommendation.config or "none")}</b>
({html.escape(self.policy.describe())}): {html.escape(self.recommendation.reason)}.</p>
<p>{self.eval_samples} held-out input(s), {self.calls} timed calls per configuration; eager PyTorch
{self.eager_latency_ms['median']:.2f} ms median on this host.</p>
{svg}
<table><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>
{"".join(rows)}
</table>
{layers}</body></html>
"""

    def write_reports(self, directory: Path) -> dict[str, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"json": directory / "report.json", "md": directory / "report.md", "html": directory / "report.html"}
        paths["json"].write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        paths["md"].write_text(self.to_markdown(), encoding="utf-8")
        paths["html"].write_text(self.to_html(), encoding="utf-8")
        return paths


# --------------------------------------------------------------------------- running it


def default_configs(backends: Iterable[str], precisions: dict[str, list[str]] | None = None,
                    orders: Iterable[str] = (), registry: Any = None) -> list[Config]:
    """One configuration per backend and precision asked for (default: each backend's default precision),
    plus one per priority order (``"qnn,xnnpack"``; each entry may carry ``:precision``)."""
    from delegate_sdk.registry import default_registry

    registry = registry or default_registry()
    precisions = precisions or {}
    out: list[Config] = []
    for b in backends:
        info = registry.get(b).info()
        for p in precisions.get(b) or [info.default_precision]:
            out.append(Config(((b, p),)))
    for text in orders:
        out.append(Config.parse(text))
    seen: set[str] = set()
    unique = []
    for c in out:
        if c.label not in seen:
            seen.add(c.label)
            unique.append(c)
    return unique


def _resolve(config: Config, registry: Any) -> Config:
    """Fill in default precisions; UsageError for an unknown backend or precision."""
    entries = []
    for b, p in config.entries:
        info = registry.get(b).info()
        p = p or info.default_precision
        if p not in info.precisions:
            raise UsageError(f"backend {b!r} has no precision {p!r}; it has {', '.join(info.precisions)}")
        entries.append((b, p))
    return Config(tuple(entries))


def compare(model: Any, example_inputs: Any, configs: Sequence[Config | str] | None = None, *,
            backends: Iterable[str] | None = None, example_kwargs: dict[str, Any] | None = None,
            dynamic_shapes: Any = None, options: dict[str, dict[str, Any]] | None = None,
            calibration: int | list[Any] = 8, eval_inputs: int | list[Any] = 4, calls: int = 20,
            policy: Policy | None = None, hosted_ops: bool = False, name: str = "",
            on_progress: Callable[[str, int, int], None] | None = None, registry: Any = None,
            per_layer: bool = False, executor: str = "local", address: str | None = None,
            timeout_s: float | None = None) -> Comparison:
    """Lower ``model`` every way in ``configs`` (default: each available backend at its default precision) and
    compare the results on the same held-out inputs.

    ``calibration`` / ``eval_inputs``: a number of seeded random calls drawn from the model's input signature,
    or a list of calls (each the positional arguments, a dict of keyword arguments, or an ``(args, kwargs)``
    pair). ``options``: extra plugin options per backend, for every configuration it appears in.
    ``on_progress(label, done, total)`` is called before each configuration and once at the end.
    ``per_layer``: also localise the error of the recommended configuration (without one, of the one that
    delegates most MACs) by partition and module, with the fewest modules to keep off the backends to reach
    the policy's SQNR (:func:`delegate_sdk.layers.localise`).
    ``executor="ray"``: each configuration is a Ray task on the cluster at ``address`` (None: a Ray instance
    started here), stopped after ``timeout_s`` (:mod:`delegate_sdk.comparison_ray`); the eager reference, the
    recommendation and the per-layer localisation stay in this process.
    """
    from delegate_sdk.capture import as_args, decompose, eager_module, export
    from delegate_sdk.lowering import _in_spec, lower
    from delegate_sdk.registry import default_registry
    from delegate_sdk.signature import flatten_call, input_signature, random_call, unflatten_call

    registry = registry or default_registry()
    policy = policy or Policy()
    if configs is None:
        names = list(backends) if backends is not None else [b.name for b in registry.all()
                                                              if b.info().available]
        configs = default_configs(names, registry=registry)
    cfgs = [_resolve(c if isinstance(c, Config) else Config.parse(c), registry) for c in configs]
    if not cfgs:
        raise UsageError("nothing to compare: give at least one backend or configuration")
    if executor not in ("local", "ray"):
        raise UsageError(f"executor must be 'local' or 'ray', not {executor!r}")
    if executor != "ray" and (address is not None or timeout_s is not None):
        raise UsageError("an address and a timeout are for executor='ray' (--executor ray --address ADDR)")
    exported = export(model, example_inputs, dynamic_shapes=dynamic_shapes, example_kwargs=example_kwargs)
    ep = decompose(exported)
    specs, spec = input_signature(ep), _in_spec(ep)

    def calls_from(given: int | list[Any], seed0: int) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        if isinstance(given, int):
            return [random_call(specs, spec, seed0 + k) for k in range(given)]
        out = []
        for sample in given:
            if isinstance(sample, dict):
                args, kwargs = (), sample
            elif (isinstance(sample, (tuple, list)) and len(sample) == 2 and isinstance(sample[1], dict)
                  and isinstance(sample[0], (tuple, list))):
                args, kwargs = tuple(sample[0]), sample[1]
            else:
                args, kwargs = as_args(sample), {}
            out.append(unflatten_call(flatten_call(args, kwargs, spec), spec))
        return out

    calib = calls_from(calibration, 1000)
    evals = calls_from(eval_inputs, 2000)
    if not evals:
        raise UsageError("eval_inputs must give at least one input")
    eager_mod = eager_module(model)
    with torch.no_grad():
        refs = [pytree.tree_leaves(eager_mod(*a, **kw)) for a, kw in evals]
    out_paths = _output_paths(eager_mod, evals[0])
    eager_lat = _latency(lambda: eager_mod(*evals[0][0], **evals[0][1]), calls)
    if executor == "ray":
        from delegate_sdk.comparison_ray import run_configs

        results = run_configs(cfgs, exported, eager_mod, options=options, calib=calib, evals=evals, refs=refs,
                              out_paths=out_paths, calls=calls, hosted_ops=hosted_ops, address=address,
                              timeout_s=timeout_s, on_progress=on_progress)
    else:
        results = []
        for k, cfg in enumerate(cfgs):
            if on_progress:
                on_progress(cfg.label, k, len(cfgs))
            # every configuration lowers the one export (as a Ray worker does), instead of exporting again
            results.append(_run_config(cfg, exported, options, calib, evals, refs, out_paths, calls, hosted_ops,
                                       registry, lower))
    choice = policy.choose(results)
    out = Comparison(name or type(eager_mod).__name__, results, eager_lat, policy, choice, len(evals), calls,
                     out_paths)
    ok = [r for r in results if r.ok]
    if per_layer and ok:
        from delegate_sdk.layers import localise

        pick = out.recommended or max(ok, key=lambda r: (r.macs_fraction, r.sqnr_db or math.inf))
        if on_progress:
            on_progress(f"per-layer: {pick.label}", len(cfgs), len(cfgs) + 1)
        opts = {b: {k: v for k, v in o.items() if k != "precision"} for b, o in (options or {}).items()
                if b in pick.config.backends}
        out.per_layer = localise(model, example_inputs, [f"{b}:{p}" for b, p in pick.config.entries],
                                 eval_inputs=evals, example_kwargs=example_kwargs, target_db=policy.min_sqnr_db,
                                 options=opts, calibration=calib, dynamic_shapes=dynamic_shapes,
                                 hosted_ops=hosted_ops, registry=registry, on_compile_error="fallback")
        out.per_layer_config = pick.label
    if on_progress:
        on_progress("", len(cfgs), len(cfgs))
    return out


def _run_config(cfg: Config, exported: Any, options: dict[str, dict[str, Any]] | None, calib: list[Any],
                evals: list[Any], refs: list[Any], out_paths: list[str], calls: int, hosted_ops: bool, registry: Any,
                lower: Callable[..., Any], keep_artifact: bool = False) -> ConfigResult:
    """Lower the exported program (``capture.export``, not yet decomposed) one way, save, run and time it."""
    res = ConfigResult(cfg)
    # each entry carries its precision (``xnnpack:int8``), so one backend may appear at two precisions
    opts = {b: {k: v for k, v in o.items() if k != "precision"} for b, o in (options or {}).items()
            if b in cfg.backends}
    t0 = time.perf_counter()
    try:
        prog = lower(exported, None, [f"{b}:{p}" for b, p in cfg.entries], options=opts, calibration=calib,
                     hosted_ops=hosted_ops, registry=registry, on_compile_error="fallback")
    except Exception as e:  # a configuration that fails is a row with its error
        res.error = _one_line(e)
        res.lowering_s = time.perf_counter() - t0
        return res
    res.lowering_s = time.perf_counter() - t0
    s = prog.summary()
    res.compile_failures = [f"{c.backend}: {c.error}" for c in s.compile_failures]
    if s.compile_failures and not s.partitions:  # nothing compiled: the configuration failed, say why
        res.error = f"{s.compile_failures[0].backend} failed to compile: {s.compile_failures[0].error}"
        return res
    res.program = prog
    res.nodes_total, res.nodes_delegated, res.nodes_hosted = s.nodes_total, s.nodes_delegated, s.nodes_hosted
    res.partitions = len(s.partitions)
    res.macs_total, res.macs_delegated = s.macs_total, s.macs_delegated
    cov: Counter[str] = Counter()
    for p in s.partitions:
        cov[p.backend] += len(p.nodes) - len(p.hosted)
    res.coverage = dict(cov)
    why: Counter[tuple[str, str]] = Counter()
    example: dict[tuple[str, str], str] = {}
    for f in s.fallback:
        for r in f.reasons:
            key = (r.backend, r.code.value)
            why[key] += 1
            example.setdefault(key, f"{f.op}: {r.message}")
    res.refusals = [(b, c, n, example[(b, c)]) for (b, c), n in why.most_common(5)]
    perfs = [p.perf for p in s.partitions if p.perf is not None]
    if perfs and len(perfs) == len(s.partitions):
        est: dict[str, Any] = {"source": perfs[0].source}
        if all(p.cycles is not None for p in perfs):
            est["cycles"] = sum(int(p.cycles) for p in perfs)
        if all(p.inference_time_s is not None for p in perfs):
            est["inference_time_ms"] = round(sum(float(p.inference_time_s) for p in perfs) * 1e3, 4)
        res.estimate = est
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.dsdk"
        try:
            prog.save(path)
            res.artifact_bytes = path.stat().st_size
            if keep_artifact:
                res.artifact = path.read_bytes()
        except Exception as e:
            res.error = f"saving the artifact failed: {_one_line(e)}"
            return res
    try:
        with torch.no_grad():
            outs = [pytree.tree_leaves(prog(*a, **kw)) for a, kw in evals]
    except Exception as e:
        res.error = f"running it failed: {_one_line(e)}"
        return res
    res.outputs = _accuracy(refs, outs, out_paths)
    res.latency_ms = _latency(lambda: prog(*evals[0][0], **evals[0][1]), calls)
    return res


def _accuracy(refs: list[list[Any]], outs: list[list[Any]], paths: list[str]) -> list[OutputAccuracy]:
    from delegate_sdk.conformance.tolerance import sqnr_db

    acc = []
    for k in range(len(refs[0])):
        worst: float | None = None
        max_abs = 0.0
        agree = total = 0
        exact = True
        for ref, out in zip(refs, outs):
            e, d = ref[k], out[k] if k < len(out) else None
            if not isinstance(e, torch.Tensor) or not isinstance(d, torch.Tensor) or e.shape != d.shape:
                worst, max_abs, exact = -math.inf, math.inf, False
                continue
            if not e.dtype.is_floating_point:
                exact = exact and bool(torch.equal(e, d))
                continue
            s = sqnr_db(e, d)
            if s is not None and s < 999.0:
                exact = False
                worst = s if worst is None else min(worst, s)
            diff = (e.double() - d.double()).abs()
            diff = diff[torch.isfinite(diff)]
            if diff.numel():
                max_abs = max(max_abs, float(diff.max()))
            if e.dim() == 2 and e.shape[1] >= 2:
                agree += int((e.argmax(1) == d.argmax(1)).sum())
                total += e.shape[0]
        acc.append(OutputAccuracy(paths[k] if k < len(paths) else f"output {k}", None if exact else worst, max_abs,
                                  agree / total if total else None))
    return acc


def _output_paths(module: Any, call: tuple[tuple[Any, ...], dict[str, Any]]) -> list[str]:
    with torch.no_grad():
        out = module(*call[0], **call[1])
    flat = pytree.tree_flatten_with_path(out)[0]
    return [("output" + pytree.keystr(p)) if p else "output" for p, _ in flat]


def _latency(fn: Callable[[], Any], calls: int) -> dict[str, float]:
    with torch.no_grad():
        fn()  # warm-up (lazy initialisation, caches)
        times = []
        for _ in range(max(1, calls)):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"median": round(statistics.median(times), 4),
            "p90": round(times[min(len(times) - 1, int(math.ceil(0.9 * len(times))) - 1)], 4)}


def _chart(c: Comparison) -> str:
    """Accuracy against host latency per configuration, and the share of MACs each delegates, as inline SVG."""
    plt = _pyplot()

    ok = [r for r in c.results if r.ok]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for r in ok:
        y = r.sqnr_db if r.sqnr_db is not None else 120.0
        marker = "*" if r.label == c.recommendation.config else "o"
        ax1.scatter([r.latency_ms["median"]], [y], s=120 if marker == "*" else 40, marker=marker)
        ax1.annotate(r.label, (r.latency_ms["median"], y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax1.axhline(c.policy.min_sqnr_db, linestyle="--", linewidth=0.8, color="grey")
    ax1.axvline(c.eager_latency_ms["median"], linestyle=":", linewidth=0.8, color="grey")
    ax1.set_xscale("log")
    ax1.set_xlabel("host latency, median (ms, log scale; dotted: eager PyTorch)")
    ax1.set_ylabel("SQNR vs eager, worst output (dB; dashed: policy)")
    ax1.set_title("accuracy vs latency")
    labels = [r.label for r in ok]
    ax2.barh(labels, [100 * r.macs_fraction for r in ok])
    ax2.set_xlabel("MACs delegated (%)")
    ax2.set_xlim(0, 100)
    ax2.set_title("coverage")
    return _svg(fig)


def _layers_md(rep: LayerReport) -> list[str]:
    lines = [f"Model output SQNR {_db(rep.sqnr_db)}. Per partition: its outputs in the lowered run, and the "
             "partition alone on eager PyTorch's values at its inputs (the error it adds itself).", "",
             "| partition | backend | nodes | modules | SQNR in the run | SQNR alone |", "| --- | --- | ---: | --- | ---: | ---: |"]
    for p in rep.partitions:
        lines.append(f"| {p.partition} | {p.backend} | {p.nodes} | {_md(', '.join(p.modules))} | {_db(p.sqnr_db)} | "
                     f"{_db(p.local_sqnr_db)} |")
    if rep.modules:
        lines += ["", "Per module (partitions cut where modules meet; worst first):", "",
                  "| module | delegated nodes | SQNR alone |", "| --- | ---: | ---: |"]
        lines += [f"| `{m.module}` | {m.nodes} | {_db(m.local_sqnr_db)} |" for m in rep.modules]
    if rep.target_db is not None:
        if rep.skip:
            lines += ["", f"To reach {rep.target_db:g} dB: keep {', '.join(f'`{m}`' for m in rep.skip)} off the "
                      f"backends (`skip_nodes`): {_db(rep.skip_sqnr_db)}"
                      + ("" if rep.target_met else " (not enough: the target is not met)") + "."]
        elif rep.target_met:
            lines += ["", f"The target {rep.target_db:g} dB is met as lowered."]
    return lines


def _layers_chart(rep: LayerReport) -> str:
    """Each module's own error (SQNR alone, dB), worst at the top, as inline SVG."""
    plt = _pyplot()

    rows = rep.modules or []
    labels = [m.module for m in rows] or [p.partition for p in rep.partitions]
    values = ([m.local_sqnr_db for m in rows] if rows else [p.local_sqnr_db for p in rep.partitions])
    fig, ax = plt.subplots(figsize=(8, 0.35 * max(4, len(labels)) + 1))
    ax.barh(labels[::-1], [120.0 if v is None else v for v in values[::-1]])
    if rep.target_db is not None:
        ax.axvline(rep.target_db, linestyle="--", linewidth=0.8, color="grey")
    ax.set_xlabel("SQNR of its own outputs vs eager (dB; exact drawn at 120; dashed: target)")
    ax.set_title("per-layer error" + (" (modules)" if rows else " (partitions)"))
    return _svg(fig)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: no display here
    import matplotlib.pyplot as plt

    return plt


def _svg(fig: Any) -> str:
    """``fig`` as inline SVG (no date, so a report is reproducible), and closed."""
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    _pyplot().close(fig)
    text = buf.getvalue()
    return text[text.find("<svg"):]


def _estimate_text(est: dict[str, Any]) -> str:
    bits = []
    if est.get("cycles") is not None:
        bits.append(f"{est['cycles']:,} cycles")
    if est.get("inference_time_ms") is not None:
        bits.append(f"{est['inference_time_ms']:.3f} ms")
    return ", ".join(bits) + (f" ({est['source']})" if est.get("source") else "")


def _db(v: float | None) -> str:
    if v is None:
        return "exact"
    if math.isinf(v):
        return "-inf dB"
    return f"{v:.1f} dB"


def _num(v: float | None) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return round(float(v), 4)


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _one_line(e: BaseException) -> str:
    return brief(e, 300)
