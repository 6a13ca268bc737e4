"""Validate user options against a plugin's OptionSpec list (and the implicit ``precision``)."""

from __future__ import annotations

from typing import Any

from delegate_sdk.errors import OptionError
from delegate_sdk.types import BackendInfo, OptionSpec

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def option_specs(info: BackendInfo) -> list[OptionSpec]:
    precision = OptionSpec("precision", "str", info.default_precision, "numeric precision of the delegate",
                           choices=tuple(info.precisions))
    return [precision, *(o for o in info.options if o.name != "precision")]


def validate_options(info: BackendInfo, given: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults filled in, values converted (CLI strings) and checked; OptionError names what is wrong."""
    specs = {o.name: o for o in option_specs(info)}
    given = dict(given or {})
    unknown = [k for k in given if k not in specs]
    if unknown:
        raise OptionError(f"backend {info.name!r} has no option {unknown[0]!r}; valid options: "
                          + ", ".join(f"{s.name} ({_describe(s)})" for s in specs.values()))
    out: dict[str, Any] = {}
    for name, spec in specs.items():
        out[name] = _convert(info.name, spec, given[name]) if name in given else spec.default
    return out


def _describe(s: OptionSpec) -> str:
    if s.choices:
        return "one of " + "|".join(str(c) for c in s.choices)
    rng = ""
    if s.minimum is not None or s.maximum is not None:
        rng = f" in [{'' if s.minimum is None else s.minimum}, {'' if s.maximum is None else s.maximum}]"
    return s.type + rng


def _convert(backend: str, s: OptionSpec, v: Any) -> Any:
    bad = OptionError(f"backend {backend!r}: option {s.name}={v!r} is invalid; expected {_describe(s)}")
    try:
        if s.type == "bool":
            if isinstance(v, bool):
                val: Any = v
            elif str(v).lower() in _TRUE:
                val = True
            elif str(v).lower() in _FALSE:
                val = False
            else:
                raise bad
        elif s.type == "int":
            if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                raise bad
            val = int(v)
        elif s.type == "float":
            val = float(v)
        else:
            val = str(v)
    except (TypeError, ValueError):
        raise bad from None
    if s.choices is not None and val not in s.choices:
        raise bad
    if s.minimum is not None and val < s.minimum or s.maximum is not None and val > s.maximum:
        raise bad
    return val


def parse_cli_options(pairs: list[str]) -> dict[str, dict[str, str]]:
    """``["qnn.soc_model=69", ...]`` -> ``{"qnn": {"soc_model": "69"}}``."""
    out: dict[str, dict[str, str]] = {}
    for p in pairs:
        key, eq, value = p.partition("=")
        backend, dot, name = key.partition(".")
        if not eq or not dot or not backend or not name:
            raise OptionError(f"--option {p!r} must look like backend.key=value")
        out.setdefault(backend, {})[name] = value
    return out
