"""``run_conformance``: the programmatic form of ``delegate-sdk conform``."""

from __future__ import annotations

import datetime as _dt
import os
import re
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from delegate_sdk.conformance import expectations as exp
from delegate_sdk.conformance.report import CaseResult, ExpectationsSource, Report
from delegate_sdk.conformance.runner import RunConfig, Unit, collect_cases, parse_shard, plan, run_units
from delegate_sdk.errors import UsageError


def parse_option_args(values: Sequence[str], plugin: str, info: Any = None) -> dict[str, Any]:
    """``["qnn.htp_arch=73", ...]`` -> ``{"htp_arch": "73"}`` for the plugin under test, exactly as ``lower``
    parses ``--option`` (:func:`delegate_sdk.options.parse_cli_options`); with the plugin's ``BackendInfo``
    the values are also validated now (the core validates and converts them again when lowering)."""
    from delegate_sdk.options import parse_cli_options, validate_options

    parsed = parse_cli_options(list(values))
    stray = sorted(b for b in parsed if b != plugin)
    if stray:
        raise UsageError(f"--option {stray[0]}.…: options are for backend {stray[0]!r}, but conform runs plugin "
                         f"{plugin!r}")
    given = dict(parsed.get(plugin, {}))
    if info is not None:
        validate_options(info, given)
    return given


def run_conformance(plugin: str, *, precision: str | None = None, options: dict[str, Any] | None = None,
                    suite: str = "all", pattern: str | None = None, jobs: int | None = None, seed: int = 0,
                    shard: str | tuple[int, int] | None = None, timeout: float | None = 300.0,
                    strict: bool = False, expectations: str | Path | None = None, bisect: bool = True,
                    min_pass: int = 1, min_ops: int = 0, runtime_checks: bool = True,
                    executor: str = "local", address: str | None = None, hosted_ops: bool = False,
                    models: Sequence[str | Path] = (),
                    on_plan: Callable[[list[Unit]], None] | None = None,
                    on_result: Callable[[CaseResult], None] | None = None) -> Report:
    """Run the conformance suite for one plugin and return the report (nothing is printed or written).

    ``expectations``: a path to use instead of the plugin's own ``expectations.toml``. ``min_pass`` /
    ``min_ops``: the report does not pass with fewer passing samples / fully passing ops.
    ``runtime_checks=False`` skips the runtime contract checks (faster numerics iteration; not a certificate).
    ``executor``: ``"local"`` worker processes (``jobs`` of them), or ``"ray"``: workers on the Ray cluster at
    ``address`` (a local Ray instance when None; ``jobs`` defaults to the cluster's CPU count).
    ``models``: ``.pt2`` files (``torch.export.save``) that are whole-model cases too, in any suite.
    Raises :class:`~delegate_sdk.errors.UsageError` for a bad argument, an unavailable plugin or a selection
    that holds no sample.
    """
    import torch

    import delegate_sdk
    from delegate_sdk.conformance.sampling import describe
    from delegate_sdk.registry import default_registry

    if suite not in ("ops", "models", "all", "zoo"):
        raise UsageError(f"--suite must be ops, models, all or zoo, not {suite!r}")
    if executor not in ("local", "ray"):
        raise UsageError(f"--executor must be local or ray, not {executor!r}")
    if address and executor != "ray":
        raise UsageError("--address is the Ray cluster to run on: give it with --executor ray")
    backend = default_registry().get(plugin)
    info = backend.info()
    if not info.available:
        raise UsageError(f"plugin {plugin!r} is unavailable here: {info.unavailable_reason or 'no reason given'}")
    options = dict(options or {})
    if "precision" in options:
        precision = precision or options.pop("precision")
        options.pop("precision", None)
    precision = precision or info.default_precision
    try:
        spec = info.precision(precision)
    except ValueError as e:
        raise UsageError(str(e)) from None
    backend.options({**options, "precision": precision})  # a bad combination is one OptionError, before any case
    shard_t = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    if expectations is not None:
        if not Path(expectations).is_file():
            raise UsageError(f"expectations file {expectations} does not exist")
        found: exp.Found | None = exp.Found(Path(expectations).read_text(encoding="utf-8"), str(expectations))
    else:
        found = exp.locate(backend.plugin)
    known = exp.parse(found.text, found.source) if found else []
    model_files = tuple(str(Path(m).resolve()) for m in models)
    cases = collect_cases(plugin, suite, model_files=model_files)
    units = plan(cases, pattern=pattern, shard=shard_t)
    if not units:
        what = f"-k {pattern!r}" if pattern else f"--suite {suite}"
        raise UsageError(f"{what}{f' --shard {shard}' if shard else ''} selects no sample of the "
                         f"{sum(len(c.samples) for c in cases)} in the corpus: nothing to certify")
    if on_plan:
        on_plan(units)
    cfg = RunConfig(plugin=plugin, precision=precision, options=options, seed=seed,
                    jobs=jobs if executor == "ray" else max(1, jobs or os.cpu_count() or 1), timeout=timeout,
                    bisect=bisect, suite=suite, precision_spec=spec.to_json(), runtime_checks=runtime_checks,
                    executor=executor, address=address, hosted_ops=hosted_ops, model_files=model_files)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    by_id = {c.id: c for c in cases}
    base = repro_command(plugin, precision, options, seed, expectations, timeout, hosted_ops=hosted_ops,
                         models=model_files)

    def finish(r: CaseResult) -> None:
        r.raw_outcome = r.outcome
        r.outcome, r.detail, r.expectation = exp.apply(r.outcome, r.detail, r.id, r.case_id, precision, known)
        if r.outcome in exp.FAILING or r.outcome in ("XFAIL", "XPASS"):
            case = by_id[r.case_id]
            sample = next(s for s in case.samples if f"{case.id}/{s.label}" == r.id)
            try:
                r.inputs = describe(case, sample, seed, spec)
            except Exception as e:  # a description must never cost the result
                r.inputs = {"error": f"{type(e).__name__}: {e}"}
            r.repro = f"{base} -k {shlex.quote('^' + re.escape(r.id) + '$')}"
        if on_result:
            on_result(r)

    where: dict[str, Any] = {}
    results = run_units(cfg, cases, units, on_result=finish, stats=where)
    source = ExpectationsSource(found.source, found.sha256, len(known)) if found else None
    return Report(plugin={"name": plugin, "version": info.version, "available": bool(info.available)},
                  sdk_version=delegate_sdk.__version__, torch_version=torch.__version__, precision=precision,
                  seed=seed, started=started, duration_s=time.perf_counter() - t0, cases=results, strict=strict,
                  precision_spec=spec.to_json(), options=options, expectations=source,
                  runtime_checks=runtime_checks, min_pass=min_pass, min_ops=min_ops, executor=where,
                  hosted_ops=hosted_ops,
                  command=repro_command(plugin, precision, options, seed, expectations, timeout, jobs=jobs,
                                        pattern=pattern, suite=suite, shard=shard, hosted_ops=hosted_ops,
                                        models=model_files))


