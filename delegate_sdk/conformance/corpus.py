"""Loading the built-in corpus (package ``delegate_sdk_corpus``, source dir ``conformance/``).

The corpus is imported by its distribution name when installed; in a source checkout that
has not (yet) mapped it, it is loaded by file path from ``<repo>/conformance/`` and registered
under the same name, so worker processes and the parent agree on it. It is never imported as
bare ``conformance`` (tosa-tools owns that top-level name).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from delegate_sdk.conformance.cases import ModelCase, OpCase

PACKAGE = "delegate_sdk_corpus"
ENV_VAR = "DELEGATE_SDK_CORPUS"  # optional: path of a corpus directory to use instead


def _source_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "conformance"


def load_corpus() -> ModuleType:
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    if not os.environ.get(ENV_VAR):
        try:
            return importlib.import_module(PACKAGE)
        except ImportError:
            pass
    src = _source_dir()
    init = src / "__init__.py"
    if not init.is_file():
        raise ImportError(f"conformance corpus not found: neither package {PACKAGE!r} nor {init}")
    spec = importlib.util.spec_from_file_location(PACKAGE, init, submodule_search_locations=[str(src)])
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(PACKAGE, None)
        raise
    return mod


def builtin_cases(suite: str = "all") -> list[OpCase | ModelCase]:
    """The corpus's cases of one suite: ``ops``, ``models``, ``all`` (both), or ``zoo`` (real architectures,
    needs transformers: UsageError naming the extra without it)."""
    corpus = load_corpus()
    out: list[OpCase | ModelCase] = []
    if suite == "zoo":
        from delegate_sdk.errors import UsageError

        try:
            return list(corpus.zoo_cases())
        except ImportError as e:
            raise UsageError(str(e)) from e
    if suite in ("ops", "all"):
        out += corpus.op_cases()
    if suite in ("models", "all"):
        out += corpus.model_cases()
    return out
