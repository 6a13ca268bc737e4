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

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_option_args(values: Sequence[str], plugin: str, option_specs: Sequence[Any] = ()) -> dict[str, Any]:
    """``["qnn.htp_arch=73", ...]`` -> ``{"htp_arch": 73}`` for the plugin under test.

    Values are converted with the type of the plugin's ``OptionSpec`` (``int``, ``float``, ``bool``,
    ``str``); the core validates them as ``lower`` does (choices, ranges).
    """
    specs = {s.name: s for s in option_specs}
    out: dict[str, Any] = {}
    for raw in values:
        if "=" not in raw or "." not in raw.split("=", 1)[0]:
            raise UsageError(f"--option {raw!r}: expected NAME.KEY=VALUE (e.g. {plugin}.some_option=1)")
        key, value = raw.split("=", 1)
        backend, name = key.split(".", 1)
        if backend != plugin:
            raise UsageError(f"--option {raw!r} is for backend {backend!r}, but conform runs plugin {plugin!r}")
        spec = specs.get(name)
        if name == "precision":
            out[name] = value
            continue
        if spec is None and specs:
            raise UsageError(f"plugin {plugin!r} has no option {name!r}; its options: {', '.join(sorted(specs))}")
        out[name] = _convert(value, getattr(spec, "type", "str"), raw)
    return out


def _convert(value: str, typ: str, raw: str) -> Any:
    try:
        if typ == "int":
            return int(value, 0)
        if typ == "float":
            return float(value)
        if typ == "bool":
            v = value.strip().lower()
            if v in _TRUE:
                return True
            if v in _FALSE:
                return False
            raise ValueError(value)
    except ValueError:
        raise UsageError(f"--option {raw!r}: {value!r} is not a valid {typ}") from None
    return value


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
