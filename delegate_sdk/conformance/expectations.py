"""A plugin's known failures: ``expectations.toml``.

Format::

    [[expect]]
    case = "op/erfinv/*"          # glob over the sample id (op/erfinv/edge) or the case id (op/erfinv)
    outcome = "FAIL_MISMATCH"     # the failure expected; a list of outcomes, or omitted = any failure
    reason = "erfinv uses a polynomial approximation good to 1e-3"
    precision = "int8"            # optional: applies at this precision only (a list works too)

A plugin ships it as package data of its own package (``delegate_sdk_mychip/expectations.toml``, listed
under ``[tool.setuptools.package-data]``); :func:`locate` finds it there through ``importlib.resources``.

A result that matches an expectation becomes XFAIL (with the reason) when its outcome is the one expected,
XPASS when it passed. A failure of another kind than the one expected stays the failure it is (the
expectation is named in its detail). Outcomes that are neither pass nor failure (SKIP, NOT_CLAIMED) are left
alone. The first matching entry wins.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.resources
import inspect
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delegate_sdk.errors import UsageError

PASSING = ("PASS", "PASS_PARTIAL")
FAILING = ("FAIL_CLAIM", "FAIL_PREPROCESS", "FAIL_LOAD", "FAIL_RUN", "FAIL_MISMATCH", "FAIL_CONTRACT",
           "CRASH", "TIMEOUT")
NEUTRAL = ("NOT_CLAIMED", "SKIP")
OUTCOMES = ("PASS", "PASS_PARTIAL", "NOT_CLAIMED", "XFAIL", "XPASS", "SKIP", *FAILING[:6], "CRASH", "TIMEOUT")


@dataclass(frozen=True)
class Expectation:
    case: str
    outcomes: tuple[str, ...]  # empty = any failure
    reason: str
    precisions: tuple[str, ...] = ()

    def matches(self, sample_id: str, case_id: str, precision: str) -> bool:
        if self.precisions and precision not in self.precisions:
            return False
        return fnmatch.fnmatchcase(sample_id, self.case) or fnmatch.fnmatchcase(case_id, self.case)

    def expects(self, outcome: str) -> bool:
        return outcome in FAILING and (not self.outcomes or outcome in self.outcomes)


def _as_tuple(v: Any, what: str, path: Path, i: int) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(v)
    raise UsageError(f"{path}: [[expect]] #{i + 1}: {what} must be a string or a list of strings")


def parse(text: str, path: Path | str = "expectations.toml") -> list[Expectation]:
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from None
    unknown = set(data) - {"expect"}
    if unknown:
        raise UsageError(f"{path}: unknown top-level key(s) {sorted(unknown)}; use [[expect]] tables")
    out = []
    for i, entry in enumerate(data.get("expect", [])):
        if not isinstance(entry, dict):
            raise UsageError(f"{path}: expect must be an array of tables ([[expect]])")
        bad = set(entry) - {"case", "outcome", "reason", "precision"}
        if bad:
            raise UsageError(f"{path}: [[expect]] #{i + 1}: unknown key(s) {sorted(bad)} "
                             "(valid: case, outcome, reason, precision)")
        case = entry.get("case")
        reason = entry.get("reason")
        if not isinstance(case, str) or not case:
            raise UsageError(f"{path}: [[expect]] #{i + 1}: 'case' (a glob pattern) is required")
        if not isinstance(reason, str) or not reason.strip():
            raise UsageError(f"{path}: [[expect]] #{i + 1} ({case}): 'reason' is required")
        outcomes = _as_tuple(entry.get("outcome"), "outcome", path, i)
        for o in outcomes:
            if o not in FAILING:
                raise UsageError(f"{path}: [[expect]] #{i + 1} ({case}): outcome {o!r} is not a failure outcome; "
                                 f"one of {', '.join(FAILING)}")
        out.append(Expectation(case, outcomes, reason.strip(),
                               _as_tuple(entry.get("precision"), "precision", path, i)))
    return out


def load(path: Path | str | None) -> list[Expectation]:
    if path is None:
        return []
    p = Path(path)
    if not p.is_file():
        return []
    return parse(p.read_text(encoding="utf-8"), p)


FILENAME = "expectations.toml"


@dataclass(frozen=True)
class Found:
    """An expectations file: its text, and where it came from (for the report)."""

    text: str
    source: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def locate(plugin: Any) -> Found | None:
    """The plugin's ``expectations.toml``, shipped as package data of the plugin's own package.

    The plugin's module (or, for a plugin object, its class's module) names the package; the file is looked
    up with :mod:`importlib.resources` in that package and then in each enclosing package, so it is found the
    same way from a source checkout, an editable install and an installed wheel (list it as package data).
    A plugin that is a top-level module has no package, hence no expectations: a file lying beside it (in
    site-packages, say) is never picked up.
    """
    mod = plugin if inspect.ismodule(plugin) else inspect.getmodule(type(plugin))
    if mod is None:
        return None
    package = mod.__name__ if hasattr(mod, "__path__") else (mod.__package__ or "")
    while package:
        try:
            res = importlib.resources.files(package).joinpath(FILENAME)
            if res.is_file():
                return Found(res.read_text(encoding="utf-8"), f"{package}/{FILENAME} ({res})")
        except (ModuleNotFoundError, TypeError, OSError):
            pass
        package = package.rpartition(".")[0]
    return None


def apply(outcome: str, detail: str, sample_id: str, case_id: str, precision: str,
          expectations: Sequence[Expectation]) -> tuple[str, str, str | None]:
    """The reported (outcome, detail) of a raw outcome given the expectations, and the reason of the entry
    that matched (None when none did)."""
    for ex in expectations:
        if not ex.matches(sample_id, case_id, precision):
            continue
        if ex.expects(outcome):
            return "XFAIL", f"expected {outcome}: {ex.reason}" + (f" | {detail}" if detail else ""), ex.reason
        if outcome in PASSING:
            want = "/".join(ex.outcomes) or "a failure"
            return ("XPASS", f"expected {want} ({ex.reason}) but it passed" + (f" | {detail}" if detail else ""),
                    ex.reason)
        if outcome in FAILING:
            want = "/".join(ex.outcomes)
            return outcome, f"{detail} (an expectation names {want} here: {ex.reason})", ex.reason
        return outcome, detail, None
    return outcome, detail, None


def is_unexpected(outcome: str, strict: bool = False) -> bool:
    return outcome in FAILING or (strict and outcome == "XPASS")
