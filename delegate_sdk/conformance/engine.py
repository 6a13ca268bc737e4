"""``run_conformance``: the programmatic form of ``delegate-sdk conform``."""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from delegate_sdk.conformance import expectations as exp
from delegate_sdk.conformance.report import CaseResult, Report
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
                    on_plan: Callable[[list[Unit]], None] | None = None,
                    on_result: Callable[[CaseResult], None] | None = None) -> Report:
    """Run the conformance suite for one plugin and return the report (nothing is printed or written).

    ``expectations``: a path to use instead of the plugin's own ``expectations.toml``.
    Raises :class:`~delegate_sdk.errors.UsageError` for a bad argument or an unavailable plugin.
    """
    import torch

    import delegate_sdk
    from delegate_sdk.registry import default_registry

    if suite not in ("ops", "models", "all"):
        raise UsageError(f"--suite must be ops, models or all, not {suite!r}")
    backend = default_registry().get(plugin)
    info = backend.info()
    if not info.available:
        raise UsageError(f"plugin {plugin!r} is unavailable here: {info.unavailable_reason or 'no reason given'}")
    options = dict(options or {})
    if "precision" in options:
        precision = precision or options.pop("precision")
        options.pop("precision", None)
    precision = precision or info.default_precision
    if precision not in info.precisions:
        raise UsageError(f"plugin {plugin!r} does not support precision {precision!r}; "
                         f"it supports {', '.join(info.precisions)}")
    shard_t = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    exp_path = Path(expectations) if expectations is not None else exp.locate(backend.plugin)
    if expectations is not None and not Path(expectations).is_file():
        raise UsageError(f"expectations file {expectations} does not exist")
    known = exp.load(exp_path)
    cases = collect_cases(plugin, suite)
    units = plan(cases, pattern=pattern, shard=shard_t)
    if on_plan:
        on_plan(units)
    cfg = RunConfig(plugin=plugin, precision=precision, options=options, seed=seed,
                    jobs=max(1, jobs or os.cpu_count() or 1), timeout=timeout, bisect=bisect, suite=suite)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()

    def finish(r: CaseResult) -> None:
        r.outcome, r.detail = exp.apply(r.outcome, r.detail, r.id, r.case_id, precision, known)
        if on_result:
            on_result(r)

    results = run_units(cfg, cases, units, on_result=finish)
    return Report(plugin={"name": plugin, "version": info.version, "available": bool(info.available)},
                  sdk_version=delegate_sdk.__version__, torch_version=torch.__version__, precision=precision,
                  seed=seed, started=started, duration_s=time.perf_counter() - t0, cases=results, strict=strict)