def repro_command(plugin: str, precision: str, options: dict[str, Any], seed: int,
                  expectations: str | Path | None, timeout: float | None, *, jobs: int | None = 1,
                  pattern: str | None = None, suite: str = "all", shard: Any = None, hosted_ops: bool = False,
                  models: Sequence[str] = ()) -> str:
    """The ``delegate-sdk conform`` command line of a run (by default: one job, as a rerun of one sample)."""
    parts = ["delegate-sdk", "conform", "--plugin", plugin, "--precision", precision]
    for k, v in sorted(options.items()):
        parts += ["--option", f"{plugin}.{k}={v}"]
    parts += ["--seed", str(seed)]
    if hosted_ops:
        parts.append("--hosted-ops")
    if suite != "all":
        parts += ["--suite", suite]
    for m in models:
        parts += ["--model", str(m)]
    if shard:
        parts += ["--shard", shard if isinstance(shard, str) else f"{shard[0]}/{shard[1]}"]
    if expectations is not None:
        parts += ["--expectations", str(expectations)]
    if timeout is not None and timeout != 300.0:
        parts += ["--timeout", f"{timeout:g}"]
    if jobs is not None:
        parts += ["--jobs", str(jobs)]
    if pattern:
        parts += ["-k", pattern]
    return " ".join(shlex.quote(p) for p in parts)
